package oidcprovider_test

import (
	"context"
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

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/tests/oidcprovider"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

const dpopClient, dpopClientSecret = "dpop-client", "a-dpop-client-secret-long-enough-for-oidc-provider"

// dpopRig is oidc-provider requiring DPoP-bound tokens for dpopClient
// and a nonce in every token request's proof, and an API that checks
// each request as RFC 9449 §7 says: the token is introspected at the
// provider (active, cnf.jkt), the proof must be signed by that key, with
// the request's htm and htu, the token's ath, a jti never seen before and
// the API's own nonce, which rotates every second.
type dpopRig struct {
	s        *oidcprovider.Server
	iss      *providers.Issuer
	api      *httptest.Server
	hc       *http.Client // the API's client for introspection
	tokenReq atomic.Int64 // requests to the token endpoint
	v        testutil.DPoPVerifier

	mu   sync.Mutex
	jkts map[string]string // token -> cnf.jkt, from introspection ("" for a bearer token)

	ok, challenged, refused atomic.Int64
	firstRefusal            atomic.Pointer[string]
}

// apiNonce is the API's nonce: a new one every second.
func apiNonce() string { return "api-" + strconv.FormatInt(time.Now().Unix(), 36) }

func newDPoPRig(t *testing.T) *dpopRig {
	t.Helper()
	r := &dpopRig{jkts: map[string]string{}}
	r.s = oidcprovider.Start(t, oidcprovider.Config{
		RequireDPoPNonce: true,
		Clients: []map[string]any{
			secretClientMetadata(),
			{
				"client_id": dpopClient, "client_secret": dpopClientSecret,
				"token_endpoint_auth_method": "client_secret_basic",
				"dpop_bound_access_tokens":   true,
			},
		},
	})
	r.hc = &http.Client{Transport: &http.Transport{}}
	t.Cleanup(r.hc.CloseIdleConnections)
	iss, err := providers.NewIssuer(providers.IssuerConfig{Issuer: r.s.Issuer, HTTPClient: r.hc})
	if err != nil {
		t.Fatal(err)
	}
	r.iss = iss
	md, err := iss.Metadata(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !contains(md.DPoPSigningAlgValuesSupported, "ES256") {
		t.Fatalf("dpop_signing_alg_values_supported = %v; want ES256", md.DPoPSigningAlgValuesSupported)
	}
	r.v.Nonce = apiNonce
	r.api = httptest.NewServer(http.HandlerFunc(r.serve(md.IntrospectionEndpoint)))
	t.Cleanup(r.api.Close)
	return r
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// provider returns the grant for dpopClient, counting its requests.
func (r *dpopRig) provider() tokenmanager.TokenProvider {
	return providers.ClientCredentialsGrant(providers.GrantConfig{
		Issuer: r.iss,
		Auth:   providers.ClientSecret(dpopClient, dpopClientSecret, providers.AuthStyleInHeader),
		HTTPClient: &http.Client{Transport: testutil.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
			r.tokenReq.Add(1)
			return r.hc.Transport.RoundTrip(req)
		})},
	})
}

// jkt returns the thumbprint tok is bound to ("" for a bearer token), or
// an error when the provider does not know it as active.
func (r *dpopRig) jkt(introspection, tok string) (string, error) {
	r.mu.Lock()
	jkt, ok := r.jkts[tok]
	r.mu.Unlock()
	if ok {
		return jkt, nil
	}
	v, err := introspectToken(r.hc, introspection, tok)
	if err != nil {
		return "", err
	}
	if v["active"] != true {
		return "", errors.New("token not active")
	}
	if cnf, ok := v["cnf"].(map[string]any); ok {
		jkt, _ = cnf["jkt"].(string)
	}
	r.mu.Lock()
	r.jkts[tok] = jkt
	r.mu.Unlock()
	return jkt, nil
}

func (r *dpopRig) serve(introspection string) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		refuse := func(why string) {
			r.refused.Add(1)
			r.firstRefusal.CompareAndSwap(nil, &why)
			w.Header().Set("WWW-Authenticate", `DPoP error="invalid_token", algs="ES256"`)
			http.Error(w, why, http.StatusUnauthorized)
		}
		scheme, tok, _ := strings.Cut(req.Header.Get("Authorization"), " ")
		jkt, err := r.jkt(introspection, tok)
		switch {
		case err != nil:
			refuse(err.Error())
			return
		case jkt == "":
			refuse("the token is not DPoP-bound")
			return
		case !strings.EqualFold(scheme, "DPoP"):
			refuse("a DPoP-bound token sent as " + scheme) // §7.1: a bound token is never a bearer token
			return
		}
		proofs := req.Header.Values("DPoP")
		if len(proofs) != 1 {
			refuse(strconv.Itoa(len(proofs)) + " DPoP headers")
			return
		}
		_, err = r.v.Verify(proofs[0], req.Method, "http://"+req.Host+req.URL.Path, tok, jkt)
		switch {
		case errors.Is(err, testutil.ErrDPoPNonce):
			r.challenged.Add(1)
			w.Header().Set("DPoP-Nonce", apiNonce())
			w.Header().Set("WWW-Authenticate", `DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"`)
			w.WriteHeader(http.StatusUnauthorized)
		case err != nil:
			refuse(err.Error())
		default:
			r.ok.Add(1)
			io.WriteString(w, "ok")
		}
	}
}

func (r *dpopRig) manager(t *testing.T) (*transport.RoundTripper, *tokenmanager.DPoP, *testutil.Recorder) {
	t.Helper()
	d, err := tokenmanager.NewDPoP(nil)
	if err != nil {
		t.Fatal(err)
	}
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: r.provider(), DPoP: d}, base)
	return rt, d, testutil.Record(t, rt)
}

// One DPoP-bound token from oidc-provider, obtained through its nonce
// request, used with a proof on every request, through the API's own
// nonce request.
func TestDPoP_oidcProvider(t *testing.T) {
	r := newDPoPRig(t)
	rt, d, rec := r.manager(t)
	hc := rt.Client()

	for i := range 3 {
		resp, err := hc.Post(r.api.URL+"/orders?page="+strconv.Itoa(i), "text/plain", strings.NewReader("order"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	tok, err := rt.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	v := introspect(t, r.hc, mustMetadata(t, r.iss).IntrospectionEndpoint, tok.AccessToken)
	cnf, _ := v["cnf"].(map[string]any)
	if v["token_type"] != "DPoP" || cnf["jkt"] != d.Thumbprint() || !tokenmanager.IsDPoP(tok) {
		t.Errorf("introspection %v, token type %q; want a DPoP token bound to %s", v, tok.TokenType, d.Thumbprint())
	}
	if got := r.tokenReq.Load(); got != 2 {
		t.Errorf("%d token requests; want 2: the first answered use_dpop_nonce, the second with the nonce", got)
	}
	if r.refused.Load() != 0 {
		t.Errorf("the API refused %d requests; first: %s", r.refused.Load(), *r.firstRefusal.Load())
	}
	retried := rec.Count("dpop_nonce_retried")
	if r.challenged.Load() < 1 || int64(retried) != r.challenged.Load() || rec.Count("recovery_tried") != 0 || rec.Count("auth_failed") != 0 {
		t.Errorf("%d API nonce challenges, %d nonce resends, %d recovery tries, %d auth failures; want one resend per challenge and no recovery",
			r.challenged.Load(), retried, rec.Count("recovery_tried"), rec.Count("auth_failed"))
	}
}

func mustMetadata(t *testing.T, iss *providers.Issuer) providers.Metadata {
	md, err := iss.Metadata(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return md
}

// A DPoP-bound token is useless without its key: sent as a bearer token,
// or with a proof of another key, the API refuses it.
func TestDPoP_stolenToken(t *testing.T) {
	r := newDPoPRig(t)
	rt, d, _ := r.manager(t)
	tok, err := rt.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	thief, err := tokenmanager.NewDPoP(nil)
	if err != nil {
		t.Fatal(err)
	}
	send := func(scheme string, key *tokenmanager.DPoP) int {
		req, _ := http.NewRequest(http.MethodGet, r.api.URL+"/account", nil)
		req.Header.Set("Authorization", scheme+" "+tok.AccessToken)
		if key != nil {
			key.SetNonce(r.api.URL, apiNonce())
			proof, err := key.Proof(req.Method, req.URL.String(), tok.AccessToken)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("DPoP", proof)
		}
		resp, err := r.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := send("Bearer", nil); got != http.StatusUnauthorized {
		t.Errorf("as a bearer token: %d; want 401", got)
	}
	if got := send("DPoP", thief); got != http.StatusUnauthorized {
		t.Errorf("with another key's proof: %d; want 401", got)
	}
	if r.refused.Load() != 2 || r.challenged.Load() != 0 {
		t.Errorf("%d refused, %d nonce challenges; want both refused outright", r.refused.Load(), r.challenged.Load())
	}
	if got := send("DPoP", d); got != http.StatusOK { // the control: with its own key
		t.Errorf("with its own key: %d; want 200", got)
	}
}

// TestDPoP_load runs 8 workers for 5 s through the RoundTripper against
// oidc-provider and the API, whose nonce rotates every second: no
// request fails, each nonce challenge costs one resend, and no challenge
// costs a token.
func TestDPoP_load(t *testing.T) {
	if testing.Short() {
		t.Skip("5 s of load")
	}
	r := newDPoPRig(t)
	rt, _, rec := r.manager(t)
	hc := rt.Client()

	const workers, duration = 8, 5 * time.Second
	_, failed := load(t, workers, duration, func() (*http.Response, error) {
		return hc.Post(r.api.URL+"/orders", "application/json", strings.NewReader(`{"item":1}`))
	})
	rt.Close() // every event delivered
	retried := testutil.EventsOf[messages.DPoPNonceRetried](rec)
	refreshed := testutil.EventsOf[messages.TokenRefreshed](rec)
	t.Logf("DPoP, %d workers x %v: %d requests succeeded, %d failed, %d refused; API nonce challenges %d, nonce resends %d, token requests %d, tokens %d, recovery tries %d",
		workers, duration, r.ok.Load(), failed, r.refused.Load(), r.challenged.Load(), len(retried), r.tokenReq.Load(), len(refreshed), rec.Count("recovery_tried"))
	if failed != 0 || r.refused.Load() != 0 || r.ok.Load() == 0 {
		t.Errorf("%d failed, %d refused, %d succeeded; want 0 failed, 0 refused", failed, r.refused.Load(), r.ok.Load())
	}
	if int64(len(retried)) != r.challenged.Load() || r.challenged.Load() < 4 {
		t.Errorf("%d nonce resends for %d challenges; want one each (and the nonce rotated at least 4 times)", len(retried), r.challenged.Load())
	}
	if len(refreshed) != 1 || rec.Count("recovery_tried") != 0 || rec.Count("auth_failed") != 0 {
		t.Errorf("%d tokens fetched, %d recovery tries, %d auth failures; want 1 token: nonces cost no token", len(refreshed), rec.Count("recovery_tried"), rec.Count("auth_failed"))
	}
}
