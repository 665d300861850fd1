package reliability

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-oauth2/oauth2/v4/manage"
	"github.com/go-oauth2/oauth2/v4/models"
	"github.com/go-oauth2/oauth2/v4/server"
	"github.com/go-oauth2/oauth2/v4/store"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

const (
	oauthClientID     = "reliability-client"
	oauthClientSecret = "reliability-secret"
	// bodyHashHeader carries the hex SHA-256 of a POST body, so the
	// resource server can prove the body arrived intact.
	bodyHashHeader = "X-Body-SHA256"
	// oauthLifetime is the access-token lifetime the server grants; with
	// oauthBuffer the manager rolls the token over about every second.
	oauthLifetime = 2 * time.Second
	oauthBuffer   = 1 * time.Second
	oauthWorkers  = 8
)

// oauthRun is how long each real-server scenario sends traffic.
func oauthRun() time.Duration {
	if testing.Short() {
		return 2 * time.Second
	}
	return 5 * time.Second
}

// authServer is an OAuth2 authorization server (client credentials grant,
// github.com/go-oauth2/oauth2/v4) and a protected resource validating its
// tokens, each on its own httptest server on 127.0.0.1.
type authServer struct {
	mgr   *manage.Manager
	srv   *server.Server
	token *httptest.Server
	api   *httptest.Server

	// Faults of the token endpoint, fixed before traffic starts.
	failEvery int64         // when > 0, every failEvery-th call answers 500
	delay     time.Duration // added to every call

	tokenCalls atomic.Int64 // token endpoint calls
	issued     atomic.Int64 // tokens issued (200 answers)
	injected   atomic.Int64 // 500s injected
	revokes    atomic.Int64 // revokeAll calls
	revokedN   atomic.Int64 // tokens removed from the store by revokeAll

	served    atomic.Int64 // resource requests answered 200
	rejected  atomic.Int64 // resource requests answered 401
	posts     atomic.Int64 // POSTs served whose body hash matched
	badBodies atomic.Int64 // requests whose body hash did not match

	mu     sync.Mutex
	tokens []string // access tokens issued and not yet revoked
}

func newAuthServer(t *testing.T, failEvery int64, delay time.Duration) *authServer {
	t.Helper()
	a := &authServer{failEvery: failEvery, delay: delay}
	a.mgr = manage.NewDefaultManager()
	a.mgr.SetClientTokenCfg(&manage.Config{AccessTokenExp: oauthLifetime})
	a.mgr.MustTokenStorage(store.NewMemoryTokenStore())
	clients := store.NewClientStore()
	if err := clients.Set(oauthClientID, &models.Client{ID: oauthClientID, Secret: oauthClientSecret, Domain: "http://127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	a.mgr.MapClientStorage(clients)
	a.srv = server.NewDefaultServer(a.mgr)
	a.token = httptest.NewServer(http.HandlerFunc(a.serveToken))
	a.api = httptest.NewServer(http.HandlerFunc(a.serveAPI))
	t.Cleanup(a.token.Close)
	t.Cleanup(a.api.Close)
	return a
}

// serveToken is the token endpoint: go-oauth2's handler behind the
// injected faults, recording every token it issues.
func (a *authServer) serveToken(w http.ResponseWriter, r *http.Request) {
	n := a.tokenCalls.Add(1)
	if a.delay > 0 {
		select {
		case <-time.After(a.delay):
		case <-r.Context().Done():
			return
		}
	}
	if a.failEvery > 0 && n%a.failEvery == 0 {
		a.injected.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"error":"server_error","error_description":"injected fault"}`)
		return
	}
	rec := httptest.NewRecorder()
	if err := a.srv.HandleTokenRequest(rec, r); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if rec.Code == http.StatusOK {
		var body struct {
			AccessToken string `json:"access_token"`
		}
		if json.Unmarshal(rec.Body.Bytes(), &body) == nil && body.AccessToken != "" {
			a.issued.Add(1)
			a.mu.Lock()
			a.tokens = append(a.tokens, body.AccessToken)
			a.mu.Unlock()
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

// serveAPI is the protected resource. It checks every body against the
// hash the client sent before it looks at the token, so a resent request
// must carry its whole body too.
func (a *authServer) serveAPI(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		a.badBodies.Add(1)
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if want := r.Header.Get(bodyHashHeader); want != "" || r.Method == http.MethodPost {
		sum := sha256.Sum256(body)
		if got := hex.EncodeToString(sum[:]); got != want {
			a.badBodies.Add(1)
			http.Error(w, "body hash mismatch", http.StatusBadRequest)
			return
		}
	}
	if _, err := a.srv.ValidationBearerToken(r); err != nil {
		a.rejected.Add(1)
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if r.Method == http.MethodPost {
		a.posts.Add(1)
	}
	a.served.Add(1)
	io.WriteString(w, "ok")
}

// revokeAll removes every token issued so far from the token store: the
// resource rejects them from now on, whatever their expiry.
func (a *authServer) revokeAll(t *testing.T) {
	a.mu.Lock()
	toks := a.tokens
	a.tokens = nil
	a.mu.Unlock()
	for _, tok := range toks {
		if err := a.mgr.RemoveAccessToken(context.Background(), tok); err != nil {
			t.Errorf("RemoveAccessToken: %v", err)
		}
	}
	a.revokes.Add(1)
	a.revokedN.Add(int64(len(toks)))
}

// newHTTPTransport returns a transport of the test's own, its idle
// connections closed at cleanup so no connection goroutine outlives it.
func newHTTPTransport(t *testing.T) *http.Transport {
	tr := &http.Transport{MaxIdleConnsPerHost: 2 * oauthWorkers, IdleConnTimeout: 5 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// clientCredentialsProvider fetches tokens with
// golang.org/x/oauth2/clientcredentials.
func (a *authServer) clientCredentialsProvider(t *testing.T) tokenmanager.TokenProvider {
	cfg := clientcredentials.Config{
		ClientID:     oauthClientID,
		ClientSecret: oauthClientSecret,
		TokenURL:     a.token.URL + "/token",
		AuthStyle:    oauth2.AuthStyleInHeader,
	}
	hc := &http.Client{Transport: newHTTPTransport(t)}
	return func(ctx context.Context) (tokenmanager.Token, error) {
		tok, err := cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, hc))
		if err != nil {
			return tokenmanager.Token{}, err
		}
		exp := tok.ExpiresIn
		if exp == 0 && !tok.Expiry.IsZero() {
			exp = int64(time.Until(tok.Expiry).Round(time.Second) / time.Second)
		}
		return tokenmanager.Token{AccessToken: tok.AccessToken, TokenType: tok.TokenType, ExpiresIn: exp}, nil
	}
}

// formProvider fetches tokens with a plain form POST whose JSON answer is
// decoded into tokenmanager.Token.
func (a *authServer) formProvider(t *testing.T) tokenmanager.TokenProvider {
	hc := &http.Client{Transport: newHTTPTransport(t)}
	return func(ctx context.Context) (tokenmanager.Token, error) {
		form := url.Values{"grant_type": {"client_credentials"}}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.token.URL+"/token", strings.NewReader(form.Encode()))
		if err != nil {
			return tokenmanager.Token{}, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(oauthClientID, oauthClientSecret)
		resp, err := hc.Do(req)
		if err != nil {
			return tokenmanager.Token{}, err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return tokenmanager.Token{}, err
		}
		if resp.StatusCode != http.StatusOK {
			return tokenmanager.Token{}, fmt.Errorf("token endpoint: status %d", resp.StatusCode)
		}
		var tok tokenmanager.Token
		if err := json.Unmarshal(data, &tok); err != nil {
			return tokenmanager.Token{}, err
		}
		return tok, nil
	}
}

// loadStats is what callers saw.
type loadStats struct {
	gets, posts atomic.Int64
	failures    atomic.Int64
	mu          sync.Mutex
	firstErrs   []string
}

func (s *loadStats) fail(format string, args ...any) {
	s.failures.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.firstErrs) < 5 {
		s.firstErrs = append(s.firstErrs, fmt.Sprintf(format, args...))
	}
}

// runLoad sends GETs and POSTs (random bodies up to 16 KiB, their hash in
// bodyHashHeader) from oauthWorkers goroutines until d has passed. at, if
// set, is called from its own goroutine with the run's length so a
// scenario can inject faults mid-run.
func runLoad(t *testing.T, client *http.Client, apiURL string, d time.Duration, at func(run time.Duration)) *loadStats {
	t.Helper()
	stats := &loadStats{}
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range oauthWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for time.Now().Before(stop) {
				oneRequest(client, apiURL, rng, stats)
			}
		}()
	}
	if at != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at(d)
		}()
	}
	wg.Wait()
	return stats
}

func oneRequest(client *http.Client, apiURL string, rng *rand.Rand, stats *loadStats) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var req *http.Request
	if rng.IntN(2) == 0 {
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, apiURL+"/things", nil)
		stats.gets.Add(1)
	} else {
		body := make([]byte, rng.IntN(16<<10))
		for i := range body {
			body[i] = byte(rng.Uint32())
		}
		sum := sha256.Sum256(body)
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, apiURL+"/things", bytes.NewReader(body))
		req.Header.Set(bodyHashHeader, hex.EncodeToString(sum[:]))
		stats.posts.Add(1)
	}
	resp, err := client.Do(req)
	if err != nil {
		stats.fail("%s: %v", req.Method, err)
		return
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(data) != "ok" {
		stats.fail("%s: status %d, body %q, read error %v", req.Method, resp.StatusCode, data, err)
	}
}

// oauthScenario runs traffic against a fresh server with the given faults
// and checks what every real-server scenario promises.
type oauthScenario struct {
	failEvery int64
	delay     time.Duration
	revokes   int  // revocations of all tokens, evenly spread over the run
	form      bool // fetch with a plain form POST rather than x/oauth2
}

func (sc oauthScenario) run(t *testing.T) {
	a := newAuthServer(t, sc.failEvery, sc.delay)
	provider := a.clientCredentialsProvider(t)
	if sc.form {
		provider = a.formProvider(t)
	}
	rt := testutil.NewRT(t, tokenmanager.Settings{
		GetCredentials: provider,
		RefreshBuffer:  oauthBuffer,
		RetryBaseDelay: 20 * time.Millisecond,
		RetryMaxDelay:  200 * time.Millisecond,
		FetchTimeout:   5 * time.Second,
	}, newHTTPTransport(t))
	ev := testutil.Record(t, rt)

	var inject func(time.Duration)
	if sc.revokes > 0 {
		inject = func(run time.Duration) {
			for i := 1; i <= sc.revokes; i++ {
				time.Sleep(run / time.Duration(sc.revokes+1))
				a.revokeAll(t)
			}
		}
	}
	began := time.Now()
	stats := runLoad(t, rt.Client(), a.api.URL, oauthRun(), inject)
	elapsed := time.Since(began)
	rt.Close()

	// Rollovers the clock allows: the manager refreshes oauthBuffer before
	// expiry, and a token lives oauthLifetime.
	rollovers := int64(elapsed / (oauthLifetime - oauthBuffer))
	reasons := reasons(ev)
	requests := stats.gets.Load() + stats.posts.Load()
	t.Logf("requests=%d (GET %d, POST %d) served=%d posts-intact=%d failures-seen-by-callers=%d bad-bodies=%d 401s-recovered=%d recovery-tries=%d",
		requests, stats.gets.Load(), stats.posts.Load(), a.served.Load(), a.posts.Load(),
		stats.failures.Load(), a.badBodies.Load(), a.rejected.Load(), ev.Count("recovery_tried"))
	t.Logf("tokens-issued=%d token-endpoint-calls=%d injected-500s=%d revocations=%d (tokens revoked %d) rollovers-allowed=%d refreshes=%v fetch-failures=%d elapsed=%v",
		a.issued.Load(), a.tokenCalls.Load(), a.injected.Load(), a.revokes.Load(), a.revokedN.Load(),
		rollovers, reasons, ev.Count("token_request_failed"), elapsed.Round(time.Millisecond))

	if n := stats.failures.Load(); n != 0 {
		t.Errorf("%d of %d calls failed; first: %q", n, requests, stats.firstErrs)
	}
	if n := a.badBodies.Load(); n != 0 {
		t.Errorf("%d request bodies arrived damaged", n)
	}
	if a.posts.Load() == 0 || a.served.Load() < 50 {
		t.Errorf("served %d requests (%d POSTs); the run did too little to prove anything", a.served.Load(), a.posts.Load())
	}
	if max := rollovers + a.revokes.Load() + a.injected.Load() + 2; a.issued.Load() > max {
		t.Errorf("tokens issued = %d; want at most %d (rollovers %d + revocations %d + injected failures %d + 2)",
			a.issued.Load(), max, rollovers, a.revokes.Load(), a.injected.Load())
	}
	// A revocation restarts a token's lifetime, so it counts as a rollover.
	turned := reasons[messages.ReasonEarlyRefresh] + reasons[messages.ReasonExpired] + reasons[messages.ReasonInvalidated]
	if min := rollovers / 2; int64(turned) < min {
		t.Errorf("refreshes = %v; want at least %d rollovers in %v", reasons, min, elapsed)
	}
	if sc.revokes > 0 && a.rejected.Load() == 0 {
		t.Errorf("no request met a revoked token; the revocations proved nothing")
	}
	if sc.failEvery > 0 && a.injected.Load() == 0 {
		t.Errorf("no token endpoint failure was injected")
	}
}

// TestOAuth2_SustainedRollover: concurrent GET+POST traffic across several
// token rollovers.
func TestOAuth2_SustainedRollover(t *testing.T) {
	oauthScenario{}.run(t)
}

// TestOAuth2_RevokedTwiceMidRun: every token is revoked early, twice; the
// callers never see the 401s.
func TestOAuth2_RevokedTwiceMidRun(t *testing.T) {
	oauthScenario{revokes: 2}.run(t)
}

// TestOAuth2_TokenEndpointFailsEveryThird: the token endpoint answers 500
// to every third call, once with a revocation forcing callers to wait.
func TestOAuth2_TokenEndpointFailsEveryThird(t *testing.T) {
	oauthScenario{failEvery: 3, revokes: 1, form: true}.run(t)
}

// TestOAuth2_TokenEndpointSlow: every token call takes 300ms, once with a
// revocation forcing callers to wait for it.
func TestOAuth2_TokenEndpointSlow(t *testing.T) {
	oauthScenario{delay: 300 * time.Millisecond, revokes: 1, form: true}.run(t)
}
