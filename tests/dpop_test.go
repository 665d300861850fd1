package tests

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/providers"
)

// rotatingDPoP is a token endpoint and an API that both require their
// own DPoP nonce, each rotating every second of a mock clock. The token
// endpoint issues DPoP-bound tokens of 2 s; the API checks each proof
// against the key its token is bound to.
type rotatingDPoP struct {
	mock               *clock.Mock
	as, api            *httptest.Server
	asV, apiV          testutil.DPoPVerifier
	mu                 sync.Mutex
	bound              map[string]string // token -> jkt
	issued             atomic.Int64
	tokenReqs, asNonce atomic.Int64 // token requests; those answered use_dpop_nonce
	ok, apiNonce       atomic.Int64 // API requests served; answered use_dpop_nonce
	refused            atomic.Int64
}

func newRotatingDPoP(t *testing.T) *rotatingDPoP {
	r := &rotatingDPoP{mock: clock.NewMock(), bound: map[string]string{}}
	nonce := func(who string) func() string {
		return func() string { return who + "-" + strconv.FormatInt(r.mock.Now().Unix(), 10) }
	}
	r.asV.Nonce, r.apiV.Nonce = nonce("as"), nonce("api")
	r.as = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.tokenReqs.Add(1)
		w.Header().Set("Content-Type", "application/json")
		p, err := r.asV.Verify(req.Header.Get("DPoP"), "POST", r.as.URL+"/token", "", "")
		switch {
		case errors.Is(err, testutil.ErrDPoPNonce):
			r.asNonce.Add(1)
			w.Header().Set("DPoP-Nonce", r.asV.Nonce())
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"use_dpop_nonce"}`)
			return
		case err != nil:
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_dpop_proof", "error_description": err.Error()})
			return
		}
		tok := "tok-" + strconv.FormatInt(r.issued.Add(1), 10)
		r.mu.Lock()
		r.bound[tok] = p.JKT
		r.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "DPoP", "expires_in": 2})
	}))
	t.Cleanup(r.as.Close)
	r.api = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		tok, _ := strings.CutPrefix(req.Header.Get("Authorization"), "DPoP ")
		r.mu.Lock()
		jkt := r.bound[tok]
		r.mu.Unlock()
		_, err := r.apiV.Verify(req.Header.Get("DPoP"), req.Method, r.api.URL+req.URL.Path, tok, jkt)
		switch {
		case jkt == "" || string(body) != "payload":
			r.refused.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
		case errors.Is(err, testutil.ErrDPoPNonce):
			r.apiNonce.Add(1)
			w.Header().Set("DPoP-Nonce", r.apiV.Nonce())
			w.Header().Set("WWW-Authenticate", `DPoP error="use_dpop_nonce"`)
			w.WriteHeader(http.StatusUnauthorized)
		case err != nil:
			r.refused.Add(1)
			w.Header().Set("WWW-Authenticate", `DPoP error="invalid_dpop_proof"`)
			w.WriteHeader(http.StatusUnauthorized)
		default:
			r.ok.Add(1)
		}
	}))
	t.Cleanup(r.api.Close)
	return r
}

// TestDPoP_rotatingNonces_load: 8 workers send requests for 5 s of a
// mock clock while both nonces rotate every second and tokens live 2 s.
// No request fails; each nonce request, of the API or of the token
// endpoint, costs exactly one resend; no token is fetched because of a
// nonce (every fetch is for expiry, none for an invalidation).
func TestDPoP_rotatingNonces_load(t *testing.T) {
	r := newRotatingDPoP(t)
	d, err := tokenmanager.NewDPoP(nil)
	if err != nil {
		t.Fatal(err)
	}
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	rt := testutil.NewRT(t, tokenmanager.Settings{
		Clock: r.mock,
		DPoP:  d,
		GetCredentials: providers.ClientCredentialsGrant(providers.GrantConfig{
			TokenURL:   r.as.URL + "/token",
			Auth:       providers.ClientSecret("c", "s", providers.AuthStyleInParams),
			HTTPClient: &http.Client{Transport: base},
		}),
	}, base)
	rec := testutil.Record(t, rt)
	hc := rt.Client()

	const workers, steps, step = 8, 50, 100 * time.Millisecond // 5 s of the mock clock
	var done atomic.Bool
	var sent, failed atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for !done.Load() {
				resp, err := hc.Post(r.api.URL+"/orders", "text/plain", strings.NewReader("payload"))
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					firstErr.Do(func() { t.Errorf("request failed: %v", err) })
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					firstErr.Do(func() { t.Errorf("request answered %d", resp.StatusCode) })
				}
			}
		})
	}
	for range steps {
		// Time moves on once every worker has had a request through.
		next := sent.Load() + workers
		testutil.Eventually(t, "requests sent", func() bool { return sent.Load() >= next })
		r.mock.Add(step)
	}
	done.Store(true)
	wg.Wait()
	rt.Close()   // every event delivered
	r.as.Close() // every token request answered: none is counted but unanswered

	retried := testutil.EventsOf[messages.DPoPNonceRetried](rec)
	refreshed := testutil.EventsOf[messages.TokenRefreshed](rec)
	// Tokens the endpoint issued (a fetch still under way at Close is
	// issued without a TokenRefreshed).
	fetches := r.issued.Load()
	t.Logf("DPoP with rotating nonces, %d workers x %v (mock clock): %d requests, %d failed; API nonce requests %d, resends %d; token requests %d for %d tokens, AS nonce requests %d; recovery tries %d",
		workers, steps*step, r.ok.Load(), failed.Load(), r.apiNonce.Load(), len(retried), r.tokenReqs.Load(), fetches, r.asNonce.Load(), rec.Count("recovery_tried"))
	if failed.Load() != 0 || r.refused.Load() != 0 {
		t.Errorf("%d failed, %d refused; want none", failed.Load(), r.refused.Load())
	}
	if int64(len(retried)) != r.apiNonce.Load() || r.apiNonce.Load() < 4 {
		t.Errorf("%d resends for %d API nonce requests; want one each, at least 4", len(retried), r.apiNonce.Load())
	}
	if r.tokenReqs.Load() != fetches+r.asNonce.Load() || r.asNonce.Load() < 2 {
		t.Errorf("%d token requests for %d tokens and %d AS nonce requests; want one resend per nonce request (at least 2)", r.tokenReqs.Load(), fetches, r.asNonce.Load())
	}
	for _, e := range refreshed {
		if e.Reason == messages.ReasonInvalidated {
			t.Errorf("a token fetched for an invalidation: %+v; nonces must cost no token", e)
		}
	}
	if rec.Count("recovery_tried") != 0 || rec.Count("auth_failed") != 0 {
		t.Errorf("%d recovery tries, %d auth failures; want none", rec.Count("recovery_tried"), rec.Count("auth_failed"))
	}
}
