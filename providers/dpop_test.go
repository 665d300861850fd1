package providers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/dpopctx"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/users"
)

// dpopAS is a token endpoint that requires DPoP proofs with its nonce
// (RFC 9449 §8) and binds its tokens to the proof's key.
// An empty nonce: the server asks for a new one on every request.
func dpopAS(t *testing.T, nonce string) (*httptest.Server, *atomic.Int64, *atomic.Int64) {
	var requests, challenges atomic.Int64
	v := testutil.DPoPVerifier{Nonce: func() string {
		if nonce == "" {
			return "n" + strconv.FormatInt(requests.Load(), 10)
		}
		return nonce
	}}
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "/token", http.StatusTemporaryRedirect)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		p, err := v.Verify(r.Header.Get("DPoP"), "POST", srv.URL+"/token", "", "")
		switch {
		case err == testutil.ErrDPoPNonce:
			challenges.Add(1)
			w.Header().Set("DPoP-Nonce", v.Nonce())
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": "use_dpop_nonce", "error_description": "Authorization server requires nonce in DPoP proof"})
		case err != nil:
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_dpop_proof", "error_description": err.Error()})
		default:
			json.NewEncoder(w).Encode(map[string]any{"access_token": "bound-to-" + p.JKT, "token_type": "DPoP", "expires_in": 60})
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &requests, &challenges
}

func TestDPoP_tokenRequestNonce(t *testing.T) {
	srv, requests, challenges := dpopAS(t, "as-nonce-1")
	d, err := tokenmanager.NewDPoP(nil)
	if err != nil {
		t.Fatal(err)
	}
	grant := ClientCredentialsGrant(GrantConfig{TokenURL: srv.URL + "/token", Auth: ClientSecret("c", "s", AuthStyleInParams)})
	get := dpopctx.ProviderOf(tokenmanager.Settings{GetCredentials: grant, DPoP: d})

	tok, err := get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "bound-to-"+d.Thumbprint() || !tokenmanager.IsDPoP(tok) {
		t.Errorf("token %+v; want one bound to the key, of type DPoP", tok)
	}
	if requests.Load() != 2 || challenges.Load() != 1 {
		t.Errorf("%d requests, %d challenges; want the nonce request answered by one more request", requests.Load(), challenges.Load())
	}
	// The nonce is kept: the next fetch needs one request.
	if _, err := get(context.Background()); err != nil || requests.Load() != 3 {
		t.Errorf("second fetch: %v after %d requests; want 3", err, requests.Load())
	}
}

// A use_dpop_nonce answer without a DPoP-Nonce header gives nothing to
// send: the request is not sent again.
func TestDPoP_tokenRequestNonceWithoutHeader(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": "use_dpop_nonce"})
	}))
	t.Cleanup(srv.Close)
	d, _ := tokenmanager.NewDPoP(nil)
	get := dpopctx.ProviderOf(tokenmanager.Settings{DPoP: d,
		GetCredentials: ClientCredentialsGrant(GrantConfig{TokenURL: srv.URL + "/token", Auth: ClientSecret("c", "s", AuthStyleInParams)})})
	_, err := get(context.Background())
	var re *RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "use_dpop_nonce" || requests.Load() != 1 {
		t.Errorf("err %v after %d requests; want use_dpop_nonce after 1", err, requests.Load())
	}
}

// A server that asks for a nonce twice in a row fails the fetch: one
// retry per fetch.
func TestDPoP_tokenRequestNonceOnce(t *testing.T) {
	srv, requests, _ := dpopAS(t, "")
	d, _ := tokenmanager.NewDPoP(nil)
	get := dpopctx.ProviderOf(tokenmanager.Settings{DPoP: d,
		GetCredentials: ClientCredentialsGrant(GrantConfig{TokenURL: srv.URL + "/token", Auth: ClientSecret("c", "s", AuthStyleInParams)})})
	_, err := get(context.Background())
	var re *RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "use_dpop_nonce" || requests.Load() != 2 {
		t.Errorf("err %v after %d requests; want use_dpop_nonce after 2", err, requests.Load())
	}
}

// Without a DPoP key, a grant sends no proof.
func TestDPoP_noKeyNoProof(t *testing.T) {
	var proof atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proof.Store(r.Header.Get("DPoP"))
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"access_token":"t","token_type":"Bearer","expires_in":60}`))
	}))
	defer srv.Close()
	_, err := ClientCredentialsGrant(GrantConfig{TokenURL: srv.URL, Auth: ClientSecret("c", "s", AuthStyleInParams)})(context.Background())
	if err != nil || proof.Load() != "" {
		t.Errorf("err %v, DPoP header %q; want none", err, proof.Load())
	}
}

// A redirected token request carries, at each hop, a proof of that hop's
// URL: the endpoint checks htu.
func TestDPoP_tokenRequestRedirect(t *testing.T) {
	srv, requests, challenges := dpopAS(t, "as-nonce")
	d, _ := tokenmanager.NewDPoP(nil)
	get := dpopctx.ProviderOf(tokenmanager.Settings{DPoP: d,
		GetCredentials: ClientCredentialsGrant(GrantConfig{TokenURL: srv.URL + "/moved", Auth: ClientSecret("c", "s", AuthStyleInParams)})})
	tok, err := get(context.Background())
	if err != nil || !tokenmanager.IsDPoP(tok) {
		t.Fatalf("got %+v, %v; want a DPoP token through the redirect", tok, err)
	}
	if requests.Load() != 4 || challenges.Load() != 1 {
		t.Errorf("%d requests, %d challenges; want 4 (two redirected) and 1", requests.Load(), challenges.Load())
	}
}

// TestDPoP_refreshToken: the refresh token grant carries a proof of the
// identity's key; the server's nonce request is answered with one more
// request with the nonce, and the refresh token, not spent by the
// refused request, is sent again and rotated once.
func TestDPoP_refreshToken(t *testing.T) {
	rs := &testutil.RefreshServer{}
	v := testutil.DPoPVerifier{Nonce: func() string { return "as-nonce" }}
	var requests, challenges, proofs atomic.Int64
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.Header.Get("DPoP") != "" {
			proofs.Add(1)
		}
		_, err := v.Verify(r.Header.Get("DPoP"), "POST", srv.URL+"/token", "", "")
		switch {
		case err == testutil.ErrDPoPNonce:
			challenges.Add(1)
			w.Header().Set("DPoP-Nonce", v.Nonce())
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": "use_dpop_nonce"})
		case err != nil:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_dpop_proof"})
		default:
			rs.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	store := testutil.OpenFileStore(t, filepath.Join(t.TempDir(), "tokens.db"))
	keys, err := users.NewKeys("k1", map[string][]byte{"k1": bytes.Repeat([]byte{7}, users.KeySize)})
	if err != nil {
		t.Fatal(err)
	}
	const id = "user=ann"
	if _, err := users.Seed(context.Background(), store, keys, id, rs.Issue()); err != nil {
		t.Fatal(err)
	}
	d, err := tokenmanager.NewDPoP(nil)
	if err != nil {
		t.Fatal(err)
	}
	grant := RefreshToken(RefreshTokenConfig{TokenURL: srv.URL + "/token", Identity: id, Store: store, Keys: keys, Auth: NoClientAuth("app")})
	get := dpopctx.ProviderOf(tokenmanager.Settings{GetCredentials: grant, DPoP: d})
	for i := range 2 {
		if _, err := get(context.Background()); err != nil {
			t.Fatalf("refresh %d: %v", i+1, err)
		}
	}
	if requests.Load() != 3 || challenges.Load() != 1 || proofs.Load() != 3 {
		t.Errorf("%d requests, %d challenges, %d with a proof; want 3, 1, 3", requests.Load(), challenges.Load(), proofs.Load())
	}
	if rs.Refreshes() != 2 || rs.Reuses() != 0 {
		t.Errorf("%d refreshes, %d reuses; want 2, 0", rs.Refreshes(), rs.Reuses())
	}
	if e, err := store.Load(context.Background(), id); err != nil || e.Version != 3 {
		t.Errorf("stored version %d, %v; want 3 (two rotations)", e.Version, err)
	}
}
