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
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
	p := &testutil.Provider{ExpiresIn: 3600}
	b := &testutil.Backend{}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, b)
	for range 3 {
		resp := get(t, rt)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status = %d; want 200", resp.StatusCode)
		}
	}
	if auth := b.Last().Auth; auth != "Bearer tok-1" {
		t.Errorf("Authorization = %q; want %q", auth, "Bearer tok-1")
	}
	if got := p.Calls.Load(); got != 1 {
		t.Errorf("provider calls = %d; want 1 (token cached)", got)
	}
}

func TestRoundTrip_customHeaderAndFormatter(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	var seen string
	base := testutil.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
		seen = req.Header.Get("X-Api-Key")
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: req}, nil
	})
	rt := testutil.NewRT(t, tokenmanager.Settings{
		GetCredentials: p.Get,
		Header:         "x-api-key",
		Formatter:      func(tok string) string { return "Key " + tok },
	}, base)
	get(t, rt).Body.Close()
	if seen != "Key tok-1" {
		t.Errorf("X-Api-Key = %q; want %q", seen, "Key tok-1")
	}
}

func TestRoundTrip_doesNotModifyRequest(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get}, &testutil.Backend{})
	req, _ := http.NewRequest(http.MethodGet, "https://api.test/x", nil)
	req.Header.Set("X-Trace", "1")
	get := func() { resp, _ := rt.RoundTrip(req); resp.Body.Close() }
	get()
	if len(req.Header) != 1 || req.Header.Get("Authorization") != "" {
		t.Errorf("caller's header changed: %v", req.Header)
	}
}

func TestRoundTrip_recoversFromRevokedToken(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	b := &testutil.Backend{}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get}, b)
	failed := collect[messages.AuthFailed](t, rt)
	tried := collect[messages.RecoveryTried](t, rt)

	get(t, rt).Body.Close()
	b.Revoke("tok-1")
	req, _ := http.NewRequest(http.MethodPost, "https://api.test/x", strings.NewReader("payload"))
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d; want 200 after recovery", resp.StatusCode)
	}
	if last := b.Last(); last.Auth != "Bearer tok-2" || last.Body != "payload" {
		t.Errorf("resent with %q body %q; want %q body %q", last.Auth, last.Body, "Bearer tok-2", "payload")
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
			p := &testutil.Provider{ExpiresIn: 3600}
			b := &testutil.Backend{Status: http.StatusUnauthorized}
			rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, MaxRecoveryTries: tt.max}, b)
			aborted := collect[messages.RecoveryAborted](t, rt)
			resp := get(t, rt)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 401 || string(body) != "status 401" {
				t.Errorf("got %d %q; want the last 401 with its body", resp.StatusCode, body)
			}
			if got := len(b.Requests()); got != tt.wantSends {
				t.Errorf("sends = %d; want %d", got, tt.wantSends)
			}
			if got := aborted(1)[0].Attempts; got != tt.wantTries {
				t.Errorf("RecoveryAborted.Attempts = %d; want %d", got, tt.wantTries)
			}
			// The counter belongs to the request: a second request gets the
			// same number of tries.
			get(t, rt).Body.Close()
			if got := len(b.Requests()); got != 2*tt.wantSends {
				t.Errorf("sends after second request = %d; want %d", got, 2*tt.wantSends)
			}
		})
	}
}

type onceReader struct{ io.Reader }

func TestRoundTrip_unreplayableBodyIsNotResent(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	b := &testutil.Backend{Status: http.StatusUnauthorized}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get}, b)
	aborted := collect[messages.RecoveryAborted](t, rt)
	req, _ := http.NewRequest(http.MethodPost, "https://api.test/x", onceReader{strings.NewReader("data")})
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || len(b.Requests()) != 1 {
		t.Errorf("status %d after %d sends; want 401 after 1", resp.StatusCode, len(b.Requests()))
	}
	if msg := aborted(1)[0].Message; !strings.Contains(msg, "cannot be replayed") {
		t.Errorf("RecoveryAborted.Message = %q; want it to say the body cannot be replayed", msg)
	}
}

func TestRoundTrip_singleFetchForConcurrentRequests(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	release := p.Hold()
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get}, &testutil.Backend{})
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
	testutil.Eventually(t, "the fetch to start", func() bool { return p.Calls.Load() > 0 })
	release()
	wg.Wait()
	if got := p.Calls.Load(); got != 1 {
		t.Errorf("provider calls = %d; want 1", got)
	}
	if got := ok.Load(); got != 300 {
		t.Errorf("successful requests = %d; want 300", got)
	}
}

func TestRoundTrip_contextEndsWhileWaiting(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	p.Hold()
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get}, &testutil.Backend{})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.test/x", nil)
	errc := make(chan error, 1)
	go func() {
		_, err := rt.RoundTrip(req)
		errc <- err
	}()
	testutil.Eventually(t, "the fetch to start", func() bool { return p.Calls.Load() > 0 })
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

	p := &testutil.Provider{ExpiresIn: 3600}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get}, http.DefaultTransport)
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
	p := &testutil.Provider{ExpiresIn: 3600}
	p.Hold()
	rt, err := transport.New(tokenmanager.Settings{GetCredentials: p.Get}, transport.WithBase(&testutil.Backend{}))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := rt.Token(context.Background())
		errc <- err
	}()
	testutil.Eventually(t, "the fetch to start", func() bool { return p.Calls.Load() > 0 })
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
	p := &testutil.Provider{ExpiresIn: 3600}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, WaitTimeout: time.Nanosecond}, &testutil.Backend{})
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
	p := &testutil.Provider{ExpiresIn: 3600}
	b := &testutil.Backend{Status: http.StatusUnauthorized}
	mock := clock.NewMock()
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, Clock: mock}, b)
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
	if got := p.Calls.Load(); got > 40 {
		t.Errorf("provider calls = %d for %d requests; want the backoff to hold them to a few dozen (without it: %d)",
			got, requests, requests*6)
	}
	held := false
	for !held {
		held = strings.Contains(aborted(1)[0].Message, "backing off")
	}
	// After the backoff, fetching resumes.
	before := p.Calls.Load()
	mock.Add(30 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.test/x", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("after the backoff: %v (provider calls %d -> %d)", err, before, p.Calls.Load())
	}
	resp.Body.Close()
	if got := p.Calls.Load() - before; got < 1 {
		t.Errorf("no fetch after the backoff")
	}
}

func TestRecovery_backoffStreakEndsWhenTokensServeAgain(t *testing.T) {
	// After an incident that made the manager back off, tokens serve
	// normally for a long while; one later revocation whose first
	// replacement is rejected too must recover as usual.
	p := &testutil.Provider{ExpiresIn: 3600}
	b := &testutil.Backend{}
	mock := clock.NewMock()
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, Clock: mock}, b)
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
	b.SetStatus(http.StatusUnauthorized) // the incident: every token rejected
	for range 12 {
		do()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		rt.Token(ctx) // a round trip through the actor's mailbox
		cancel()
		mock.Add(31 * time.Second) // past any backoff
	}
	b.SetStatus(0)
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
	b.Revoke(cur.AccessToken)
	b.Revoke(fmt.Sprintf("tok-%d", p.Calls.Load()+1))
	if st := do(); st != 200 {
		t.Errorf("status %d after a revocation whose first replacement was rejected too; want 200", st)
	}
	if st := do(); st != 200 {
		t.Errorf("next request: status %d; want 200", st)
	}
}

func TestNewFromActor_recoveryUsesItsOwnTries(t *testing.T) {
	// The actor's settings allow no recovery; the RoundTripper allows ten.
	p := &testutil.Provider{ExpiresIn: 3600}
	b := &testutil.Backend{}
	for i := 1; i <= 10; i++ {
		b.Revoke(fmt.Sprintf("tok-%d", i))
	}
	system := proto.NewActorSystem(proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	props, err := actor.NewProps(tokenmanager.Settings{GetCredentials: p.Get, MaxRecoveryTries: -1})
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
	if auth := b.Last().Auth; resp.StatusCode != 200 || auth != "Bearer tok-11" {
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
	base := testutil.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
		seen = append(seen, req.Header.Get("Authorization"))
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: req}, nil
	})
	p := &testutil.Provider{ExpiresIn: 3600}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get}, base)
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
	p := &testutil.Provider{ExpiresIn: 3600}
	b := &testutil.Backend{}
	rt := testutil.NewRT(t, tokenmanager.Settings{
		GetCredentials: p.Get,
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
	if len(b.Requests()) != 0 {
		t.Errorf("%d requests sent; want none", len(b.Requests()))
	}
}

func TestNewFromActor_deadActorFailsFast(t *testing.T) {
	system := proto.NewActorSystem(
		proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }),
		proto.WithDeadLetterThrottleInterval(time.Millisecond),
	)
	defer system.Shutdown()
	props, err := actor.NewProps(tokenmanager.Settings{GetCredentials: (&testutil.Provider{}).Get})
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
