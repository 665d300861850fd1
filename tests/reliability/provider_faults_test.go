package reliability

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/actor"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// okBase answers every request 200 and records the token it carried.
type okBase struct {
	mu   sync.Mutex
	seen []string
}

func (b *okBase) RoundTrip(req *http.Request) (*http.Response, error) {
	b.mu.Lock()
	b.seen = append(b.seen, testutil.Bearer(req))
	b.mu.Unlock()
	return testutil.TextResponse(req, http.StatusOK, "ok"), nil
}

func (b *okBase) last() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.seen) == 0 {
		return ""
	}
	return b.seen[len(b.seen)-1]
}

// faultyProvider fails in the way set by mode until mode is "ok"; then it
// hands out good-1, good-2, ...
type faultyProvider struct {
	calls atomic.Int64
	good  atomic.Int64
	mode  atomic.Value // string
}

func newFaultyProvider(mode string) *faultyProvider {
	p := &faultyProvider{}
	p.mode.Store(mode)
	return p
}

var errEndpointDown = errors.New("token endpoint down")

func (p *faultyProvider) get(ctx context.Context) (tokenmanager.Token, error) {
	p.calls.Add(1)
	switch p.mode.Load().(string) {
	case "error":
		return tokenmanager.Token{}, errEndpointDown
	case "hang":
		<-ctx.Done()
		return tokenmanager.Token{}, ctx.Err()
	case "panic":
		panic("provider exploded")
	case "empty":
		return tokenmanager.Token{ExpiresIn: 3600}, nil
	}
	return tokenmanager.Token{AccessToken: fmt.Sprintf("good-%d", p.good.Add(1)), ExpiresIn: 3600}, nil
}

// TestProviderFaults: a provider that errors, hangs (respecting ctx),
// panics or returns an empty token. Each failure reaches subscribers as a
// FetchError wrapping the cause. An error or a hang is temporary: a
// request waiting through the failures while the mock clock runs a
// minute causes only a handful of provider calls (backoff, no hot loop),
// and when the provider recovers, the waiting request succeeds with its
// token. A panic or an empty token is permanent: the request fails at
// once, and the first request after the backoff succeeds once the
// provider recovers.
func TestProviderFaults(t *testing.T) {
	tests := []struct {
		mode      string
		check     func(error) bool
		want      string
		permanent bool
	}{
		{"error", func(err error) bool { return errors.Is(err, errEndpointDown) }, "errors.Is(err, errEndpointDown)", false},
		{"hang", func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }, "errors.Is(err, context.DeadlineExceeded)", false},
		{"panic", func(err error) bool {
			var pe *tokenmanager.PanicError
			return errors.As(err, &pe) && strings.Contains(err.Error(), "provider exploded")
		}, "a *PanicError with the panic value in the message", true},
		{"empty", func(err error) bool { return errors.Is(err, tokenmanager.ErrInvalidToken) }, "errors.Is(err, ErrInvalidToken)", true},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			mock := clock.NewMock()
			p := newFaultyProvider(tt.mode)
			base := &okBase{}
			rt := testutil.NewRT(t, tokenmanager.Settings{
				GetCredentials: p.get,
				Clock:          mock,
				FetchTimeout:   20 * time.Millisecond,
				RetryBaseDelay: 500 * time.Millisecond,
				RetryMaxDelay:  10 * time.Second,
				WaitTimeout:    time.Minute,
			}, base)
			ev := testutil.Record(t, rt)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			type result struct {
				status int
				err    error
			}
			done := make(chan result, 1)
			go func() {
				status, err := doGet(ctx, rt, "https://api.test/x")
				done <- result{status, err}
			}()
			testutil.Within(t, 5*time.Second, "the first failed fetch", func() bool { return ev.Count("token_request_failed") >= 1 })

			err := lastFetchError(ev)
			var fe *tokenmanager.FetchError
			if !errors.As(err, &fe) {
				t.Fatalf("TokenRequestFailed.Err = %v (%T); want a *tokenmanager.FetchError", err, err)
			}
			if !tt.check(err) {
				t.Errorf("TokenRequestFailed.Err = %v; want %s", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "tokenmanager: ") {
				t.Errorf("error %q does not start with the package name", err)
			}
			if tt.permanent {
				var r result
				select {
				case r = <-done:
				case <-time.After(5 * time.Second):
					t.Fatal("request still waits after a permanent failure; want it failed at once")
				}
				if !tt.check(r.err) || !tokenmanager.IsPermanent(r.err) {
					t.Fatalf("request err = %v; want a permanent failure, %s", r.err, tt.want)
				}
				p.mode.Store("ok")
				mock.Add(10 * time.Second) // past the backoff
				status, err := doGet(ctx, rt, "https://api.test/x")
				if err != nil || status != http.StatusOK || base.last() != "good-1" {
					t.Fatalf("request after recovery: %d, %v, token %q; want 200 with good-1", status, err, base.last())
				}
				return
			}

			// A minute of mock time in 250ms steps while the request waits.
			for range 240 {
				mock.Add(250 * time.Millisecond)
			}
			calls := p.calls.Load()
			// Backoff from 500ms doubling to a 10s cap, jitter in the upper
			// half: the shortest delays are 0.25, 0.5, 1, 2, 4, then 5s, so
			// at most 1 + 5 + 10 calls fit in a minute.
			if calls < 3 || calls > 16 {
				t.Errorf("provider calls over a minute of failures = %d; want 3..16 (backoff, no hot loop)", calls)
			}
			select {
			case r := <-done:
				t.Fatalf("request returned while the provider was failing: %d, %v", r.status, r.err)
			default:
			}

			p.mode.Store("ok")
			var r result
			testutil.AdvanceUntil(t, mock, time.Second, 60, "the request to succeed after the provider recovers", func() bool {
				select {
				case r = <-done:
					return true
				default:
					return false
				}
			})
			if r.err != nil || r.status != http.StatusOK {
				t.Fatalf("request after recovery: %d, %v; want 200", r.status, r.err)
			}
			if got := base.last(); got != "good-1" {
				t.Errorf("token sent = %q; want good-1", got)
			}
			t.Logf("mode %s: %d provider calls over a minute of mock time, %d TokenRequestFailed, then recovered", tt.mode, calls, ev.Count("token_request_failed"))
		})
	}
}

// TestProviderFaults_requestErrorIsClear: a request whose context ends
// while the provider fails gets an error wrapping ctx.Err() that names
// the last failure, promptly.
func TestProviderFaults_requestErrorIsClear(t *testing.T) {
	p := newFaultyProvider("error")
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: clock.NewMock()}, &okBase{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := doGet(ctx, rt, "https://api.test/x")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v; want one wrapping context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), errEndpointDown.Error()) {
		t.Errorf("err = %q; want it to name the last fetch failure %q", err, errEndpointDown)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("request took %v after its context ended", took)
	}
}

// TestProviderFaults_actorAskerGetsFetchError: an actor asking with
// messages.Get hears a failed fetch at once, as a *FetchError.
func TestProviderFaults_actorAskerGetsFetchError(t *testing.T) {
	sys := testutil.NewSystem(t)
	p := newFaultyProvider("error")
	props, err := actor.NewProps(tokenmanager.Settings{GetCredentials: p.get, Clock: clock.NewMock()})
	if err != nil {
		t.Fatal(err)
	}
	pid := sys.Root.Spawn(props)
	defer func() { sys.Root.StopFuture(pid).Wait() }()
	for i := range 3 {
		res, err := sys.Root.RequestFuture(pid, messages.Get{}, 5*time.Second).Result()
		if err != nil {
			t.Fatalf("ask %d: %v", i, err)
		}
		tr := res.(*messages.TokenResult)
		var fe *tokenmanager.FetchError
		if !errors.As(tr.Err, &fe) || !errors.Is(tr.Err, errEndpointDown) {
			t.Fatalf("ask %d: Err = %v; want a *FetchError wrapping %v", i, tr.Err, errEndpointDown)
		}
	}
	// The later asks fell in the backoff window: one provider call.
	if got := p.calls.Load(); got != 1 {
		t.Errorf("provider calls = %d; want 1 (asks during backoff hear the last error)", got)
	}
}

// TestProviderFaults_garbageTokens: token responses decoded through
// tokenmanager.Token's UnmarshalJSON, from plain garbage to absurd
// lifetimes. Undecodable ones fail the fetch with the decoding error;
// an empty access_token fails with ErrInvalidToken; a negative
// expires_in means "no expiry"; an absurd one is capped, never
// overflowing, and never causes a refetch.
func TestProviderFaults_garbageTokens(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantErr func(error) bool // nil: the token is good
		// wantExpiry: "none" (cached until rejected) or "capped" (years).
		wantExpiry string
	}{
		{name: "empty access_token", body: `{"access_token":"","expires_in":3600}`, wantErr: func(err error) bool { return errors.Is(err, tokenmanager.ErrInvalidToken) }},
		{name: "missing access_token", body: `{"expires_in":3600}`, wantErr: func(err error) bool { return errors.Is(err, tokenmanager.ErrInvalidToken) }},
		{name: "access_token a number", body: `{"access_token":123,"expires_in":3600}`, wantErr: isTypeError},
		{name: "expires_in a bool", body: `{"access_token":"t","expires_in":true}`, wantErr: func(err error) bool { return strings.Contains(err.Error(), "expires_in") }},
		{name: "expires_in an object", body: `{"access_token":"t","expires_in":{"s":1}}`, wantErr: func(err error) bool { return strings.Contains(err.Error(), "expires_in") }},
		{name: "expires_in not numeric", body: `{"access_token":"t","expires_in":"soon"}`, wantErr: func(err error) bool { return strings.Contains(err.Error(), "expires_in") }},
		{name: "expires_in fractional", body: `{"access_token":"t","expires_in":1.5}`, wantErr: func(err error) bool { return strings.Contains(err.Error(), "expires_in") }},
		{name: "expires_in beyond int64", body: `{"access_token":"t","expires_in":1e300}`, wantErr: func(err error) bool { return strings.Contains(err.Error(), "expires_in") }},
		{name: "not JSON", body: `<html>502 Bad Gateway</html>`, wantErr: func(err error) bool { var se *json.SyntaxError; return errors.As(err, &se) }},
		{name: "access_token with CRLF", body: `{"access_token":"t\r\nX-Evil: 1","expires_in":3600}`, wantErr: func(err error) bool { return errors.Is(err, tokenmanager.ErrInvalidToken) }},
		{name: "negative expires_in", body: `{"access_token":"t","expires_in":-5}`, wantExpiry: "none"},
		{name: "zero expires_in", body: `{"access_token":"t","expires_in":0}`, wantExpiry: "none"},
		{name: "expires_in 1<<62", body: fmt.Sprintf(`{"access_token":"t","expires_in":%d}`, int64(1)<<62), wantExpiry: "capped"},
		{name: "expires_in max int64 as string", body: `{"access_token":"t","expires_in":"9223372036854775807"}`, wantExpiry: "capped"},
		{name: "expires_in min int64", body: `{"access_token":"t","expires_in":-9223372036854775808}`, wantExpiry: "none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mock := clock.NewMock()
			var calls atomic.Int64
			provider := func(context.Context) (tokenmanager.Token, error) {
				calls.Add(1)
				var tok tokenmanager.Token
				err := json.Unmarshal([]byte(tt.body), &tok)
				return tok, err
			}
			base := &okBase{}
			rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: provider, Clock: mock}, base)
			ev := testutil.Record(t, rt)

			if tt.wantErr != nil {
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { _, err := doGet(ctx, rt, "https://api.test/x"); done <- err }()
				testutil.Within(t, 5*time.Second, "the failed fetch", func() bool { return ev.Count("token_request_failed") >= 1 })
				cancel()
				if err := <-done; err == nil {
					t.Fatal("request succeeded with a garbage token")
				}
				err := lastFetchError(ev)
				var fe *tokenmanager.FetchError
				if !errors.As(err, &fe) || !tt.wantErr(err) {
					t.Errorf("fetch error = %v (%T); not the expected kind", err, errors.Unwrap(err))
				}
				if base.last() != "" {
					t.Errorf("a request was sent with token %q", base.last())
				}
				return
			}

			status, err := doGet(context.Background(), rt, "https://api.test/x")
			if err != nil || status != http.StatusOK {
				t.Fatalf("request: %d, %v", status, err)
			}
			now := mock.Now()
			var refreshed messages.TokenRefreshed
			testutil.Within(t, 5*time.Second, "TokenRefreshed", func() bool {
				for _, e := range ev.All() {
					if r, ok := e.(messages.TokenRefreshed); ok {
						refreshed = r
						return true
					}
				}
				return false
			})
			switch tt.wantExpiry {
			case "none":
				if !refreshed.ExpiresAt.IsZero() {
					t.Errorf("ExpiresAt = %v; want zero (no expiry)", refreshed.ExpiresAt)
				}
			case "capped":
				if !refreshed.ExpiresAt.After(now.Add(365*24*time.Hour)) || refreshed.ExpiresAt.After(now.Add(20*365*24*time.Hour)) {
					t.Errorf("ExpiresAt = %v; want years, not overflowed, after %v", refreshed.ExpiresAt, now)
				}
			}
			// A year of mock time, a request a week: still one fetch.
			for range 52 {
				mock.Add(7 * 24 * time.Hour)
				if _, err := doGet(context.Background(), rt, "https://api.test/x"); err != nil {
					t.Fatalf("request: %v", err)
				}
			}
			if got := calls.Load(); got != 1 {
				t.Errorf("provider calls over a year = %d; want 1", got)
			}
		})
	}
}

func isTypeError(err error) bool {
	var te *json.UnmarshalTypeError
	return errors.As(err, &te)
}

// TestProviderFaults_shortLifetimeNoHotLoop: a token of 1s against a 10s
// RefreshBuffer is refreshed no sooner than half its lifetime, so an hour
// of mock time costs at most two fetches a second, never a loop.
func TestProviderFaults_shortLifetimeNoHotLoop(t *testing.T) {
	mock := clock.NewMock()
	var calls atomic.Int64
	provider := func(context.Context) (tokenmanager.Token, error) {
		return tokenmanager.Token{AccessToken: fmt.Sprintf("short-%d", calls.Add(1)), ExpiresIn: 1}, nil
	}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: provider, Clock: mock, RefreshBuffer: 10 * time.Second}, &okBase{})
	if _, err := doGet(context.Background(), rt, "https://api.test/x"); err != nil {
		t.Fatal(err)
	}
	const steps = 300
	for range steps {
		mock.Add(100 * time.Millisecond)
		time.Sleep(100 * time.Microsecond)
	}
	got := calls.Load()
	if max := int64(steps/5 + 2); got > max {
		t.Errorf("provider calls over %v of 1s tokens = %d; want at most %d", steps*100*time.Millisecond, got, max)
	}
	t.Logf("1s tokens, 10s RefreshBuffer: %d provider calls over %v of mock time", got, steps*100*time.Millisecond)
}

// TestProviderFaults_returnsAfterClose: Close while the provider is
// stuck (ignoring ctx); the waiting request gets ErrClosed at once, and the
// provider's late answer, after Close, is dropped without harm or leak.
func TestProviderFaults_returnsAfterClose(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	provider := func(ctx context.Context) (tokenmanager.Token, error) {
		defer wg.Done()
		close(entered)
		<-release // ignores ctx on purpose
		return tokenmanager.Token{AccessToken: "late", ExpiresIn: 3600}, nil
	}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: provider, Clock: clock.NewMock()}, &okBase{})
	done := make(chan error, 1)
	go func() { _, err := doGet(context.Background(), rt, "https://api.test/x"); done <- err }()
	<-entered
	if err := rt.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, tokenmanager.ErrClosed) {
			t.Errorf("waiting request: err = %v; want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiting request not released by Close")
	}
	close(release)
	wg.Wait()
	if _, err := rt.Token(context.Background()); !errors.Is(err, tokenmanager.ErrClosed) {
		t.Errorf("Token after Close: %v; want ErrClosed", err)
	}
	if _, err := doGet(context.Background(), rt, "https://api.test/x"); !errors.Is(err, tokenmanager.ErrClosed) {
		t.Errorf("request after Close: %v; want ErrClosed", err)
	}
}

// TestProviderFaults_closeCancelsFetch: Close cancels the context of the
// fetch in flight.
func TestProviderFaults_closeCancelsFetch(t *testing.T) {
	entered := make(chan struct{})
	cancelled := make(chan struct{})
	provider := func(ctx context.Context) (tokenmanager.Token, error) {
		close(entered)
		<-ctx.Done()
		close(cancelled)
		return tokenmanager.Token{}, ctx.Err()
	}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: provider, Clock: clock.NewMock()}, &okBase{})
	go rt.Token(context.Background())
	<-entered
	rt.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not cancel the fetch's context")
	}
}
