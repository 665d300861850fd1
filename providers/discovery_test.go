package providers

import (
	"context"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
)

// fakeIssuer is an authorization server publishing its metadata at
// metaPath, with a token endpoint at tokenPath that records the forms it
// gets.
type fakeIssuer struct {
	srv *httptest.Server

	mu        sync.Mutex
	metaPath  string
	tokenPath string
	issuer    string // the issuer its document names; the server's URL + issuerPath by default
	metaHits  int
	metaFail  bool
	alias     string // mtls_endpoint_aliases.token_endpoint
	forms     []url.Values
}

func newFakeIssuer(t *testing.T, issuerPath string) *fakeIssuer {
	t.Helper()
	f := &fakeIssuer{metaPath: issuerPath + "/.well-known/openid-configuration", tokenPath: "/token", alias: "https://mtls.example/token"}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		switch r.URL.Path {
		case f.metaPath:
			f.metaHits++
			if f.metaFail {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{
				"issuer":                                f.issuer,
				"token_endpoint":                        f.srv.URL + f.tokenPath,
				"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "private_key_jwt", "tls_client_auth"},
				"token_endpoint_auth_signing_alg_values_supported": []string{"ES256"},
				"dpop_signing_alg_values_supported":                []string{"ES256", "EdDSA"},
				"tls_client_certificate_bound_access_tokens":       true,
				"mtls_endpoint_aliases":                            map[string]string{"token_endpoint": f.alias},
			})
		case f.tokenPath:
			r.ParseForm()
			f.forms = append(f.forms, r.PostForm)
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"access_token":"at","token_type":"Bearer","expires_in":60}`))
		default:
			http.NotFound(w, r)
		}
	}))
	f.issuer = f.srv.URL + issuerPath
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeIssuer) set(fn func(f *fakeIssuer)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeIssuer) hits() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.metaHits
}

func (f *fakeIssuer) lastForm() url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.forms) == 0 {
		return nil
	}
	return f.forms[len(f.forms)-1]
}

func mustIssuer(t *testing.T, cfg IssuerConfig) *Issuer {
	t.Helper()
	i, err := NewIssuer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func TestIssuer_Metadata(t *testing.T) {
	f := newFakeIssuer(t, "")
	md, err := mustIssuer(t, IssuerConfig{Issuer: f.issuer}).Metadata(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if md.Issuer != f.issuer || md.TokenEndpoint != f.srv.URL+"/token" ||
		md.MTLSEndpointAliases.TokenEndpoint != "https://mtls.example/token" ||
		strings.Join(md.TokenEndpointAuthMethodsSupported, " ") != "client_secret_basic private_key_jwt tls_client_auth" ||
		strings.Join(md.TokenEndpointAuthSigningAlgValuesSupported, " ") != "ES256" ||
		strings.Join(md.DPoPSigningAlgValuesSupported, " ") != "ES256 EdDSA" ||
		!md.TLSClientCertificateBoundAccessTokens {
		t.Errorf("Metadata() = %+v; want the document's fields", md)
	}
}

// TestIssuer_rfc8414Location checks that an issuer with a path whose
// OpenID Connect location is not found is looked up where RFC 8414 §3.1
// puts it: the well-known path between host and path.
func TestIssuer_rfc8414Location(t *testing.T) {
	f := newFakeIssuer(t, "/tenant/a")
	f.set(func(f *fakeIssuer) { f.metaPath = "/.well-known/oauth-authorization-server/tenant/a" })
	md, err := mustIssuer(t, IssuerConfig{Issuer: f.issuer}).Metadata(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if md.Issuer != f.issuer {
		t.Errorf("Issuer = %q; want %q", md.Issuer, f.issuer)
	}
}

// TestIssuer_issuerMismatch checks RFC 8414 §3.3: a document naming
// another issuer is refused, permanently, and no token request is made.
func TestIssuer_issuerMismatch(t *testing.T) {
	f := newFakeIssuer(t, "")
	f.set(func(f *fakeIssuer) { f.issuer = "https://evil.example" })
	iss := mustIssuer(t, IssuerConfig{Issuer: f.srv.URL})
	_, err := ClientCredentialsGrant(GrantConfig{Issuer: iss, Auth: ClientSecret("c", "s", AuthStyleInParams)})(context.Background())
	if err == nil || !strings.Contains(err.Error(), `the metadata is for issuer "https://evil.example"`) || !tokenmanager.IsPermanent(err) {
		t.Fatalf("err = %v; want a permanent issuer mismatch", err)
	}
	if f.lastForm() != nil {
		t.Error("a token request was made with a mismatched issuer's metadata")
	}
}

func TestIssuerConfig_Validate(t *testing.T) {
	tests := []struct {
		cfg      IssuerConfig
		want     string // "" for none
		insecure bool
	}{
		{cfg: IssuerConfig{Issuer: "https://idp.example"}},
		{cfg: IssuerConfig{Issuer: "http://127.0.0.1:8080"}},
		{cfg: IssuerConfig{Issuer: "http://idp.example", AllowInsecureHTTP: true}},
		{cfg: IssuerConfig{Issuer: "http://idp.example"}, want: "plain http", insecure: true},
		{cfg: IssuerConfig{}, want: "Issuer is empty"},
		{cfg: IssuerConfig{Issuer: "https://idp.example?x=1"}, want: "query"},
		{cfg: IssuerConfig{Issuer: "idp.example"}, want: "absolute https URL"},
		{cfg: IssuerConfig{Issuer: "https://idp.example", MaxAge: -time.Second}, want: "MaxAge"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if tt.want == "" {
			if err != nil {
				t.Errorf("%+v: Validate() = %v; want nil", tt.cfg, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) || errors.Is(err, tokenmanager.ErrInsecureTransport) != tt.insecure {
			t.Errorf("%+v: Validate() = %v; want %q (ErrInsecureTransport %v)", tt.cfg, err, tt.want, tt.insecure)
		}
	}
}

// TestIssuer_discoveredEndpointInClearText checks that metadata naming a
// plain-http token endpoint off loopback is refused.
func TestIssuer_discoveredEndpointInClearText(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": "http://" + r.Host, "token_endpoint": "http://idp.example/token"})
	}))
	defer srv.Close()
	_, err := mustIssuer(t, IssuerConfig{Issuer: srv.URL}).Metadata(context.Background())
	if !errors.Is(err, tokenmanager.ErrInsecureTransport) || !tokenmanager.IsPermanent(err) {
		t.Fatalf("err = %v; want a permanent ErrInsecureTransport", err)
	}
}

// TestIssuer_cache checks that the metadata is fetched once, again after
// MaxAge, and that a failed refresh keeps the copy.
func TestIssuer_cache(t *testing.T) {
	f := newFakeIssuer(t, "")
	clk := clock.NewMock()
	iss := mustIssuer(t, IssuerConfig{Issuer: f.issuer, MaxAge: time.Hour, Clock: clk})
	p := ClientCredentialsGrant(GrantConfig{Issuer: iss, Auth: ClientSecret("c", "s", AuthStyleInParams)})
	for range 3 {
		if _, err := p(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.hits(); got != 1 {
		t.Fatalf("metadata fetched %d times for 3 tokens; want 1", got)
	}
	clk.Add(59 * time.Minute)
	p(context.Background())
	if got := f.hits(); got != 1 {
		t.Fatalf("metadata fetched %d times before MaxAge; want 1", got)
	}
	clk.Add(time.Minute)
	if _, err := p(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.hits(); got != 2 {
		t.Fatalf("metadata fetched %d times after MaxAge; want 2", got)
	}

	f.set(func(f *fakeIssuer) { f.metaFail = true })
	clk.Add(time.Hour)
	if _, err := p(context.Background()); err != nil {
		t.Fatalf("with the metadata endpoint down and a copy kept: %v; want the copy used", err)
	}
	if got := f.hits(); got != 3 {
		t.Fatalf("metadata fetched %d times; want a third attempt", got)
	}
}

// TestIssuer_refreshOnFailure checks that a token endpoint that moved
// (404) makes the next token request fetch the metadata again and use
// the new endpoint.
func TestIssuer_refreshOnFailure(t *testing.T) {
	f := newFakeIssuer(t, "")
	iss := mustIssuer(t, IssuerConfig{Issuer: f.issuer, Clock: clock.NewMock()})
	p := ClientCredentialsGrant(GrantConfig{Issuer: iss, Auth: ClientSecret("c", "s", AuthStyleInParams)})
	if _, err := p(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.set(func(f *fakeIssuer) { f.tokenPath = "/v2/token" }) // the old path now answers 404
	if _, err := p(context.Background()); err == nil {
		t.Fatal("the moved endpoint answered; want a 404")
	}
	if _, err := p(context.Background()); err != nil {
		t.Fatalf("after the endpoint moved: %v; want the new metadata used", err)
	}
	if got := f.hits(); got != 2 {
		t.Errorf("metadata fetched %d times; want 2 (once more after the 404)", got)
	}
}

// TestGrants_issuerAlone checks that an Issuer alone is enough for every
// grant, and that assertions get the issuer for IssuerAudience and the
// token endpoint otherwise.
func TestGrants_issuerAlone(t *testing.T) {
	f := newFakeIssuer(t, "/realm")
	iss := mustIssuer(t, IssuerConfig{Issuer: f.issuer})
	key := mustEC(elliptic.P256())
	assertion := func(t *testing.T, issuerAud bool) AssertionFunc {
		a, err := JWTAssertion(JWTAssertionConfig{Issuer: "svc", Key: key, IssuerAudience: issuerAud})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	pkjwt := func(t *testing.T, issuerAud bool) ClientAuth {
		a, err := PrivateKeyJWT(PrivateKeyJWTConfig{ClientID: "svc", Key: key, IssuerAudience: issuerAud})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	tests := []struct {
		name    string
		p       func(t *testing.T) tokenmanager.TokenProvider
		field   string // the form field holding an assertion, if any
		wantAud string
	}{
		{"client credentials, secret", func(t *testing.T) tokenmanager.TokenProvider {
			return ClientCredentials(ClientCredentialsConfig{Issuer: iss, ClientID: "svc", ClientSecret: "s", AuthStyle: AuthStyleInParams})
		}, "", ""},
		{"client credentials, private_key_jwt", func(t *testing.T) tokenmanager.TokenProvider {
			return ClientCredentialsGrant(GrantConfig{Issuer: iss, Auth: pkjwt(t, false)})
		}, "client_assertion", f.srv.URL + "/token"},
		{"client credentials, private_key_jwt, issuer audience", func(t *testing.T) tokenmanager.TokenProvider {
			return ClientCredentialsGrant(GrantConfig{Issuer: iss, Auth: pkjwt(t, true)})
		}, "client_assertion", f.issuer},
		{"JWT bearer", func(t *testing.T) tokenmanager.TokenProvider {
			return JWTBearer(JWTBearerConfig{Issuer: iss, Assertion: assertion(t, false)})
		}, "assertion", f.srv.URL + "/token"},
		{"JWT bearer, issuer audience", func(t *testing.T) tokenmanager.TokenProvider {
			return JWTBearer(JWTBearerConfig{Issuer: iss, Assertion: assertion(t, true)})
		}, "assertion", f.issuer},
		{"token exchange", func(t *testing.T) tokenmanager.TokenProvider {
			return TokenExchange(TokenExchangeConfig{Issuer: iss, SubjectToken: staticToken("subject"), SubjectTokenType: TokenTypeJWT})
		}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := tt.p(t)(context.Background())
			if err != nil || tok.AccessToken != "at" {
				t.Fatalf("got %v, %v; want the token", tok, err)
			}
			if tt.field == "" {
				return
			}
			_, _, claims := verifyAssertion(t, f.lastForm().Get(tt.field), key.Public())
			if len(claims.Audience) != 1 || claims.Audience[0] != tt.wantAud {
				t.Errorf("aud = %v; want [%s]", claims.Audience, tt.wantAud)
			}
		})
	}
}

func TestIssuerAudience_needsAnIssuer(t *testing.T) {
	srv, _ := tokenServer(t, okToken)
	auth, err := PrivateKeyJWT(PrivateKeyJWTConfig{ClientID: "svc", Key: mustEC(elliptic.P256()), IssuerAudience: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ClientCredentialsGrant(GrantConfig{TokenURL: srv.URL, Auth: auth})(context.Background())
	if err == nil || !strings.Contains(err.Error(), "IssuerAudience is set and the grant has no Issuer") || !tokenmanager.IsPermanent(err) {
		t.Fatalf("err = %v; want a permanent error naming IssuerAudience", err)
	}
	if _, err := PrivateKeyJWT(PrivateKeyJWTConfig{ClientID: "svc", Key: mustEC(elliptic.P256()), IssuerAudience: true, Audience: "x"}); err == nil ||
		!strings.Contains(err.Error(), "Audience and IssuerAudience are both set") {
		t.Errorf("PrivateKeyJWT with Audience and IssuerAudience: err = %v; want refused", err)
	}
}

func TestGrants_TokenURLAndIssuer(t *testing.T) {
	iss := mustIssuer(t, IssuerConfig{Issuer: "https://idp.example"})
	for _, err := range []error{
		GrantConfig{TokenURL: "https://idp.example/token", Issuer: iss, Auth: ClientSecret("c", "s", 0)}.Validate(),
		ClientCredentialsConfig{TokenURL: "https://idp.example/token", Issuer: iss, ClientID: "c"}.Validate(),
		JWTBearerConfig{TokenURL: "https://idp.example/token", Issuer: iss, Assertion: staticAssertion("a")}.Validate(),
		TokenExchangeConfig{TokenURL: "https://idp.example/token", Issuer: iss, SubjectToken: staticToken("s"), SubjectTokenType: TokenTypeJWT}.Validate(),
	} {
		if err == nil || !strings.Contains(err.Error(), "TokenURL and Issuer are both set") {
			t.Errorf("Validate() = %v; want TokenURL and Issuer refused together", err)
		}
	}
}
