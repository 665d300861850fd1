package transport_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/benbjohnson/clock"
	"go.uber.org/goleak"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/actor"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// provider hands out tok-1, tok-2, ... and counts calls.
type provider struct {
	calls     atomic.Int64
	expiresIn int64
	gate      chan struct{} // when non-nil, each call waits for a receive
	fail      atomic.Int64  // fail this many calls first
}

func (p *provider) get(ctx context.Context) (tokenmanager.Token, error) {
	n := p.calls.Add(1)
	if p.gate != nil {
		select {
		case <-p.gate:
		case <-ctx.Done():
			return tokenmanager.Token{}, ctx.Err()
		}
	}
	if p.fail.Load() > 0 {
		p.fail.Add(-1)
		return tokenmanager.Token{}, errors.New("token endpoint down")
	}
	return tokenmanager.Token{AccessToken: fmt.Sprintf("tok-%d", n), ExpiresIn: p.expiresIn}, nil
}

// backend is an in-memory base RoundTripper. It rejects tokens listed in
// revoked and records what it saw.
type backend struct {
	mu      sync.Mutex
	revoked map[string]bool
	seen    []string
	bodies  []string
	status  int // when non-zero, answer every request with it
}

func (b *backend) RoundTrip(req *http.Request) (*http.Response, error) {
	auth := req.Header.Get("Authorization")
	var body string
	if req.Body != nil {
		data, _ := io.ReadAll(req.Body)
		req.Body.Close()
		body = string(data)
	}
	b.mu.Lock()
	b.seen = append(b.seen, auth)
	b.bodies = append(b.bodies, body)
	status := http.StatusOK
	if b.status != 0 {
		status = b.status
	} else if auth == "" || b.revoked[strings.TrimPrefix(auth, "Bearer ")] {
		status = http.StatusUnauthorized
	}
	b.mu.Unlock()
	return &http.Response{
		StatusCode: status,
		Body:       io.NopCloser(strings.NewReader(fmt.Sprintf("status %d", status))),
		Header:     http.Header{},
		Request:    req,
	}, nil
}

func (b *backend) revoke(tok string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.revoked == nil {
		b.revoked = map[string]bool{}
	}
	b.revoked[tok] = true
}

func (b *backend) last() (auth, body string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seen[len(b.seen)-1], b.bodies[len(b.bodies)-1]
}

func newRT(t *testing.T, s tokenmanager.Settings, base http.RoundTripper) *transport.RoundTripper {
	t.Helper()
	rt, err := transport.New(s, transport.WithBase(base))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func get(t *testing.T, rt http.RoundTripper) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "https://api.test/x", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	return resp
}

// collect subscribes and returns a func that waits for n events of type E.
func collect[E messages.Event](t *testing.T, rt *transport.RoundTripper) func(n int) []E {
	ch := make(chan E, 1000)
	unsub := rt.Subscribe(func(ev messages.Event) {
		if e, ok := ev.(E); ok {
			ch <- e
		}
	})
	t.Cleanup(unsub)
	return func(n int) []E {
		t.Helper()
		var out []E
		for len(out) < n {
			select {
			case e := <-ch:
				out = append(out, e)
			case <-time.After(5 * time.Second):
				t.Fatalf("got %d %T events, want %d", len(out), *new(E), n)
			}
		}
		return out
	}
}

func TestRoundTrip_attachesBearerToken(t *testing.T) {
	p := &provider{expiresIn: 3600}
	b := &backend{}
	rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: clock.NewMock()}, b)
	for range 3 {
		resp := get(t, rt)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status = %d; want 200", resp.StatusCode)
		}
	}
	if auth, _ := b.last(); auth != "Bearer tok-1" {
		t.Errorf("Authorization = %q; want %q", auth, "Bearer tok-1")
	}
	if got := p.calls.Load(); got != 1 {
		t.Errorf("provider calls = %d; want 1 (token cached)", got)
	}
}

func TestRoundTrip_customHeaderAndFormatter(t *testing.T) {
	p := &provider{expiresIn: 3600}
	var seen string
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		seen = req.Header.Get("X-Api-Key")
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: req}, nil
	})
	rt := newRT(t, tokenmanager.Settings{
		GetCredentials: p.get,
		Header:         "x-api-key",
		Formatter:      func(tok string) string { return "Key " + tok },
	}, base)
	get(t, rt).Body.Close()
	if seen != "Key tok-1" {
		t.Errorf("X-Api-Key = %q; want %q", seen, "Key tok-1")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestRoundTrip_doesNotModifyRequest(t *testing.T) {
	p := &provider{expiresIn: 3600}
	rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get}, &backend{})
	req, _ := http.NewRequest(http.MethodGet, "https://api.test/x", nil)
	req.Header.Set("X-Trace", "1")
	get := func() { resp, _ := rt.RoundTrip(req); resp.Body.Close() }
	get()
	if len(req.Header) != 1 || req.Header.Get("Authorization") != "" {
		t.Errorf("caller's header changed: %v", req.Header)
	}
}

func TestRoundTrip_recoversFromRevokedToken(t *testing.T) {
	p := &provider{expiresIn: 3600}
	b := &backend{}
	rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get}, b)
	failed := collect[messages.AuthFailed](t, rt)
	tried := collect[messages.RecoveryTried](t, rt)

	get(t, rt).Body.Close()
	b.revoke("tok-1")
	req, _ := http.NewRequest(http.MethodPost, "https://api.test/x", strings.NewReader("payload"))
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d; want 200 after recovery", resp.StatusCode)
	}
	if auth, body := b.last(); auth != "Bearer tok-2" || body != "payload" {
		t.Errorf("resent with %q body %q; want %q body %q", auth, body, "Bearer tok-2", "payload")
	}
	if got := failed(1)[0].Status; got != 401 {
		t.Errorf("AuthFailed.Status = %d; want 401", got)
	}
	if got := tried(1)[0].Attempt; got != 1 {
		t.Errorf("RecoveryTried.Attempt = %d; want 1", got)
	}
}

func TestRoundTrip_recoveryCapPerRequest(t *testing.T) {
	tests := []struct {
		name      string
		max       int
		wantSends int
		wantTries int
	}{
		{"default", 0, 6, 5},
		{"two", 2, 3, 2},
		{"none", -1, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &provider{expiresIn: 3600}
			b := &backend{status: http.StatusUnauthorized}
			rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get, MaxRecoveryTries: tt.max}, b)
			aborted := collect[messages.RecoveryAborted](t, rt)
			resp := get(t, rt)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 401 || string(body) != "status 401" {
				t.Errorf("got %d %q; want the last 401 with its body", resp.StatusCode, body)
			}
			if got := len(b.seen); got != tt.wantSends {
				t.Errorf("sends = %d; want %d", got, tt.wantSends)
			}
			if got := aborted(1)[0].Attempts; got != tt.wantTries {
				t.Errorf("RecoveryAborted.Attempts = %d; want %d", got, tt.wantTries)
			}
			// The counter belongs to the request: a second request gets the
			// same number of tries.
			get(t, rt).Body.Close()
			if got := len(b.seen); got != 2*tt.wantSends {
				t.Errorf("sends after second request = %d; want %d", got, 2*tt.wantSends)
			}
		})
	}
}

type onceReader struct{ io.Reader }

func TestRoundTrip_unreplayableBodyIsNotResent(t *testing.T) {
	p := &provider{expiresIn: 3600}
	b := &backend{status: http.StatusUnauthorized}
	rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get}, b)
	aborted := collect[messages.RecoveryAborted](t, rt)
	req, _ := http.NewRequest(http.MethodPost, "https://api.test/x", onceReader{strings.NewReader("data")})
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || len(b.seen) != 1 {
		t.Errorf("status %d after %d sends; want 401 after 1", resp.StatusCode, len(b.seen))
	}
	if msg := aborted(1)[0].Message; !strings.Contains(msg, "cannot be replayed") {
		t.Errorf("RecoveryAborted.Message = %q; want it to say the body cannot be replayed", msg)
	}
}

func TestRoundTrip_singleFetchForConcurrentRequests(t *testing.T) {
	p := &provider{expiresIn: 3600, gate: make(chan struct{})}
	rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get}, &backend{})
	var wg sync.WaitGroup
	var ok atomic.Int64
	for range 300 {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, "https://api.test/x", nil)
			if resp, err := rt.RoundTrip(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					ok.Add(1)
				}
			}
		})
	}
	for p.calls.Load() == 0 {
		time.Sleep(time.Millisecond) // wait for the one fetch to start, not for a timer
	}
	close(p.gate)
	wg.Wait()
	if got := p.calls.Load(); got != 1 {
		t.Errorf("provider calls = %d; want 1", got)
	}
	if got := ok.Load(); got != 300 {
		t.Errorf("successful requests = %d; want 300", got)
	}
}

func TestRoundTrip_contextEndsWhileWaiting(t *testing.T) {
	p := &provider{expiresIn: 3600, gate: make(chan struct{})}
	rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get}, &backend{})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.test/x", nil)
	errc := make(chan error, 1)
	go func() {
		_, err := rt.RoundTrip(req)
		errc <- err
	}()
	for p.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v; want one wrapping context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RoundTrip did not return after its context ended")
	}
}

func TestRoundTrip_redirectToOtherHostCarriesNoToken(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Header.Get("Authorization"))
	}))
	defer other.Close()
	// 127.0.0.1 and localhost are different hosts to net/http.
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/same" {
			http.Redirect(w, r, "/echo", http.StatusFound)
			return
		}
		if r.URL.Path == "/echo" {
			fmt.Fprint(w, r.Header.Get("Authorization"))
			return
		}
		http.Redirect(w, r, otherURL+"/echo", http.StatusFound)
	}))
	defer origin.Close()
	defer http.DefaultTransport.(*http.Transport).CloseIdleConnections()

	p := &provider{expiresIn: 3600}
	rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get}, http.DefaultTransport)
	for _, tt := range []struct{ path, want string }{
		{"/away", ""},
		{"/same", "Bearer tok-1"},
	} {
		resp, err := rt.Client().Get(origin.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != tt.want {
			t.Errorf("%s: redirected request carried %q; want %q", tt.path, got, tt.want)
		}
	}
}

func TestClose_releasesWaitersAndIsIdempotent(t *testing.T) {
	p := &provider{expiresIn: 3600, gate: make(chan struct{})}
	rt, err := transport.New(tokenmanager.Settings{GetCredentials: p.get}, transport.WithBase(&backend{}))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := rt.Token(context.Background())
		errc <- err
	}()
	for p.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := rt.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-errc; !errors.Is(err, tokenmanager.ErrClosed) {
		t.Errorf("waiter got %v; want ErrClosed", err)
	}
	if err := rt.Close(); err != nil {
		t.Errorf("second Close = %v; want nil", err)
	}
	req, _ := http.NewRequest(http.MethodPost, "https://api.test/x", io.NopCloser(bytes.NewReader(nil)))
	if _, err := rt.RoundTrip(req); !errors.Is(err, tokenmanager.ErrClosed) {
		t.Errorf("RoundTrip after Close = %v; want ErrClosed", err)
	}
}

// A failed constructor returns a nil manager; closing it, as a deferred
// Close written before the error check does, must not panic.
func TestClose_nilManager(t *testing.T) {
	var rt *transport.RoundTripper
	if err := rt.Close(); err != nil {
		t.Errorf("(*RoundTripper)(nil).Close() = %v; want nil", err)
	}
	var m *transport.MultiRoundTripper
	if err := m.Close(); err != nil {
		t.Errorf("(*MultiRoundTripper)(nil).Close() = %v; want nil", err)
	}
	rt, err := transport.New(tokenmanager.Settings{})
	if err == nil || rt != nil {
		t.Fatalf("New(no provider) = %v, %v; want nil and an error", rt, err)
	}
	if err := rt.Close(); err != nil {
		t.Errorf("Close after a failed New = %v; want nil", err)
	}
	m, err = transport.NewMulti(tokenmanager.OwnerSettings{})
	if err == nil || m != nil {
		t.Fatalf("NewMulti(no SettingsFor) = %v, %v; want nil and an error", m, err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close after a failed NewMulti = %v; want nil", err)
	}
}

func TestNew_rejectsBadSettings(t *testing.T) {
	_, err := transport.New(tokenmanager.Settings{RefreshBuffer: -1, RefreshOnStatus: []int{42}})
	if err == nil {
		t.Fatal("New accepted bad settings")
	}
	for _, want := range []string{"GetCredentials", "RefreshBuffer", "42"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestToken_ownDeadlineOutlastsTinyWaitTimeout(t *testing.T) {
	// WaitTimeout bounds only requests without a deadline.
	p := &provider{expiresIn: 3600}
	rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get, WaitTimeout: time.Nanosecond}, &backend{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tok, err := rt.Token(ctx)
	if err != nil || tok.AccessToken != "tok-1" {
		t.Errorf("Token = %q, %v; want tok-1", tok.AccessToken, err)
	}
}

func TestRecovery_apiRejectingEveryTokenDoesNotHammerTheEndpoint(t *testing.T) {
	// An API that rejects every new token (a wrong audience, say) would
	// cost MaxRecoveryTries + 1 fetches per request; after a long streak
	// the manager backs off instead.
	p := &provider{expiresIn: 3600}
	b := &backend{status: http.StatusUnauthorized}
	mock := clock.NewMock()
	rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: mock}, b)
	aborted := collect[messages.RecoveryAborted](t, rt)
	const requests = 50
	for range requests {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.test/x", nil)
		if resp, err := rt.RoundTrip(req); err == nil {
			resp.Body.Close()
		}
		cancel()
	}
	if got := p.calls.Load(); got > 40 {
		t.Errorf("provider calls = %d for %d requests; want the backoff to hold them to a few dozen (without it: %d)",
			got, requests, requests*6)
	}
	held := false
	for !held {
		held = strings.Contains(aborted(1)[0].Message, "backing off")
	}
	// After the backoff, fetching resumes.
	before := p.calls.Load()
	mock.Add(30 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.test/x", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("after the backoff: %v (provider calls %d -> %d)", err, before, p.calls.Load())
	}
	resp.Body.Close()
	if got := p.calls.Load() - before; got < 1 {
		t.Errorf("no fetch after the backoff")
	}
}

func TestRecovery_backoffStreakEndsWhenTokensServeAgain(t *testing.T) {
	// After an incident that made the manager back off, tokens serve
	// normally for a long while; one later revocation whose first
	// replacement is rejected too must recover as usual.
	p := &provider{expiresIn: 3600}
	b := &backend{}
	mock := clock.NewMock()
	rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: mock}, b)
	do := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.test/x", nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	b.mu.Lock()
	b.status = http.StatusUnauthorized // the incident: every token rejected
	b.mu.Unlock()
	for range 12 {
		do()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		rt.Token(ctx) // a round trip through the actor's mailbox
		cancel()
		mock.Add(31 * time.Second) // past any backoff
	}
	b.mu.Lock()
	b.status = 0
	b.mu.Unlock()
	for i := range 50 {
		if st := do(); st != 200 {
			t.Fatalf("healthy request %d: status %d", i, st)
		}
		mock.Add(time.Minute)
	}
	cur, err := rt.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b.revoke(cur.AccessToken)
	b.revoke(fmt.Sprintf("tok-%d", p.calls.Load()+1))
	if st := do(); st != 200 {
		t.Errorf("status %d after a revocation whose first replacement was rejected too; want 200", st)
	}
	if st := do(); st != 200 {
		t.Errorf("next request: status %d; want 200", st)
	}
}

func TestNewFromActor_recoveryUsesItsOwnTries(t *testing.T) {
	// The actor's settings allow no recovery; the RoundTripper allows ten.
	p := &provider{expiresIn: 3600}
	b := &backend{}
	for i := 1; i <= 10; i++ {
		b.revoke(fmt.Sprintf("tok-%d", i))
	}
	system := proto.NewActorSystem(proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	props, err := actor.NewProps(tokenmanager.Settings{GetCredentials: p.get, MaxRecoveryTries: -1})
	if err != nil {
		t.Fatal(err)
	}
	pid := system.Root.Spawn(props)
	defer func() {
		system.Root.StopFuture(pid).Wait()
		system.Shutdown()
	}()
	rt, err := transport.NewFromActor(system, pid, tokenmanager.Settings{MaxRecoveryTries: 10}, transport.WithBase(b))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	resp := get(t, rt)
	resp.Body.Close()
	if auth, _ := b.last(); resp.StatusCode != 200 || auth != "Bearer tok-11" {
		t.Errorf("got %d with %q; want 200 with tok-11 after ten recoveries", resp.StatusCode, auth)
	}
}

func TestSameSite_chainThatLeftStaysStripped(t *testing.T) {
	mk := func(rawURL string, prev *http.Request) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, rawURL, nil)
		if prev != nil {
			r.Response = &http.Response{Request: prev}
		}
		return r
	}
	var seen []string
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		seen = append(seen, req.Header.Get("Authorization"))
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: req}, nil
	})
	p := &provider{expiresIn: 3600}
	rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get}, base)
	a := mk("https://a.test/1", nil)
	sub := mk("https://api.a.test/2", a)
	b := mk("https://b.test/3", sub)
	back := mk("https://a.test/4", b)
	orphan := mk("https://a.test/5", nil)
	orphan.Response = &http.Response{} // a redirect with no request behind it
	for _, r := range []*http.Request{a, sub, b, back, orphan} {
		resp, err := rt.RoundTrip(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	want := []string{"Bearer tok-1", "Bearer tok-1", "", "", ""}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("Authorization along the chain = %q; want %q", seen, want)
	}
}

type closeRecorder struct {
	io.Reader
	closed atomic.Int64
}

func (c *closeRecorder) Close() error { c.closed.Add(1); return nil }

func TestRoundTrip_formatterPanicIsContained(t *testing.T) {
	p := &provider{expiresIn: 3600}
	b := &backend{}
	rt := newRT(t, tokenmanager.Settings{
		GetCredentials: p.get,
		Formatter:      func(string) string { panic("formatter bug") },
	}, b)
	body := &closeRecorder{Reader: strings.NewReader("x")}
	req, _ := http.NewRequest(http.MethodPost, "https://api.test/x", body)
	resp, err := rt.RoundTrip(req)
	if err == nil || resp != nil || !strings.Contains(err.Error(), "Formatter panicked") {
		t.Fatalf("RoundTrip = %v, %v; want an error saying the Formatter panicked", resp, err)
	}
	if got := body.closed.Load(); got != 1 {
		t.Errorf("request body closed %d times; want 1", got)
	}
	if len(b.seen) != 0 {
		t.Errorf("%d requests sent; want none", len(b.seen))
	}
}

func TestNewFromActor_deadActorFailsFast(t *testing.T) {
	system := proto.NewActorSystem(
		proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }),
		proto.WithDeadLetterThrottleInterval(time.Millisecond),
	)
	defer system.Shutdown()
	props, err := actor.NewProps(tokenmanager.Settings{GetCredentials: (&provider{}).get})
	if err != nil {
		t.Fatal(err)
	}
	pid := system.Root.Spawn(props)
	system.Root.StopFuture(pid).Wait()
	rt, err := transport.NewFromActor(system, pid, tokenmanager.Settings{})
	if err == nil {
		rt.Close()
		t.Fatal("NewFromActor accepted a stopped actor")
	}
	// A dead letter, not a timeout: it noticed at once.
	if !errors.Is(err, proto.ErrDeadLetter) {
		t.Errorf("err = %v; want one wrapping the dead letter", err)
	}
}
