package tokengrain

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/tokengrain/tokenpb"
)

var errUnreachable = errors.New("have reached max retries: 3")

// fakeGrains answers GetToken as scripted, recording what it was sent.
type fakeGrains struct {
	mu      sync.Mutex
	sent    []*tokenpb.GetToken
	answers []func() (*tokenpb.TokenReply, error)
}

func (f *fakeGrains) request(_ string, m *tokenpb.GetToken, _ time.Duration) (*tokenpb.TokenReply, error) {
	f.mu.Lock()
	f.sent = append(f.sent, m)
	next := f.answers[0]
	if len(f.answers) > 1 {
		f.answers = f.answers[1:]
	}
	f.mu.Unlock()
	return next()
}

func answer(r *tokenpb.TokenReply, err error) func() (*tokenpb.TokenReply, error) {
	return func() (*tokenpb.TokenReply, error) { return r, err }
}

// member builds identity "a"'s provider over grains, with a direct
// provider that counts its calls.
func member(grains *fakeGrains, fallbacks *atomic.Int64) (tokenmanager.TokenProvider, *atomic.Int64) {
	var direct atomic.Int64
	settingsFor := func(string) (tokenmanager.Settings, error) {
		return tokenmanager.Settings{GetCredentials: func(context.Context) (tokenmanager.Token, error) {
			direct.Add(1)
			return tokenmanager.Token{AccessToken: "direct", ExpiresIn: 60}, nil
		}}, nil
	}
	s, _ := wrap(settingsFor, Options{
		Timeout:    50 * time.Millisecond,
		OnFallback: func(string, error) { fallbacks.Add(1) },
	}, grains.request)("a")
	return s.GetCredentials, &direct
}

func fetchCtx(reason messages.RefreshReason, rejected string) context.Context {
	return protocol.WithFetch(context.Background(), string(reason), rejected)
}

func TestMember_fallbackRules(t *testing.T) {
	hung := make(chan struct{}) // a grain that never answers, until the test ends
	defer close(hung)
	tests := []struct {
		name         string
		reason       messages.RefreshReason
		answers      []func() (*tokenpb.TokenReply, error)
		wantToken    string
		wantErr      bool
		wantDirect   int64
		wantPermanet bool
	}{
		{"grain answers", messages.ReasonColdStart,
			[]func() (*tokenpb.TokenReply, error){answer(&tokenpb.TokenReply{AccessToken: "g", ExpiresInMs: 5000}, nil)}, "g", false, 0, false},
		{"unreachable at cold start: direct fetch", messages.ReasonColdStart,
			[]func() (*tokenpb.TokenReply, error){answer(nil, errUnreachable)}, "direct", false, 1, false},
		{"unreachable after expiry: direct fetch", messages.ReasonExpired,
			[]func() (*tokenpb.TokenReply, error){answer(nil, errUnreachable)}, "direct", false, 1, false},
		{"unreachable at early refresh: direct fetch, no failure to back off from", messages.ReasonEarlyRefresh,
			[]func() (*tokenpb.TokenReply, error){answer(nil, errUnreachable)}, "direct", false, 1, false},
		{"grain refused (insecure remote, other settings): direct fetch", messages.ReasonColdStart,
			[]func() (*tokenpb.TokenReply, error){answer(&tokenpb.TokenReply{Refused: true, Error: "settings differ"}, nil)}, "direct", false, 1, false},
		{"grain hangs: bounded, then direct", messages.ReasonInvalidated,
			[]func() (*tokenpb.TokenReply, error){func() (*tokenpb.TokenReply, error) { <-hung; return nil, errUnreachable }}, "direct", false, 1, false},
		{"grain's provider refused: passed on, no direct fetch", messages.ReasonColdStart,
			[]func() (*tokenpb.TokenReply, error){answer(&tokenpb.TokenReply{Error: "invalid_client", Permanent: true}, nil)}, "", true, 0, true},
		{"slow identity provider: pending, asked again, no direct fetch", messages.ReasonColdStart,
			[]func() (*tokenpb.TokenReply, error){
				answer(&tokenpb.TokenReply{Pending: true}, nil),
				answer(&tokenpb.TokenReply{Pending: true}, nil),
				answer(&tokenpb.TokenReply{AccessToken: "slow", ExpiresInMs: 5000}, nil),
			}, "slow", false, 0, false},
		{"under a second left: handed back as rejected, the fresh token served", messages.ReasonColdStart,
			[]func() (*tokenpb.TokenReply, error){
				answer(&tokenpb.TokenReply{AccessToken: "g", ExpiresInMs: 400}, nil),
				answer(&tokenpb.TokenReply{AccessToken: "g2", ExpiresInMs: 2000}, nil),
			}, "g2", false, 0, false},
		{"under a second left twice: direct fetch", messages.ReasonEarlyRefresh,
			[]func() (*tokenpb.TokenReply, error){answer(&tokenpb.TokenReply{AccessToken: "g", ExpiresInMs: 400}, nil)}, "direct", false, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			grains := &fakeGrains{answers: tt.answers}
			var fallbacks atomic.Int64
			get, direct := member(grains, &fallbacks)
			var published []messages.Event
			ctx := protocol.WithPublish(fetchCtx(tt.reason, ""), func(ev messages.Event) { published = append(published, ev) })
			tok, err := get(ctx)
			if (err != nil) != tt.wantErr || tok.AccessToken != tt.wantToken {
				t.Fatalf("got %q, %v; want %q (error %v)", tok.AccessToken, err, tt.wantToken, tt.wantErr)
			}
			if got := direct.Load(); got != tt.wantDirect || fallbacks.Load() != tt.wantDirect {
				t.Errorf("direct fetches %d, OnFallback %d; want %d", got, fallbacks.Load(), tt.wantDirect)
			}
			if int64(len(published)) != tt.wantDirect {
				t.Errorf("%d events published; want one messages.ClusterFallback per direct fetch (%d)", len(published), tt.wantDirect)
			}
			for _, ev := range published {
				fb, ok := ev.(messages.ClusterFallback)
				if !ok || fb.Identity != "a" || fb.Reason == "" || fb.Err == nil {
					t.Errorf("published %#v; want a messages.ClusterFallback for \"a\" with a reason and an error", ev)
				}
			}
			if tokenmanager.IsPermanent(err) != tt.wantPermanet {
				t.Errorf("permanent = %v; want %v", tokenmanager.IsPermanent(err), tt.wantPermanet)
			}
		})
	}
}

func TestMember_rejectedTokenHandedOnce(t *testing.T) {
	grains := &fakeGrains{answers: []func() (*tokenpb.TokenReply, error){
		answer(&tokenpb.TokenReply{Pending: true}, nil),
		answer(&tokenpb.TokenReply{AccessToken: "new", ExpiresInMs: 5000}, nil),
	}}
	var fallbacks atomic.Int64
	get, _ := member(grains, &fallbacks)
	if tok, err := get(fetchCtx(messages.ReasonInvalidated, "old")); err != nil || tok.AccessToken != "new" || tok.ExpiresIn != 5 {
		t.Fatalf("got %v, %v; want new with 5s", tok, err)
	}
	if len(grains.sent) != 2 || grains.sent[0].GetRejected() != "old" || grains.sent[1].GetRejected() != "" {
		t.Errorf("sent %v; want the rejected token on the first ask only", grains.sent)
	}
	if w := grains.sent[0].GetWaitMs(); w != 25 {
		t.Errorf("WaitMs = %d; want half the 50ms bound", w)
	}
}

func TestMember_shortLivedTokenHandedBackAsRejected(t *testing.T) {
	grains := &fakeGrains{answers: []func() (*tokenpb.TokenReply, error){
		answer(&tokenpb.TokenReply{AccessToken: "old", ExpiresInMs: 999}, nil),
		answer(&tokenpb.TokenReply{AccessToken: "new", ExpiresInMs: 1999}, nil),
	}}
	var fallbacks atomic.Int64
	get, _ := member(grains, &fallbacks)
	tok, err := get(fetchCtx(messages.ReasonEarlyRefresh, ""))
	if err != nil || tok.AccessToken != "new" || tok.ExpiresIn != 1 {
		t.Fatalf("got %v, %v; want new with 1s", tok, err)
	}
	if len(grains.sent) != 2 || grains.sent[1].GetRejected() != "old" {
		t.Errorf("sent %v; want the short-lived token handed back as rejected", grains.sent)
	}
}

func TestMember_fingerprintCarriedInEveryAsk(t *testing.T) {
	grains := &fakeGrains{answers: []func() (*tokenpb.TokenReply, error){
		answer(&tokenpb.TokenReply{Pending: true}, nil),
		answer(&tokenpb.TokenReply{AccessToken: "t", ExpiresInMs: 5000}, nil),
	}}
	settingsFor := func(string) (tokenmanager.Settings, error) { return tokenmanager.Settings{}, nil }
	s, _ := wrap(settingsFor, Options{Timeout: 50 * time.Millisecond, Fingerprint: func(id string) string { return "fp-" + id }}, grains.request)("a")
	if _, err := s.GetCredentials(fetchCtx(messages.ReasonColdStart, "")); err != nil {
		t.Fatal(err)
	}
	for i, m := range grains.sent {
		if m.GetFingerprint() != "fp-a" {
			t.Errorf("ask %d carried fingerprint %q; want fp-a", i, m.GetFingerprint())
		}
	}
}

// The fallback bound: with a grain that never answers, a member's fetch
// returns the direct token after the ask bound (Options.Timeout), plus
// the identity provider's own time (here none). The figure is logged, not
// asserted (wall-clock); what is asserted is that each hop was given the
// bound and that the fetch did not wait for the grain.
func TestMember_fallbackBound(t *testing.T) {
	const bound = 100 * time.Millisecond
	hung := make(chan struct{})
	defer close(hung)
	var hops []time.Duration
	var mu sync.Mutex
	req := func(_ string, _ *tokenpb.GetToken, timeout time.Duration) (*tokenpb.TokenReply, error) {
		mu.Lock()
		hops = append(hops, timeout)
		mu.Unlock()
		<-hung
		return nil, errUnreachable
	}
	settingsFor := func(string) (tokenmanager.Settings, error) {
		return tokenmanager.Settings{GetCredentials: func(context.Context) (tokenmanager.Token, error) {
			return tokenmanager.Token{AccessToken: "direct", ExpiresIn: 60}, nil
		}}, nil
	}
	s, _ := wrap(settingsFor, Options{Timeout: bound}, req)("a")
	var slowest time.Duration
	for range 5 {
		began := time.Now()
		tok, err := s.GetCredentials(fetchCtx(messages.ReasonColdStart, ""))
		slowest = max(slowest, time.Since(began))
		if err != nil || tok.AccessToken != "direct" {
			t.Fatalf("got %v, %v; want the direct token", tok, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, h := range hops {
		if h != bound {
			t.Errorf("a hop was given %v; want the ask bound %v", h, bound)
		}
	}
	if len(hops) != 5 {
		t.Errorf("%d asks for 5 fetches; want one each (a hung grain is not asked again)", len(hops))
	}
	t.Logf("hung grain: direct token after at most %v (ask bound %v, provider 0s), 5 fetches", slowest.Round(time.Millisecond), bound)
}

// TestMember_ownerTakesTheMilliseconds: under an owner, which takes the
// time left to the millisecond (protocol.SetLifetime), a token with under
// a second left is used as it is, with its exact time left; only one with
// under 100ms left is handed back. Ask, which hands out whole seconds,
// still hands back a token with under a second left.
func TestMember_ownerTakesTheMilliseconds(t *testing.T) {
	grains := &fakeGrains{answers: []func() (*tokenpb.TokenReply, error){
		answer(&tokenpb.TokenReply{AccessToken: "short", ExpiresInMs: 600}, nil),
	}}
	var fallbacks atomic.Int64
	get, _ := member(grains, &fallbacks)
	ctx := protocol.WithLifetime(fetchCtx(messages.ReasonEarlyRefresh, ""))
	tok, err := get(ctx)
	if err != nil || tok.AccessToken != "short" || tok.ExpiresIn != 1 {
		t.Fatalf("got %v, %v; want short, ExpiresIn 1", tok, err)
	}
	if got := protocol.LifetimeFrom(ctx); got != 600*time.Millisecond {
		t.Errorf("lifetime told the owner: %v; want 600ms", got)
	}
	if len(grains.sent) != 1 {
		t.Errorf("%d asks; want 1 (nothing handed back)", len(grains.sent))
	}

	grains = &fakeGrains{answers: []func() (*tokenpb.TokenReply, error){
		answer(&tokenpb.TokenReply{AccessToken: "dying", ExpiresInMs: 99}, nil),
		answer(&tokenpb.TokenReply{AccessToken: "new", ExpiresInMs: 2000}, nil),
	}}
	get, _ = member(grains, &fallbacks)
	ctx = protocol.WithLifetime(fetchCtx(messages.ReasonEarlyRefresh, ""))
	if tok, err := get(ctx); err != nil || tok.AccessToken != "new" || protocol.LifetimeFrom(ctx) != 2*time.Second {
		t.Fatalf("got %v, %v, lifetime %v; want new with 2s", tok, err, protocol.LifetimeFrom(ctx))
	}
	if len(grains.sent) != 2 || grains.sent[1].GetRejected() != "dying" {
		t.Errorf("sent %v; want the token with 99ms left handed back", grains.sent)
	}
}
