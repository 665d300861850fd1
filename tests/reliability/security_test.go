package reliability

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// secretMark starts every access token the security tests hand out, so
// a leak anywhere is one strings.Contains away.
const secretMark = "s3cr3t"

type syncBuffer = testutil.SyncBuffer

// texts collects strings from callbacks and errors.
type texts struct {
	mu  sync.Mutex
	all []string
}

func (x *texts) add(format string, args ...any) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.all = append(x.all, fmt.Sprintf(format, args...))
}

func (x *texts) list() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]string(nil), x.all...)
}

// runLeakRig runs a RoundTripper through every path that produces an
// event, a callback, an error or a log line, with tokens marked
// secretMark, and returns what came out.
func runLeakRig(t *testing.T, addToLogs bool) (ev *testutil.Recorder, out *texts, logs *syncBuffer, issued []string) {
	t.Helper()
	mock := clock.NewMock()
	out = &texts{}
	logs = &syncBuffer{}
	var mode atomic.Value // "ok", "error", "crlf", "late"
	mode.Store("ok")
	var mu sync.Mutex
	var n int
	provider := func(ctx context.Context) (tokenmanager.Token, error) {
		mu.Lock()
		n++
		tok := fmt.Sprintf("%s-%d-Zq9", secretMark, n)
		issued = append(issued, tok)
		mu.Unlock()
		switch mode.Load().(string) {
		case "error":
			return tokenmanager.Token{}, errors.New("token endpoint said no")
		case "crlf":
			return tokenmanager.Token{AccessToken: tok + "\r\nX-Injected: 1", ExpiresIn: 60}, nil
		case "late":
			mock.Add(2 * time.Second) // the fetch outlives the token
			return tokenmanager.Token{AccessToken: tok, ExpiresIn: 1}, nil
		}
		return tokenmanager.Token{AccessToken: tok, ExpiresIn: 3600}, nil
	}
	var revoked sync.Map
	base := testutil.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Body != nil {
			io.Copy(io.Discard, req.Body)
			req.Body.Close()
		}
		tok := testutil.Bearer(req)
		if _, bad := revoked.Load(tok); bad || strings.HasSuffix(req.URL.Path, "/deny") {
			return testutil.TextResponse(req, http.StatusUnauthorized, "no"), nil
		}
		return testutil.TextResponse(req, http.StatusOK, "ok"), nil
	})
	rt := testutil.NewRT(t, tokenmanager.Settings{
		GetCredentials:      provider,
		Clock:               mock,
		AddTokenToLogs:      addToLogs,
		MaxRecoveryTries:    2,
		TokenTryThreshold:   2,
		Logger:              slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnTokenRefresh:      func(m string) { out.add("OnTokenRefresh: %s", m) },
		OnAuthFail:          func(m string) { out.add("OnAuthFail: %s", m) },
		OnTokenRequestFail:  func(err error) { out.add("OnTokenRequestFail: %v | %+v | %#v", err, err, err) },
		OnRecoveryTry:       func(m string) { out.add("OnRecoveryTry: %s", m) },
		OnTokenTryThreshold: func(n int) { out.add("OnTokenTryThreshold: %d", n) },
		OnRecoveryAbort:     func(m string) { out.add("OnRecoveryAbort: %s", m) },
	}, base)
	ev = testutil.Record(t, rt)

	do := func(method, path string, body io.Reader, ctxTimeout time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), ctxTimeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, method, "https://api.test"+path, body)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			out.add("RoundTrip error: %v | %+v | %#v", err, err, err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	wantEvents := func(name string, n int) {
		testutil.Within(t, 5*time.Second, fmt.Sprintf("%d %s events", n, name), func() bool { return ev.Count(name) >= n })
	}

	do("GET", "/x", nil, 5*time.Second) // cold start
	tok, err := rt.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	revoked.Store(tok.AccessToken, true)
	do("POST", "/x", strings.NewReader("payload"), 5*time.Second)               // recovery
	do("GET", "/deny", nil, 5*time.Second)                                      // recovery aborted
	do("POST", "/deny", io.NopCloser(strings.NewReader("once")), 5*time.Second) // unreplayable
	wantEvents("recovery_aborted", 2)

	for _, m := range []string{"error", "crlf", "late"} {
		cur, err := rt.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		revoked.Store(cur.AccessToken, true)
		mode.Store(m)
		// Two failed fetches in a row reach TokenTryThreshold (2).
		for range 2 {
			before := ev.Count("token_request_failed")
			do("GET", "/x", nil, 200*time.Millisecond)
			wantEvents("token_request_failed", before+1)
			mock.Add(time.Minute) // past the backoff
		}
		mode.Store("ok")
		testutil.AdvanceUntil(t, mock, time.Minute, 30, "recovery after "+m, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			_, err := rt.Token(ctx)
			if err != nil {
				out.add("Token error: %v | %+v | %#v", err, err, err)
			}
			return err == nil
		})
	}
	wantEvents("token_try_threshold_reached", 1)
	rt.Close()
	mu.Lock()
	defer mu.Unlock()
	return ev, out, logs, append([]string(nil), issued...)
}

// TestSecurity_tokenNeverLeaks: with AddTokenToLogs false, no access
// token appears in any event (formatted with %v, %+v and %#v), callback
// message, error returned to a caller, or line of Settings.Logger, on
// every path: cold start, recovery, aborted recovery, unreplayable body,
// failed fetch, token with CR/LF, token expired on arrival, threshold.
func TestSecurity_tokenNeverLeaks(t *testing.T) {
	ev, out, logs, issued := runLeakRig(t, false)
	all := ev.All()
	names := map[string]int{}
	for _, e := range all {
		names[e.Name()]++
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			if s := fmt.Sprintf(verb, e); strings.Contains(s, secretMark) {
				t.Errorf("event %s formatted with %s leaks the token: %s", e.Name(), verb, s)
			}
		}
	}
	for _, want := range []string{"token_refreshed", "auth_failed", "recovery_tried", "recovery_aborted", "token_request_failed", "token_try_threshold_reached"} {
		if names[want] == 0 {
			t.Errorf("no %s event: the rig did not cover that path (saw %v)", want, names)
		}
	}
	for _, s := range out.list() {
		if strings.Contains(s, secretMark) {
			t.Errorf("leak: %s", s)
		}
	}
	if s := logs.String(); strings.Contains(s, secretMark) {
		t.Errorf("Settings.Logger output leaks the token:\n%s", s)
	}
	t.Logf("%d tokens issued, %d events %v, %d callback messages and errors, %d bytes of logs: no token in any",
		len(issued), len(all), names, len(out.list()), len(logs.String()))
}

// TestSecurity_addTokenToLogs: with AddTokenToLogs true, the Message of
// TokenRefreshed, AuthFailed and RecoveryTried does carry the token, as
// documented, and errors still do not.
func TestSecurity_addTokenToLogs(t *testing.T) {
	ev, out, _, _ := runLeakRig(t, true)
	with := map[string]bool{}
	for _, e := range ev.All() {
		var msg string
		switch e := e.(type) {
		case messages.TokenRefreshed:
			msg = e.Message
		case messages.AuthFailed:
			msg = e.Message
		case messages.RecoveryTried:
			msg = e.Message
		}
		if strings.Contains(msg, secretMark) {
			with[e.Name()] = true
		}
	}
	for _, want := range []string{"token_refreshed", "auth_failed", "recovery_tried"} {
		if !with[want] {
			t.Errorf("%s Message lacks the token with AddTokenToLogs set", want)
		}
	}
	for _, s := range out.list() {
		if strings.HasPrefix(s, "RoundTrip error") && strings.Contains(s, secretMark) {
			t.Errorf("error leaks the token even though only messages may: %s", s)
		}
	}
}

// TestSecurity_redirects: an http.Client following redirects sends the
// token to the original host and its subdomains (any port), never to
// another host, another IP, or a parent domain.
func TestSecurity_redirects(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]string{} // host -> Authorization
	base := testutil.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
		mu.Lock()
		seen[req.URL.Host] = req.Header.Get("Authorization")
		mu.Unlock()
		if to := req.URL.Query().Get("to"); to != "" {
			resp := testutil.TextResponse(req, http.StatusFound, "")
			resp.Header.Set("Location", to)
			return resp, nil
		}
		return testutil.TextResponse(req, http.StatusOK, "ok"), nil
	})
	p := &seqProvider{}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: clock.NewMock()}, base)
	client := rt.Client()
	tests := []struct {
		from, to  string
		wantToken bool
	}{
		{"https://api.test/a", "https://evil.test/b", false},
		{"https://api.test/a", "https://api.test.evil/b", false},
		{"https://api.test/a", "https://xapi.test/b", false},
		{"https://sub.api.test/a", "https://api.test/b", false},
		{"https://api.test/a", "https://sub.api.test/b", true},
		{"https://api.test/a", "https://api.test:8443/b", true},
		{"http://127.0.0.1:1/a", "http://127.0.0.2:1/b", false},
		{"http://127.0.0.1:1/a", "http://127.0.0.1:2/b", true},
	}
	for _, tt := range tests {
		t.Run(tt.from+"->"+tt.to, func(t *testing.T) {
			resp, err := client.Get(tt.from + "?to=" + tt.to)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			host := resp.Request.URL.Host
			mu.Lock()
			auth := seen[host]
			mu.Unlock()
			if got := auth != ""; got != tt.wantToken {
				t.Errorf("redirect target %s got Authorization %q; want token: %v", host, auth, tt.wantToken)
			}
		})
	}
}

// TestSecurity_discardedResponsesDrainedAndClosed: every response the
// recovery discards is read (up to the drain bound) and closed exactly
// once; the response the caller gets is untouched.
func TestSecurity_discardedResponsesDrainedAndClosed(t *testing.T) {
	for _, size := range []int{0, 10 << 10, 1 << 20} {
		t.Run(fmt.Sprintf("%dB", size), func(t *testing.T) {
			p := &seqProvider{}
			var mu sync.Mutex
			var bodies []*trackedBody
			base := testutil.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
				b := newTrackedBody(strings.Repeat("z", size), nil)
				mu.Lock()
				bodies = append(bodies, b)
				mu.Unlock()
				resp := testutil.TextResponse(req, http.StatusUnauthorized, "")
				resp.Body = b
				return resp, nil
			})
			rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: clock.NewMock(), MaxRecoveryTries: 3}, base)
			req, _ := http.NewRequest(http.MethodGet, "https://api.test/x", nil)
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(bodies) != 4 {
				t.Fatalf("base saw %d requests; want 4 (1 + 3 tries)", len(bodies))
			}
			for i, b := range bodies[:3] {
				if c := b.closes.Load(); c != 1 {
					t.Errorf("discarded response %d closed %d times; want 1", i, c)
				}
				if r := b.read.Load(); size <= 256<<10 && r != int64(size) {
					t.Errorf("discarded response %d: %d of %d bytes drained", i, r, size)
				}
			}
			last := bodies[3]
			if resp.Body != io.ReadCloser(last) || last.closes.Load() != 0 || last.read.Load() != 0 {
				t.Errorf("the response given back was touched: closes %d, read %d", last.closes.Load(), last.read.Load())
			}
			resp.Body.Close()
		})
	}
}
