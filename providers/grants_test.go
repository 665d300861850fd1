package providers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
)

func staticToken(tok string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return tok, nil }
}

func staticAssertion(tok string) AssertionFunc {
	return func(context.Context, AssertionRequest) (string, error) { return tok, nil }
}

// TestJWTBearer_request pins the JWT bearer grant's request (RFC 7523
// §2.1), with and without client authentication.
func TestJWTBearer_request(t *testing.T) {
	t.Run("callback, no client auth", func(t *testing.T) {
		srv, rec := tokenServer(t, okToken)
		var got AssertionRequest
		p := JWTBearer(JWTBearerConfig{TokenURL: srv.URL, Scopes: []string{"a", "b"},
			EndpointParams: url.Values{"audience": {"x"}},
			Assertion: func(_ context.Context, r AssertionRequest) (string, error) {
				got = r
				return "signed.by.someone", nil
			}})
		r := fetchGrant(t, p, rec)
		want := url.Values{"grant_type": {grantTypeJWTBearer}, "assertion": {"signed.by.someone"}, "scope": {"a b"}, "audience": {"x"}}
		if r.form.Encode() != want.Encode() || r.header.Get("Authorization") != "" {
			t.Errorf("form = %v, Authorization %q; want %v and none", r.form, r.header.Get("Authorization"), want)
		}
		if got != (AssertionRequest{TokenURL: srv.URL}) {
			t.Errorf("callback got %+v", got)
		}
	})
	t.Run("client secret too", func(t *testing.T) {
		srv, rec := tokenServer(t, okToken)
		p := JWTBearer(JWTBearerConfig{TokenURL: srv.URL, Assertion: staticAssertion("a.b.c"),
			Auth: ClientSecret("c", "s", AuthStyleInHeader)})
		r := fetchGrant(t, p, rec)
		if !strings.HasPrefix(r.header.Get("Authorization"), "Basic ") || r.form.Get("assertion") != "a.b.c" {
			t.Errorf("form = %v, Authorization %q", r.form, r.header.Get("Authorization"))
		}
	})
	t.Run("self-signed", func(t *testing.T) {
		srv, rec := tokenServer(t, okToken)
		sign, err := JWTAssertion(JWTAssertionConfig{Issuer: "svc@project.iam", Key: testECKey(), KeyID: "k9",
			Claims: map[string]any{"scope": "https://www.googleapis.com/auth/cloud-platform"}, Lifetime: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		p := JWTBearer(JWTBearerConfig{TokenURL: srv.URL, Assertion: sign})
		r1, r2 := fetchGrant(t, p, rec), fetchGrant(t, p, rec)
		hdr, all, c := verifyAssertion(t, r1.form.Get("assertion"), testECKey().Public())
		if hdr.KeyID != "k9" || hdr.Algorithm != "ES256" {
			t.Errorf("header kid %q alg %q", hdr.KeyID, hdr.Algorithm)
		}
		if c.Issuer != "svc@project.iam" || c.Subject != "svc@project.iam" || all["aud"] != srv.URL ||
			all["scope"] != "https://www.googleapis.com/auth/cloud-platform" {
			t.Errorf("claims = %v; want iss = sub, aud the token URL, the extra scope", all)
		}
		if got := c.Expiry.Time().Sub(c.IssuedAt.Time()); got != time.Hour {
			t.Errorf("lifetime = %v; want 1h", got)
		}
		_, _, c2 := verifyAssertion(t, r2.form.Get("assertion"), testECKey().Public())
		if c2.ID == c.ID {
			t.Error("two requests share a jti")
		}
	})
}

// TestJWTAssertion_config pins JWTAssertion's checks.
func TestJWTAssertion_config(t *testing.T) {
	_, err := JWTAssertion(JWTAssertionConfig{Key: testECKey(), Claims: map[string]any{"aud": "x", "jti": "y", "scope": "ok"}})
	for _, w := range []string{"Issuer is empty", `Claims sets "aud"`, `Claims sets "jti"`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("err = %v; want %q", err, w)
		}
	}
	if err != nil && strings.Contains(err.Error(), "scope") {
		t.Errorf("err = %v; scope is allowed", err)
	}
	sign, err := JWTAssertion(JWTAssertionConfig{Issuer: "i", Subject: "s", Audience: "https://aud.example", Key: testECKey()})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sign(context.Background(), AssertionRequest{TokenURL: "https://ignored.example/token"})
	if err != nil {
		t.Fatal(err)
	}
	if _, all, _ := verifyAssertion(t, tok, testECKey().Public()); all["sub"] != "s" || all["aud"] != "https://aud.example" {
		t.Errorf("claims = %v; want sub s, aud https://aud.example", all)
	}
}

// TestTokenExchange_request pins the token exchange request (RFC 8693
// §2.1): every parameter, repeated audience and resource, and the
// client's own authentication beside the subject token.
func TestTokenExchange_request(t *testing.T) {
	srv, rec := tokenServer(t, okToken)
	auth, err := PrivateKeyJWT(PrivateKeyJWTConfig{ClientID: "gateway", Key: testECKey()})
	if err != nil {
		t.Fatal(err)
	}
	p := TokenExchange(TokenExchangeConfig{
		TokenURL:           srv.URL,
		Auth:               auth,
		SubjectToken:       staticToken("subject+token/=="),
		SubjectTokenType:   TokenTypeJWT,
		ActorToken:         staticToken("actor-token"),
		ActorTokenType:     TokenTypeAccessToken,
		RequestedTokenType: TokenTypeAccessToken,
		Audience:           []string{"orders", "billing"},
		Resource:           []string{"https://orders.example/api", "https://billing.example/"},
		Scopes:             []string{"orders:read"},
	})
	r := fetchGrant(t, p, rec)
	want := map[string][]string{
		"grant_type":            {grantTypeTokenExchange},
		"subject_token":         {"subject+token/=="},
		"subject_token_type":    {TokenTypeJWT},
		"actor_token":           {"actor-token"},
		"actor_token_type":      {TokenTypeAccessToken},
		"requested_token_type":  {TokenTypeAccessToken},
		"audience":              {"orders", "billing"},
		"resource":              {"https://orders.example/api", "https://billing.example/"},
		"scope":                 {"orders:read"},
		"client_id":             {"gateway"},
		"client_assertion_type": {clientAssertionType},
	}
	for k, v := range want {
		if fmt.Sprint(r.form[k]) != fmt.Sprint(v) {
			t.Errorf("%s = %q; want %q", k, r.form[k], v)
		}
	}
	if _, _, c := verifyAssertion(t, r.form.Get("client_assertion"), testECKey().Public()); c.Subject != "gateway" {
		t.Errorf("client assertion sub = %q", c.Subject)
	}
	if len(r.form) != len(want)+1 {
		t.Errorf("form = %v; want only %v and client_assertion", r.form, want)
	}

	t.Run("minimal", func(t *testing.T) {
		srv, rec := tokenServer(t, okToken)
		r := fetchGrant(t, TokenExchange(TokenExchangeConfig{TokenURL: srv.URL, SubjectToken: staticToken("s"),
			SubjectTokenType: TokenTypeAccessToken}), rec)
		want := url.Values{"grant_type": {grantTypeTokenExchange}, "subject_token": {"s"}, "subject_token_type": {TokenTypeAccessToken}}
		if r.form.Encode() != want.Encode() {
			t.Errorf("form = %v; want %v", r.form, want)
		}
	})
	t.Run("token function errors", func(t *testing.T) {
		errNoFile := errors.New("open /var/run/secrets/tokens/token: no such file")
		srv, rec := tokenServer(t, okToken)
		_, err := TokenExchange(TokenExchangeConfig{TokenURL: srv.URL, SubjectTokenType: TokenTypeJWT,
			SubjectToken: func(context.Context) (string, error) { return "", errNoFile }})(context.Background())
		if !errors.Is(err, errNoFile) || tokenmanager.IsPermanent(err) || !strings.Contains(err.Error(), "getting the subject token") {
			t.Errorf("err = %v; want a temporary error wrapping the function's", err)
		}
		_, err = TokenExchange(TokenExchangeConfig{TokenURL: srv.URL, SubjectTokenType: TokenTypeJWT, SubjectToken: staticToken("s"),
			ActorTokenType: TokenTypeJWT, ActorToken: staticToken("")})(context.Background())
		if err == nil || !strings.Contains(err.Error(), "the actor token is empty") {
			t.Errorf("err = %v; want the actor token is empty", err)
		}
		if n := len(rec.all()); n != 0 {
			t.Errorf("%d requests; want none", n)
		}
	})
}

// TestNewGrants_Validate pins the problems each new config reports, all
// at once, and that the provider returns them, permanent, without a
// request.
func TestNewGrants_Validate(t *testing.T) {
	tok, assert := staticToken("t"), staticAssertion("a")
	tests := []struct {
		name     string
		validate func() error
		provider tokenmanager.TokenProvider
		want     []string
	}{
		{name: "GrantConfig valid", validate: GrantConfig{TokenURL: "https://idp.example/t", Auth: ClientSecret("c", "s", AuthStyleInParams)}.Validate},
		{name: "GrantConfig public client", validate: GrantConfig{TokenURL: "https://idp.example/t", Auth: NoClientAuth("c")}.Validate,
			provider: ClientCredentialsGrant(GrantConfig{TokenURL: "https://idp.example/t", Auth: NoClientAuth("c")}),
			want:     []string{"Auth is NoClientAuth", "only for confidential clients (RFC 6749 §4.4)", "use ClientSecret, PrivateKeyJWT, ClientAssertion or TLSClientAuth"}},
		{name: "GrantConfig empty", validate: GrantConfig{}.Validate, provider: ClientCredentialsGrant(GrantConfig{}),
			want: []string{"TokenURL is empty", "Auth is nil"}},
		{name: "GrantConfig bad auth", validate: GrantConfig{TokenURL: "https://idp.example/t", Auth: ClientSecret("", "s", 9)}.Validate,
			want: []string{"ClientSecret's client ID is empty", "ClientSecret's style is AuthStyle(9)"}},
		{name: "GrantConfig nil assertion", validate: GrantConfig{TokenURL: "https://idp.example/t", Auth: ClientAssertion("c", nil)}.Validate,
			want: []string{"ClientAssertion's function is nil"}},
		{name: "GrantConfig public client without id", validate: GrantConfig{TokenURL: "https://idp.example/t", Auth: NoClientAuth("")}.Validate,
			want: []string{"NoClientAuth's client ID is empty"}},
		{name: "GrantConfig params", validate: GrantConfig{TokenURL: "https://idp.example/t", Auth: ClientSecret("c", "s", AuthStyleInParams), Scopes: []string{"a"},
			EndpointParams: url.Values{"client_assertion": {"x"}, "client_secret": {"y"}, "scope": {"b"}}}.Validate,
			want: []string{`EndpointParams sets "client_secret"; use Auth instead`, `EndpointParams sets "client_assertion"; use Auth instead`,
				`EndpointParams sets "scope" and Scopes is set too`}},
		{name: "JWTBearer valid", validate: JWTBearerConfig{TokenURL: "http://127.0.0.1:1/t", Assertion: assert}.Validate},
		{name: "JWTBearer empty", validate: JWTBearerConfig{}.Validate, provider: JWTBearer(JWTBearerConfig{}),
			want: []string{"TokenURL is empty", "Assertion is nil"}},
		{name: "JWTBearer params", validate: JWTBearerConfig{TokenURL: "https://idp.example/t", Assertion: assert,
			EndpointParams: url.Values{"assertion": {"x"}, "client_id": {"y"}}}.Validate,
			want: []string{`EndpointParams sets "assertion"; use Assertion instead`, `EndpointParams sets "client_id"; use Auth instead`}},
		{name: "TokenExchange valid", validate: TokenExchangeConfig{TokenURL: "https://idp.example/t", SubjectToken: tok, SubjectTokenType: TokenTypeJWT}.Validate},
		{name: "TokenExchange empty", validate: TokenExchangeConfig{}.Validate, provider: TokenExchange(TokenExchangeConfig{}),
			want: []string{"TokenURL is empty", "SubjectToken is nil", "SubjectTokenType is empty"}},
		{name: "TokenExchange actor", validate: TokenExchangeConfig{TokenURL: "https://idp.example/t", SubjectToken: tok,
			SubjectTokenType: TokenTypeJWT, ActorToken: tok}.Validate, want: []string{"ActorToken is set and ActorTokenType is empty"}},
		{name: "TokenExchange actor type", validate: TokenExchangeConfig{TokenURL: "https://idp.example/t", SubjectToken: tok,
			SubjectTokenType: TokenTypeJWT, ActorTokenType: TokenTypeJWT}.Validate, want: []string{"ActorTokenType is set and ActorToken is nil"}},
		{name: "TokenExchange resource", validate: TokenExchangeConfig{TokenURL: "https://idp.example/t", SubjectToken: tok,
			SubjectTokenType: TokenTypeJWT, Resource: []string{"orders", "https://x.example/#frag"}}.Validate,
			want: []string{`Resource "orders" is not an absolute URI`, `Resource "https://x.example/#frag" is not an absolute URI`}},
		{name: "TokenExchange params", validate: TokenExchangeConfig{TokenURL: "https://idp.example/t", SubjectToken: tok,
			SubjectTokenType: TokenTypeJWT, Audience: []string{"a"}, EndpointParams: url.Values{"subject_token": {"x"}, "audience": {"b"},
				"requested_token_type": {"c"}, "resource": {"https://r.example"}}}.Validate,
			want: []string{`"subject_token"; use SubjectToken instead`, `"audience"; use Audience instead`,
				`"requested_token_type"; use RequestedTokenType instead`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.validate()
			if tt.want == nil {
				if err != nil {
					t.Errorf("Validate() = %v; want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil; want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q; want it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), `"resource"`) {
				t.Errorf("Validate() = %q; resource in EndpointParams is fine without Resource", err)
			}
			if tt.provider != nil {
				_, perr := tt.provider(context.Background())
				if perr == nil || perr.Error() != err.Error() || !tokenmanager.IsPermanent(perr) {
					t.Errorf("provider error = %v; want %v, permanent", perr, err)
				}
			}
		})
	}
}

// grantCase builds one of the new grants against a token URL, for tests
// that every grant must pass. secrets are the values it sends that must
// never show in an error.
type grantCase struct {
	name    string
	make    func(tokenURL string, hc *http.Client, allowInsecure bool) *endpoint
	secrets []string
}

func newGrantCases(t *testing.T) []grantCase {
	t.Helper()
	const clientAssertion, assertion = "client.assertion+/=value", "jwt.bearer.assertion-value"
	const subject, actor = "subject+token/value==", "actor%token value"
	return []grantCase{
		{name: "client credentials, client assertion", secrets: []string{clientAssertion},
			make: func(u string, hc *http.Client, allow bool) *endpoint {
				return newClientCredentialsGrant(GrantConfig{TokenURL: u, Auth: ClientAssertion("c", staticAssertion(clientAssertion)),
					HTTPClient: hc, AllowInsecureHTTP: allow})
			}},
		{name: "JWT bearer", secrets: []string{assertion},
			make: func(u string, hc *http.Client, allow bool) *endpoint {
				return newJWTBearer(JWTBearerConfig{TokenURL: u, Assertion: staticAssertion(assertion), HTTPClient: hc, AllowInsecureHTTP: allow})
			}},
		{name: "token exchange", secrets: []string{subject, actor, clientAssertion},
			make: func(u string, hc *http.Client, allow bool) *endpoint {
				return newTokenExchange(TokenExchangeConfig{TokenURL: u, SubjectToken: staticToken(subject), SubjectTokenType: TokenTypeJWT,
					ActorToken: staticToken(actor), ActorTokenType: TokenTypeJWT, Auth: ClientAssertion("c", staticAssertion(clientAssertion)),
					HTTPClient: hc, AllowInsecureHTTP: allow})
			}},
	}
}

// TestNewGrants_responses pins that every grant handles answers as
// ClientCredentials does: expires_in as a string, form answers, the JWT
// exp fallback and expired-on-arrival, Retry-After, bounded bodies and
// typed, permanent or temporary, RetrieveErrors.
func TestNewGrants_responses(t *testing.T) {
	now := fixedNow.Unix()
	tests := []struct {
		name      string
		status    int
		ctype     string
		body      string
		header    map[string]string
		want      tokenmanager.Token
		wantErr   string // substring
		wantIs    error
		permanent bool
		retry     time.Duration
	}{
		{name: "string expires_in", status: 200, ctype: "application/json",
			body: `{"access_token":"t","token_type":"Bearer","expires_in":"3600","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}`,
			want: tokenmanager.Token{AccessToken: "t", TokenType: "Bearer", ExpiresIn: 3600}},
		{name: "form answer", status: 200, ctype: "application/x-www-form-urlencoded", body: "access_token=t&token_type=N_A&expires_in=60",
			want: tokenmanager.Token{AccessToken: "t", TokenType: "N_A", ExpiresIn: 60}},
		{name: "JWT exp", status: 200, ctype: "application/json", body: fmt.Sprintf(`{"access_token":%q}`, jwtWith(fmt.Sprintf(`{"exp":%d}`, now+120))),
			want: tokenmanager.Token{AccessToken: jwtWith(fmt.Sprintf(`{"exp":%d}`, now+120)), ExpiresIn: 120}},
		{name: "expired on arrival", status: 200, ctype: "application/json", body: fmt.Sprintf(`{"access_token":%q}`, jwtWith(fmt.Sprintf(`{"exp":%d}`, now-5))),
			wantIs: tokenmanager.ErrExpiredOnArrival, wantErr: "passed 5s ago"},
		{name: "invalid_grant", status: 400, ctype: "application/json", body: `{"error":"invalid_grant","error_description":"assertion expired"}`,
			wantErr: "400 Bad Request: invalid_grant: assertion expired", permanent: true},
		{name: "Retry-After", status: 503, header: map[string]string{"Retry-After": "30"}, wantErr: "503", retry: 30 * time.Second},
		{name: "huge body", status: 200, ctype: "application/json", body: `{"access_token":"` + strings.Repeat("x", maxResponseBody) + `"}`,
			wantErr: "answered 200 with more than 1048576 bytes: token response too large", wantIs: ErrResponseTooLarge, permanent: true},
		{name: "huge error body", status: 502, body: strings.Repeat("x", 3*maxResponseBody), wantErr: "502"},
		{name: "bad expires_in", status: 200, ctype: "application/json", body: `{"access_token":"t","expires_in":"soon"}`,
			wantErr: "expires_in", permanent: true},
		{name: "not JSON", status: 200, ctype: "application/json", body: "<html>proxy error</html>",
			wantErr: "decoding token response"},
	}
	for _, g := range newGrantCases(t) {
		for _, tt := range tests {
			t.Run(g.name+"/"+tt.name, func(t *testing.T) {
				srv, _ := tokenServer(t, func(w http.ResponseWriter, r *http.Request) {
					for k, v := range tt.header {
						w.Header().Set(k, v)
					}
					if tt.ctype != "" {
						w.Header().Set("Content-Type", tt.ctype)
					}
					w.WriteHeader(tt.status)
					io.WriteString(w, tt.body)
				})
				e := g.make(srv.URL, nil, false)
				e.now = func() time.Time { return fixedNow }
				tok, err := e.fetch(context.Background())
				if tt.wantErr == "" {
					if err != nil || tok != tt.want {
						t.Fatalf("got %v, %v; want %v", tok, err, tt.want)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v; want %q", err, tt.wantErr)
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("err = %v; want it to wrap %v", err, tt.wantIs)
				}
				if tokenmanager.IsPermanent(err) != tt.permanent {
					t.Errorf("IsPermanent(%v) = %v; want %v", err, !tt.permanent, tt.permanent)
				}
				var re *RetrieveError
				if tt.retry > 0 && (!errors.As(err, &re) || re.RetryAfter() != tt.retry) {
					t.Errorf("err = %v; want a RetrieveError with RetryAfter %v", err, tt.retry)
				}
			})
		}
	}
}

// TestNewGrants_secretsNeverInErrors checks that a server echoing the
// whole request (body and headers) in its error answer gets every
// assertion and token of the request shown as [redacted], in every error
// field and for every status.
func TestNewGrants_secretsNeverInErrors(t *testing.T) {
	echo := func(status int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			form, _ := url.ParseQuery(string(body))
			var raw []string
			for _, k := range []string{"client_assertion", "assertion", "subject_token", "actor_token"} {
				if v := form.Get(k); v != "" {
					raw = append(raw, v)
				}
			}
			var escaped []string
			for _, v := range raw {
				escaped = append(escaped, url.QueryEscape(v), url.PathEscape(v))
			}
			writeJSON(w, status, map[string]string{
				"error":             "invalid_grant " + strings.Join(raw, " "),
				"error_description": "got body " + string(body) + " raw " + strings.Join(raw, ",") + " auth " + r.Header.Get("Authorization"),
				"error_uri":         "https://idp.example/?q=" + strings.Join(escaped, "&q=") + "&r=" + strings.Join(raw, "&r="),
			})
		}
	}
	for _, g := range newGrantCases(t) {
		for _, status := range []int{400, 200} {
			t.Run(fmt.Sprintf("%s/%d", g.name, status), func(t *testing.T) {
				srv, _ := tokenServer(t, echo(status))
				_, err := g.make(srv.URL, nil, false).fetch(context.Background())
				if err == nil {
					t.Fatal("err = nil")
				}
				text := fmt.Sprintf("%v %+v %#v", err, err, err)
				for _, s := range g.secrets {
					for _, leak := range []string{s, url.QueryEscape(s), url.PathEscape(s)} {
						if strings.Contains(text, leak) {
							t.Errorf("error text %q contains %q", text, leak)
						}
					}
				}
				if !strings.Contains(text, "[redacted]") {
					t.Errorf("error text %q; want the echoed values shown as [redacted]", text)
				}
			})
		}
	}
	t.Run("private_key_jwt", func(t *testing.T) {
		srv, rec := tokenServer(t, echo(401))
		auth, err := PrivateKeyJWT(PrivateKeyJWTConfig{ClientID: "c", Key: testECKey()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = ClientCredentialsGrant(GrantConfig{TokenURL: srv.URL, Auth: auth})(context.Background())
		sent := rec.all()[0].form.Get("client_assertion")
		if err == nil || strings.Contains(err.Error(), sent) || strings.Contains(err.Error(), strings.Split(sent, ".")[2]) {
			t.Errorf("err = %v; want it without the assertion", err)
		}
	})
}

// TestNewGrants_insecureHTTP pins that every grant refuses plain http to
// a host that is not loopback, and redirects there, unless
// AllowInsecureHTTP is set.
func TestNewGrants_insecureHTTP(t *testing.T) {
	for _, g := range newGrantCases(t) {
		t.Run(g.name, func(t *testing.T) {
			idp := &fakeIdP{t: t, redirectTo: "http://idp.example.invalid/token"}
			hc := &http.Client{Transport: idp}
			for _, u := range []string{"http://idp.example.invalid/token", "https://idp.example/redirect"} {
				_, err := g.make(u, hc, false).fetch(context.Background())
				if !errors.Is(err, tokenmanager.ErrInsecureTransport) || !tokenmanager.IsPermanent(err) {
					t.Errorf("%s: err = %v; want a permanent ErrInsecureTransport", u, err)
				}
			}
			if n := idp.insecure.Load(); n != 0 {
				t.Errorf("%d requests in clear text; want none", n)
			}
			idp.insecureOK = true
			if tok, err := g.make("http://idp.example.invalid/token", hc, true).fetch(context.Background()); err != nil || tok.AccessToken != "tok" {
				t.Errorf("with AllowInsecureHTTP: %v, %v; want the token", tok, err)
			}
		})
	}
}

func TestJWTBearer_autoDetectRetrySendsAFreshAssertion(t *testing.T) {
	// A server that refuses Basic auth: the auto-detect retry in the body
	// must not resend the first attempt's single-use assertion.
	var assertions []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		assertions = append(assertions, r.PostForm.Get("assertion"))
		if _, _, basic := r.BasicAuth(); basic {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"invalid_client"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"t","expires_in":60}`)
	}))
	defer srv.Close()
	n := 0
	p := JWTBearer(JWTBearerConfig{TokenURL: srv.URL, Auth: ClientSecret("c", "s", AuthStyleAutoDetect),
		Assertion: func(context.Context, AssertionRequest) (string, error) {
			n++
			return fmt.Sprintf("assertion-%d", n), nil
		}})
	if _, err := p(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(assertions) != 2 || assertions[0] == assertions[1] {
		t.Errorf("assertions sent %q; want two different ones", assertions)
	}
}
