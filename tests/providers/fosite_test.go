package providers_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	josev3 "github.com/go-jose/go-jose/v3"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/storage"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// fositeServer is a real OAuth 2.0 server, github.com/ory/fosite with
// its in-memory store, on 127.0.0.1: its token endpoint, which
// authenticates clients with private_key_jwt (RFC 7523 §2.2: signature,
// iss, sub, aud = the token URL, single-use jti, exp) and serves the
// client-credentials and JWT bearer grants, and an API that accepts only
// its live access tokens (fosite's introspection).
type fositeServer struct {
	store    *storage.MemoryStore
	provider fosite.OAuth2Provider
	tokenURL string
	api      *httptest.Server
}

func newFosite(t *testing.T) *fositeServer {
	t.Helper()
	f := &fositeServer{store: storage.NewMemoryStore()}
	var ready atomic.Bool
	token := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		ctx := r.Context()
		ar, err := f.provider.NewAccessRequest(ctx, r, &fosite.DefaultSession{})
		if err != nil {
			f.provider.WriteAccessError(ctx, w, ar, err)
			return
		}
		for _, s := range ar.GetRequestedScopes() {
			ar.GrantScope(s)
		}
		resp, err := f.provider.NewAccessResponse(ctx, ar)
		if err != nil {
			f.provider.WriteAccessError(ctx, w, ar, err)
			return
		}
		f.provider.WriteAccessResponse(ctx, w, ar, resp)
	}))
	t.Cleanup(token.Close)
	f.tokenURL = token.URL + "/oauth2/token"
	idTokenKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f.provider = compose.ComposeAllEnabled(&fosite.Config{
		GlobalSecret:                        []byte("a-32-byte-global-secret-for-hmac"),
		TokenURL:                            f.tokenURL,
		AccessTokenLifespan:                 time.Hour,
		GrantTypeJWTBearerCanSkipClientAuth: true, // RFC 7523 §3.1: the assertion authenticates
	}, f.store, idTokenKey)
	ready.Store(true)
	f.api = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := f.check(r.Context(), strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		if !ok {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "hello "+id)
	}))
	t.Cleanup(f.api.Close)
	return f
}

// addClient registers a private_key_jwt client whose public key is pub.
func (f *fositeServer) addClient(id string, pub crypto.PublicKey, kid, alg string) {
	f.store.Clients[id] = &fosite.DefaultOpenIDConnectClient{
		DefaultClient: &fosite.DefaultClient{
			ID:         id,
			GrantTypes: []string{"client_credentials"},
			Scopes:     []string{"invoices:read", "invoices:write"},
		},
		JSONWebKeys:                       &josev3.JSONWebKeySet{Keys: []josev3.JSONWebKey{{Key: pub, KeyID: kid, Algorithm: alg, Use: "sig"}}},
		TokenEndpointAuthMethod:           "private_key_jwt",
		TokenEndpointAuthSigningAlgorithm: alg,
	}
}

// trust lets issuer's assertions about subject, signed with pub, be
// exchanged with the JWT bearer grant.
func (f *fositeServer) trust(issuer, subject string, pub crypto.PublicKey, kid string) {
	f.store.IssuerPublicKeys[issuer] = storage.IssuerPublicKeys{Issuer: issuer, KeysBySub: map[string]storage.SubjectPublicKeys{
		subject: {Subject: subject, Keys: map[string]storage.PublicKeyScopes{
			kid: {Key: &josev3.JSONWebKey{Key: pub, KeyID: kid, Use: "sig"}, Scopes: []string{"invoices:read"}},
		}},
	}}
}

// check reports whether tok is one of the server's live access tokens,
// and its client.
func (f *fositeServer) check(ctx context.Context, tok string) (string, bool) {
	_, ar, err := f.provider.IntrospectToken(ctx, tok, fosite.AccessToken, &fosite.DefaultSession{})
	if err != nil {
		return "", false
	}
	return ar.GetClient().GetID(), true
}

// revoke revokes tok in the server's store.
func (f *fositeServer) revoke(t *testing.T, tok string) {
	t.Helper()
	_, ar, err := f.provider.IntrospectToken(context.Background(), tok, fosite.AccessToken, &fosite.DefaultSession{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.RevokeAccessToken(context.Background(), ar.GetID()); err != nil {
		t.Fatal(err)
	}
}

func privateKeyJWT(t *testing.T, cfg providers.PrivateKeyJWTConfig) providers.ClientAuth {
	t.Helper()
	auth, err := providers.PrivateKeyJWT(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return auth
}

// TestFosite_privateKeyJWT: the client-credentials grant with
// private_key_jwt, RSA and ECDSA, accepted with the right key, refused
// with a wrong one, another audience or a reused jti (permanent errors).
func TestFosite_privateKeyJWT(t *testing.T) {
	f := newFosite(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey := newECKey(t)
	f.addClient("billing-rsa", rsaKey.Public(), "rsa-1", "RS256")
	f.addClient("billing-ec", ecKey.Public(), "ec-1", "ES256")

	for _, tt := range []struct {
		client string
		key    crypto.Signer
		kid    string
	}{{"billing-rsa", rsaKey, "rsa-1"}, {"billing-ec", ecKey, "ec-1"}} {
		t.Run(tt.client, func(t *testing.T) {
			p := providers.ClientCredentialsGrant(providers.GrantConfig{TokenURL: f.tokenURL, Scopes: []string{"invoices:read"},
				Auth: privateKeyJWT(t, providers.PrivateKeyJWTConfig{ClientID: tt.client, Key: tt.key, KeyID: tt.kid})})
			for i := 0; i < 2; i++ { // fosite refuses a jti it has seen: each request needs a new one
				tok, err := p(context.Background())
				if err != nil {
					t.Fatalf("fetch %d: %v", i+1, err)
				}
				if id, ok := f.check(context.Background(), tok.AccessToken); !ok || id != tt.client ||
					tok.Scope != "invoices:read" || tok.ExpiresIn < 3590 {
					t.Errorf("token %v (client %q, live %v); want a live token for %s, scope invoices:read, about 1h", tok, id, ok, tt.client)
				}
			}
		})
	}

	otherKey := newECKey(t)
	replayed := ""
	replay := func(ctx context.Context, r providers.AssertionRequest) (string, error) {
		if replayed == "" {
			sign, err := providers.JWTAssertion(providers.JWTAssertionConfig{Issuer: "billing-ec", Key: ecKey, KeyID: "ec-1"})
			if err != nil {
				return "", err
			}
			replayed, err = sign(ctx, r)
			return replayed, err
		}
		return replayed, nil
	}
	refusals := []struct {
		name string
		auth providers.ClientAuth
		want string
	}{
		{name: "wrong key", auth: privateKeyJWT(t, providers.PrivateKeyJWTConfig{ClientID: "billing-ec", Key: otherKey, KeyID: "ec-1"}),
			want: "invalid_client"},
		{name: "wrong audience", auth: privateKeyJWT(t, providers.PrivateKeyJWTConfig{ClientID: "billing-ec", Key: ecKey, KeyID: "ec-1",
			Audience: "https://issuer.example/"}), want: "invalid_client"},
		{name: "wrong algorithm for the client", auth: privateKeyJWT(t, providers.PrivateKeyJWTConfig{ClientID: "billing-rsa", Key: rsaKey,
			KeyID: "rsa-1", Algorithm: "PS256"}), want: "invalid_client"},
		{name: "reused jti", auth: providers.ClientAssertion("billing-ec", replay), want: "jti_known"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			p := providers.ClientCredentialsGrant(providers.GrantConfig{TokenURL: f.tokenURL, Auth: tt.auth})
			if tt.name == "reused jti" {
				if _, err := p(context.Background()); err != nil {
					t.Fatalf("first use: %v", err)
				}
			}
			_, err := p(context.Background())
			var re *providers.RetrieveError
			if !errors.As(err, &re) || re.ErrorCode != tt.want || !tokenmanager.IsPermanent(err) {
				t.Fatalf("err = %v; want a permanent %s", err, tt.want)
			}
			if replayed != "" && strings.Contains(err.Error(), replayed) {
				t.Errorf("err = %v shows the assertion", err)
			}
		})
	}
}

// TestFosite_jwtBearer: the JWT bearer grant (RFC 7523 §2.1) with a
// self-signed assertion, aud the token URL by default, accepted; one
// signed by an untrusted key refused, permanently.
func TestFosite_jwtBearer(t *testing.T) {
	f := newFosite(t)
	key := newECKey(t)
	f.trust("https://ci.example", "deploy-bot", key.Public(), "ci-1")
	bearer := func(key *ecdsa.PrivateKey) tokenmanager.TokenProvider {
		sign, err := providers.JWTAssertion(providers.JWTAssertionConfig{Issuer: "https://ci.example", Subject: "deploy-bot", Key: key, KeyID: "ci-1"})
		if err != nil {
			t.Fatal(err)
		}
		return providers.JWTBearer(providers.JWTBearerConfig{TokenURL: f.tokenURL, Assertion: sign, Scopes: []string{"invoices:read"}})
	}
	tok, err := bearer(key)(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.check(context.Background(), tok.AccessToken); !ok || tok.Scope != "invoices:read" {
		t.Errorf("token %v (live %v); want a live token with scope invoices:read", tok, ok)
	}
	_, err = bearer(newECKey(t))(context.Background())
	var re *providers.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" || !tokenmanager.IsPermanent(err) {
		t.Errorf("err = %v; want a permanent invalid_grant", err)
	}
}

// TestFosite_transport runs the whole stack: transport.New with the
// client-credentials grant and private_key_jwt against fosite, an API
// that accepts only fosite's live tokens, and a revocation the
// RoundTripper recovers from; no event carries the assertion.
func TestFosite_transport(t *testing.T) {
	f := newFosite(t)
	key := newECKey(t)
	f.addClient("billing-ec", key.Public(), "ec-1", "ES256")
	var mu sync.Mutex
	var sent []string
	var events []messages.Event
	sign, err := providers.JWTAssertion(providers.JWTAssertionConfig{Issuer: "billing-ec", Key: key, KeyID: "ec-1"})
	if err != nil {
		t.Fatal(err)
	}
	auth := providers.ClientAssertion("billing-ec", func(ctx context.Context, r providers.AssertionRequest) (string, error) {
		a, err := sign(ctx, r)
		mu.Lock()
		sent = append(sent, a)
		mu.Unlock()
		return a, err
	})
	rt, err := transport.New(tokenmanager.Settings{GetCredentials: providers.ClientCredentialsGrant(providers.GrantConfig{
		TokenURL: f.tokenURL, Auth: auth, Scopes: []string{"invoices:read"}})})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	defer rt.Subscribe(func(ev messages.Event) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	})()
	get := func() string { t.Helper(); return getOK(t, rt.Client(), f.api.URL+"/invoices") }
	if got := get(); got != "hello billing-ec" {
		t.Errorf("body = %q", got)
	}
	first, err := rt.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.revoke(t, first.AccessToken)
	if got := get(); got != "hello billing-ec" {
		t.Errorf("body after revocation = %q", got)
	}
	second, err := rt.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if second.AccessToken == first.AccessToken {
		t.Error("the token was not replaced after revocation")
	}
	// Wait for the recovery's events, then look at them all.
	names := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var n []string
		for _, ev := range events {
			n = append(n, ev.Name())
		}
		return n
	}
	for deadline := time.Now().Add(5 * time.Second); !slices.Contains(names(), "auth_failed") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, ev := range events {
		text := fmt.Sprintf("%v %+v %#v", ev, ev, ev)
		for _, a := range sent {
			if strings.Contains(text, a) || strings.Contains(text, strings.Split(a, ".")[2]) {
				t.Errorf("event %s shows an assertion", ev.Name())
			}
		}
	}
	if len(sent) < 2 {
		t.Errorf("%d assertions sent; want one per fetch, two at least", len(sent))
	}
}
