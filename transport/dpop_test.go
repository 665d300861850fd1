package transport_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// dpopAPI is an API that checks DPoP proofs as RFC 9449 §7 says, against
// the key its tokens are bound to, and requires its own nonce, which it
// rotates on demand.
type dpopAPI struct {
	*httptest.Server
	jkt string // the key tokens are bound to
	// boundTo, when set, gives the key each token is bound to instead.
	boundTo func(token string) string
	v       testutil.DPoPVerifier
	nonce   atomic.Pointer[string]
	seq     atomic.Int64

	mu     sync.Mutex
	bodies []string // the body of each request that reached the handler
	seen   []*testutil.DPoPProof
	// challenges counts use_dpop_nonce answers; rejects the others.
	challenges, rejects atomic.Int64
	// always, when set, challenges every request (a nonce that never
	// satisfies).
	always atomic.Bool
}

func newDPoPAPI(t *testing.T, jkt string) *dpopAPI {
	a := &dpopAPI{jkt: jkt}
	a.rotate()
	a.v.Nonce = func() string { return *a.nonce.Load() }
	mux := http.NewServeMux()
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		if !a.check(w, r) {
			return
		}
		http.Redirect(w, r, "/data", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if a.check(w, r) {
			io.WriteString(w, "ok")
		}
	})
	a.Server = httptest.NewServer(mux)
	t.Cleanup(a.Close)
	return a
}

func (a *dpopAPI) rotate() {
	n := "api-nonce-" + strconv.FormatInt(a.seq.Add(1), 10)
	a.nonce.Store(&n)
}

// check answers 401 unless r carries a DPoP-bound token and a valid proof
// of its key, and records what it saw.
func (a *dpopAPI) check(w http.ResponseWriter, r *http.Request) bool {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.bodies = append(a.bodies, string(body))
	a.mu.Unlock()
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "DPoP ")
	proofs := r.Header.Values("DPoP")
	if !ok || len(proofs) != 1 {
		a.rejects.Add(1)
		w.Header().Set("WWW-Authenticate", `DPoP error="invalid_token"`)
		w.WriteHeader(http.StatusUnauthorized)
		return false
	}
	htu := "http://" + r.Host + r.URL.Path
	jkt := a.jkt
	if a.boundTo != nil {
		jkt = a.boundTo(token)
	}
	p, err := a.v.Verify(proofs[0], r.Method, htu, token, jkt)
	if a.always.Load() && err == nil {
		err = testutil.ErrDPoPNonce
		a.rotate()
	}
	switch {
	case err == testutil.ErrDPoPNonce:
		a.challenges.Add(1)
		w.Header().Set("DPoP-Nonce", *a.nonce.Load())
		w.Header().Set("WWW-Authenticate", `DPoP error="use_dpop_nonce", error_description="nonce required"`)
		w.WriteHeader(http.StatusUnauthorized)
		return false
	case err != nil:
		a.rejects.Add(1)
		w.Header().Set("WWW-Authenticate", `DPoP error="invalid_dpop_proof"`)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return false
	}
	a.mu.Lock()
	a.seen = append(a.seen, p)
	a.mu.Unlock()
	return true
}

func newDPoPRT(t *testing.T, p *testutil.Provider) (*tokenmanager.DPoP, *http.Client, *testutil.Recorder) {
	d, err := tokenmanager.NewDPoP(nil)
	if err != nil {
		t.Fatal(err)
	}
	p.TokenType = "DPoP"
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, DPoP: d}, nil)
	return d, rt.Client(), testutil.Record(t, rt)
}

// A DPoP token travels as "DPoP <token>" with a proof per send; the API's
// nonce request is answered by one resend with the same token, which is
// not invalidated, and later requests carry the nonce from the start.
func TestDPoP_apiNonce(t *testing.T) {
	var p testutil.Provider
	d, client, rec := newDPoPRT(t, &p)
	api := newDPoPAPI(t, d.Thumbprint())

	for i := range 3 {
		resp, err := client.Post(api.URL+"/orders?id=7", "text/plain", strings.NewReader("body-"+strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
	}
	if got := api.challenges.Load(); got != 1 {
		t.Errorf("%d nonce challenges; want 1 (later requests know the nonce)", got)
	}
	if p.Calls.Load() != 1 {
		t.Errorf("%d token fetches; want 1: a nonce request does not invalidate the token", p.Calls.Load())
	}
	api.mu.Lock()
	bodies := api.bodies
	api.mu.Unlock()
	if want := []string{"body-0", "body-0", "body-1", "body-2"}; strings.Join(bodies, ",") != strings.Join(want, ",") {
		t.Errorf("bodies %q; want %q (the resend keeps its body)", bodies, want)
	}
	for _, s := range api.seen {
		if s.HTM != "POST" || s.HTU != api.URL+"/orders" || s.Claims["nonce"] == nil {
			t.Errorf("proof htm %q htu %q nonce %q; want POST %s/orders with the nonce", s.HTM, s.HTU, s.Nonce, api.URL)
		}
	}
	testutil.Stays(t, "no AuthFailed", func() bool { return rec.Count("auth_failed") == 0 })
	if ev := testutil.WaitEvents[messages.DPoPNonceRetried](t, rec, 1); ev[0].Attempt != 1 || ev[0].Host != api.Listener.Addr().String() {
		t.Errorf("DPoPNonceRetried = %+v", ev[0])
	}
	if rec.Count("recovery_tried") != 0 {
		t.Errorf("RecoveryTried published for a nonce resend")
	}
}

// Each redirect hop carries a proof of its own method and URL.
func TestDPoP_redirect(t *testing.T) {
	var p testutil.Provider
	d, client, _ := newDPoPRT(t, &p)
	api := newDPoPAPI(t, d.Thumbprint())
	d.SetNonce(api.URL, *api.nonce.Load())

	resp, err := client.Get(api.URL + "/redirect")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	if len(api.seen) != 2 || api.seen[0].HTU != api.URL+"/redirect" || api.seen[1].HTU != api.URL+"/data" || api.seen[0].JTI == api.seen[1].JTI {
		t.Errorf("proofs %+v; want one for /redirect and one for /data", api.seen)
	}
}

// A server that keeps asking for nonces gets MaxNonceResends resends,
// then the caller gets its 401.
func TestDPoP_nonceResendsBounded(t *testing.T) {
	var p testutil.Provider
	d, client, rec := newDPoPRT(t, &p)
	api := newDPoPAPI(t, d.Thumbprint())
	api.always.Store(true)

	resp, err := client.Get(api.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || api.challenges.Load() != 3 || p.Calls.Load() != 1 {
		t.Errorf("status %d after %d challenges, %d fetches; want 401 after 3, 1 fetch", resp.StatusCode, api.challenges.Load(), p.Calls.Load())
	}
	if ev := testutil.WaitEvents[messages.RecoveryAborted](t, rec, 1); !strings.Contains(ev[0].Message, "DPoP nonce") || ev[0].Attempts != 2 {
		t.Errorf("RecoveryAborted = %+v", ev[0])
	}
}

// A token the API refuses (a proof of another key) goes through token
// recovery: invalidated, fetched anew.
func TestDPoP_rejectedTokenRecovers(t *testing.T) {
	var p testutil.Provider
	d, client, rec := newDPoPRT(t, &p)
	api := newDPoPAPI(t, "the key of another client")
	d.SetNonce(api.URL, *api.nonce.Load())

	resp, err := client.Get(api.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || api.challenges.Load() != 0 {
		t.Errorf("status %d, %d challenges; want 401 (refused) without a nonce challenge", resp.StatusCode, api.challenges.Load())
	}
	testutil.WaitEvents[messages.RecoveryTried](t, rec, 1)
	if p.Calls.Load() < 2 {
		t.Errorf("%d fetches; want a fresh token for the recovery", p.Calls.Load())
	}
}

// A DPoP-bound token without a key on the request side fails the request
// unsent, with an error that says why.
func TestDPoP_tokenWithoutKey(t *testing.T) {
	p := testutil.Provider{TokenType: "DPoP"}
	var sent atomic.Int64
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get}, testutil.RoundTripFunc(func(r *http.Request) (*http.Response, error) {
		sent.Add(1)
		return testutil.TextResponse(r, 200, "ok"), nil
	}))
	_, err := rt.Client().Get("https://api.example.com/")
	if err == nil || !strings.Contains(err.Error(), "Settings.DPoP") || sent.Load() != 0 {
		t.Errorf("err %v, %d sent; want a DPoP error and nothing sent", err, sent.Load())
	}
}

// With a DPoP key, a token the server issued as Bearer is sent as one,
// without a proof.
func TestDPoP_bearerTokenStaysBearer(t *testing.T) {
	var p testutil.Provider
	d, _ := tokenmanager.NewDPoP(nil)
	var got http.Header
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, DPoP: d}, testutil.RoundTripFunc(func(r *http.Request) (*http.Response, error) {
		got = r.Header.Clone()
		return testutil.TextResponse(r, 200, "ok"), nil
	}))
	resp, err := rt.Client().Get("https://api.example.com/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got.Get("Authorization") != "Bearer tok-1" || got.Get("DPoP") != "" {
		t.Errorf("headers %v; want a bearer token without a proof", got)
	}
}

// An identity of a MultiRoundTripper with a DPoP key gets proofs and
// nonces as a RoundTripper does; another identity stays bearer.
func TestDPoP_multi(t *testing.T) {
	d, err := tokenmanager.NewDPoP(nil)
	if err != nil {
		t.Fatal(err)
	}
	bound := testutil.Provider{TokenType: "DPoP", Prefix: "bound-"}
	var plain testutil.Provider
	api := newDPoPAPI(t, d.Thumbprint())
	m := testutil.NewMulti(t, tokenmanager.OwnerSettings{SettingsFor: func(id string) (tokenmanager.Settings, error) {
		if id == "bound" {
			return tokenmanager.Settings{GetCredentials: bound.Get, DPoP: d}, nil
		}
		return tokenmanager.Settings{GetCredentials: plain.Get}, nil
	}}, nil)
	rec := testutil.Record(t, m)
	for range 2 {
		req, _ := http.NewRequestWithContext(transport.WithIdentity(context.Background(), "bound"), http.MethodGet, api.URL+"/x", nil)
		resp, err := m.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if api.challenges.Load() != 1 || bound.Calls.Load() != 1 {
		t.Errorf("%d challenges, %d fetches; want 1 and 1", api.challenges.Load(), bound.Calls.Load())
	}
	testutil.WaitEvents[messages.DPoPNonceRetried](t, rec, 1)

	var got http.Header
	m2 := testutil.NewMulti(t, tokenmanager.OwnerSettings{SettingsFor: func(string) (tokenmanager.Settings, error) {
		return tokenmanager.Settings{GetCredentials: plain.Get}, nil
	}}, testutil.RoundTripFunc(func(r *http.Request) (*http.Response, error) {
		got = r.Header.Clone()
		return testutil.TextResponse(r, 200, "ok"), nil
	}))
	req, _ := http.NewRequestWithContext(transport.WithIdentity(context.Background(), "plain"), http.MethodGet, "https://api.example.com/", nil)
	resp, err := m2.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.HasPrefix(got.Get("Authorization"), "Bearer ") || got.Get("DPoP") != "" {
		t.Errorf("bearer identity sent %v", got)
	}
}

// No event, callback message or error carries a proof or the key.
func TestDPoP_noProofInEvents(t *testing.T) {
	var p testutil.Provider
	_, client, rec := newDPoPRT(t, &p)
	api := newDPoPAPI(t, "another key") // every request refused: recovery, aborts
	resp, err := client.Get(api.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	testutil.WaitEvents[messages.RecoveryAborted](t, rec, 1)
	for _, ev := range rec.All() {
		s := fmt.Sprintf("%+v %#v", ev, ev)
		if strings.Contains(s, "eyJ") || strings.Contains(s, "tok-") {
			t.Errorf("event holds a proof or token: %s", s)
		}
	}
}

// Replacing the key: the cached token, bound to the old key, is refused
// once, and recovery fetches a token bound to the new key.
func TestDPoP_keyRotation(t *testing.T) {
	d, err := tokenmanager.NewDPoP(nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	bound := map[string]string{} // token -> the thumbprint when it was issued
	p := testutil.Provider{TokenType: "DPoP", OnIssue: func(tok string) {
		mu.Lock()
		bound[tok] = d.Thumbprint()
		mu.Unlock()
	}}
	client := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, DPoP: d}, nil).Client()
	api := newDPoPAPI(t, "")
	api.boundTo = func(tok string) string { mu.Lock(); defer mu.Unlock(); return bound[tok] }
	d.SetNonce(api.URL, *api.nonce.Load())
	get := func() int {
		resp, err := client.Get(api.URL + "/x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get(); got != 200 {
		t.Fatalf("before rotation: %d", got)
	}
	if err := d.SetKey(nil); err != nil {
		t.Fatal(err)
	}
	if got := get(); got != 200 || p.Calls.Load() != 2 || api.rejects.Load() != 1 {
		t.Errorf("after rotation: %d, %d fetches, %d refused; want 200 after one refusal and a new token", got, p.Calls.Load(), api.rejects.Load())
	}
}
