package providers

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
)

// fixedNow is the clock of tests that decode JWT lifetimes.
var fixedNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// tokenServer starts a token endpoint on 127.0.0.1 that records every
// request it gets and answers with h.
func tokenServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *recorder) {
	t.Helper()
	rec := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		form, _ := url.ParseQuery(string(body))
		rec.add(seen{method: r.Method, header: r.Header.Clone(), form: form})
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, rec
}

type seen struct {
	method string
	header http.Header
	form   url.Values
}

type recorder struct {
	mu   sync.Mutex
	reqs []seen
}

func (r *recorder) add(s seen) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, s)
}

func (r *recorder) all() []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seen(nil), r.reqs...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func okToken(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, 200, map[string]any{"access_token": "tok-1", "token_type": "Bearer", "expires_in": 3600})
}

// jwtWith builds an unsigned JWT carrying claims.
func jwtWith(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(claims)) + ".sig"
}

func fetchOnce(t *testing.T, cfg ClientCredentialsConfig) (tokenmanager.Token, error) {
	t.Helper()
	p := newClientCredentials(cfg)
	p.now = func() time.Time { return fixedNow }
	return p.fetch(context.Background())
}

func TestClientCredentials_authStyle(t *testing.T) {
	const id, secret = "my client@example", "s3cr:t&+=/ é"
	tests := []struct {
		name       string
		style      AuthStyle
		secret     string
		wantBasic  bool
		wantParams url.Values
	}{
		{name: "header", style: AuthStyleInHeader, secret: secret, wantBasic: true},
		{name: "params", style: AuthStyleInParams, secret: secret,
			wantParams: url.Values{"client_id": {id}, "client_secret": {secret}}},
		{name: "params public client", style: AuthStyleInParams,
			wantParams: url.Values{"client_id": {id}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, rec := tokenServer(t, okToken)
			_, err := fetchOnce(t, ClientCredentialsConfig{TokenURL: srv.URL, ClientID: id, ClientSecret: tt.secret, AuthStyle: tt.style})
			if err != nil {
				t.Fatal(err)
			}
			reqs := rec.all()
			if len(reqs) != 1 {
				t.Fatalf("got %d requests; want 1", len(reqs))
			}
			r := reqs[0]
			auth := r.header.Get("Authorization")
			if tt.wantBasic {
				// RFC 6749 §2.3.1: form-url-encode, then Basic.
				want := "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
				if auth != want {
					t.Errorf("Authorization = %q; want %q", auth, want)
				}
				if r.form.Has("client_id") || r.form.Has("client_secret") {
					t.Errorf("body holds client credentials with header auth: %v", r.form)
				}
				return
			}
			if auth != "" {
				t.Errorf("Authorization = %q; want none", auth)
			}
			for _, k := range []string{"client_id", "client_secret"} {
				if got, want := r.form[k], tt.wantParams[k]; fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s = %q; want %q", k, got, want)
				}
			}
		})
	}
}

func TestClientCredentials_autoDetect(t *testing.T) {
	t.Run("falls back to params and remembers", func(t *testing.T) {
		// A server that, like many, accepts only client_secret_post.
		srv, rec := tokenServer(t, func(w http.ResponseWriter, r *http.Request) {
			if r.FormValue("client_id") != "id" || r.FormValue("client_secret") != "secret" {
				writeJSON(w, 401, map[string]string{"error": "invalid_client"})
				return
			}
			okToken(w, r)
		})
		p := ClientCredentials(ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id", ClientSecret: "secret"})
		for i := 0; i < 2; i++ {
			if _, err := p(context.Background()); err != nil {
				t.Fatalf("fetch %d: %v", i+1, err)
			}
		}
		reqs := rec.all()
		if len(reqs) != 3 {
			t.Fatalf("got %d requests; want 3 (header, params, then params only)", len(reqs))
		}
		if reqs[0].header.Get("Authorization") == "" || reqs[1].header.Get("Authorization") != "" || reqs[2].header.Get("Authorization") != "" {
			t.Errorf("auth headers = %q, %q, %q; want Basic, none, none",
				reqs[0].header.Get("Authorization"), reqs[1].header.Get("Authorization"), reqs[2].header.Get("Authorization"))
		}
	})
	t.Run("400 also falls back", func(t *testing.T) {
		srv, rec := tokenServer(t, func(w http.ResponseWriter, r *http.Request) {
			if r.FormValue("client_id") == "" {
				writeJSON(w, 400, map[string]string{"error": "invalid_request"})
				return
			}
			okToken(w, r)
		})
		if _, err := fetchOnce(t, ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id", ClientSecret: "secret"}); err != nil {
			t.Fatal(err)
		}
		if got := len(rec.all()); got != 2 {
			t.Errorf("got %d requests; want 2", got)
		}
	})
	t.Run("header works and is remembered", func(t *testing.T) {
		srv, rec := tokenServer(t, okToken)
		p := ClientCredentials(ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id", ClientSecret: "secret"})
		for i := 0; i < 2; i++ {
			if _, err := p(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		for i, r := range rec.all() {
			if !strings.HasPrefix(r.header.Get("Authorization"), "Basic ") {
				t.Errorf("request %d: Authorization = %q; want Basic", i+1, r.header.Get("Authorization"))
			}
		}
	})
	t.Run("no fallback on other statuses", func(t *testing.T) {
		srv, rec := tokenServer(t, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 500, map[string]string{"error": "server_error"})
		})
		_, err := fetchOnce(t, ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id", ClientSecret: "secret"})
		var re *RetrieveError
		if !errors.As(err, &re) || re.StatusCode != 500 {
			t.Fatalf("err = %v; want a *RetrieveError with status 500", err)
		}
		if got := len(rec.all()); got != 1 {
			t.Errorf("got %d requests; want 1", got)
		}
	})
	t.Run("both fail, nothing remembered", func(t *testing.T) {
		srv, rec := tokenServer(t, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 401, map[string]string{"error": "invalid_client"})
		})
		p := ClientCredentials(ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id", ClientSecret: "wrong"})
		for i := 0; i < 2; i++ {
			if _, err := p(context.Background()); err == nil {
				t.Fatal("fetch succeeded; want invalid_client")
			}
		}
		if got := len(rec.all()); got != 4 {
			t.Errorf("got %d requests; want 4 (both styles, twice)", got)
		}
	})
}

func TestClientCredentials_requestBody(t *testing.T) {
	tests := []struct {
		name string
		cfg  ClientCredentialsConfig
		want url.Values // besides client credentials
	}{
		{
			name: "scopes",
			cfg:  ClientCredentialsConfig{Scopes: []string{"read:things", "write:things"}},
			want: url.Values{"grant_type": {"client_credentials"}, "scope": {"read:things write:things"}},
		},
		{
			name: "Auth0 audience",
			cfg:  ClientCredentialsConfig{EndpointParams: url.Values{"audience": {"https://api.example.com/"}}},
			want: url.Values{"grant_type": {"client_credentials"}, "audience": {"https://api.example.com/"}},
		},
		{
			name: "Entra ID v1 resource",
			cfg:  ClientCredentialsConfig{EndpointParams: url.Values{"resource": {"https://graph.microsoft.com"}}},
			want: url.Values{"grant_type": {"client_credentials"}, "resource": {"https://graph.microsoft.com"}},
		},
		{
			name: "Entra ID v2 scope in params",
			cfg:  ClientCredentialsConfig{EndpointParams: url.Values{"scope": {"https://graph.microsoft.com/.default"}}},
			want: url.Values{"grant_type": {"client_credentials"}, "scope": {"https://graph.microsoft.com/.default"}},
		},
		{
			name: "grant_type override",
			cfg:  ClientCredentialsConfig{EndpointParams: url.Values{"grant_type": {"urn:example:custom"}}},
			want: url.Values{"grant_type": {"urn:example:custom"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, rec := tokenServer(t, okToken)
			cfg := tt.cfg
			cfg.TokenURL, cfg.ClientID, cfg.ClientSecret, cfg.AuthStyle = srv.URL, "id", "secret", AuthStyleInHeader
			if _, err := fetchOnce(t, cfg); err != nil {
				t.Fatal(err)
			}
			r := rec.all()[0]
			if r.method != http.MethodPost {
				t.Errorf("method = %s; want POST", r.method)
			}
			if got := r.header.Get("Content-Type"); got != "application/x-www-form-urlencoded" {
				t.Errorf("Content-Type = %q", got)
			}
			if got := r.header.Get("Accept"); got != "application/json" {
				t.Errorf("Accept = %q", got)
			}
			if got, want := r.form.Encode(), tt.want.Encode(); got != want {
				t.Errorf("body = %s; want %s", got, want)
			}
		})
	}
}

func TestClientCredentials_configIsCopied(t *testing.T) {
	srv, rec := tokenServer(t, okToken)
	cfg := ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id", Scopes: []string{"a"},
		EndpointParams: url.Values{"audience": {"x"}}, AuthStyle: AuthStyleInParams}
	p := ClientCredentials(cfg)
	cfg.Scopes[0] = "changed"
	cfg.EndpointParams.Set("audience", "changed")
	if _, err := p(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := rec.all()[0].form; got.Get("scope") != "a" || got.Get("audience") != "x" {
		t.Errorf("body = %v; want the config as it was when the provider was made", got)
	}
}

func TestClientCredentials_responses(t *testing.T) {
	exp := fixedNow.Unix() + 1800
	tests := []struct {
		name        string
		contentType string
		body        string
		want        tokenmanager.Token
	}{
		{
			name: "expires_in number", contentType: "application/json",
			body: `{"access_token":"a","token_type":"Bearer","expires_in":3600,"scope":"s"}`,
			want: tokenmanager.Token{AccessToken: "a", TokenType: "Bearer", ExpiresIn: 3600, Scope: "s"},
		},
		{
			name: "expires_in string", contentType: "application/json; charset=utf-8",
			body: `{"access_token":"a","token_type":"bearer","expires_in":"3599"}`,
			want: tokenmanager.Token{AccessToken: "a", TokenType: "bearer", ExpiresIn: 3599},
		},
		{
			name: "expires_in missing, JWT exp", contentType: "application/json",
			body: fmt.Sprintf(`{"access_token":%q}`, jwtWith(fmt.Sprintf(`{"sub":"x","exp":%d}`, exp))),
			want: tokenmanager.Token{AccessToken: jwtWith(fmt.Sprintf(`{"sub":"x","exp":%d}`, exp)), ExpiresIn: 1800},
		},
		{
			name: "expires_in 0, JWT exp with fraction", contentType: "application/json",
			body: fmt.Sprintf(`{"access_token":%q,"expires_in":0}`, jwtWith(fmt.Sprintf(`{"exp":%d.75}`, exp))),
			want: tokenmanager.Token{AccessToken: jwtWith(fmt.Sprintf(`{"exp":%d.75}`, exp)), ExpiresIn: 1800},
		},
		{
			name: "JWT iat bounds a lagging clock", contentType: "application/json",
			body: fmt.Sprintf(`{"access_token":%q}`, jwtWith(fmt.Sprintf(`{"iat":%d,"exp":%d}`, exp-600, exp))),
			want: tokenmanager.Token{AccessToken: jwtWith(fmt.Sprintf(`{"iat":%d,"exp":%d}`, exp-600, exp)), ExpiresIn: 600},
		},
		{
			name: "expires_in wins over JWT exp", contentType: "application/json",
			body: fmt.Sprintf(`{"access_token":%q,"expires_in":60}`, jwtWith(fmt.Sprintf(`{"exp":%d}`, exp))),
			want: tokenmanager.Token{AccessToken: jwtWith(fmt.Sprintf(`{"exp":%d}`, exp)), ExpiresIn: 60},
		},
		{
			name: "opaque token without expires_in", contentType: "application/json",
			body: `{"access_token":"opaque.token"}`,
			want: tokenmanager.Token{AccessToken: "opaque.token"},
		},
		{
			name: "form-encoded (GitHub style)", contentType: "application/x-www-form-urlencoded; charset=utf-8",
			body: "access_token=gh%2Btok&token_type=bearer&scope=repo&expires_in=28800",
			want: tokenmanager.Token{AccessToken: "gh+tok", TokenType: "bearer", Scope: "repo", ExpiresIn: 28800},
		},
		{
			name: "text/plain form", contentType: "text/plain",
			body: "access_token=t&expires_in=10",
			want: tokenmanager.Token{AccessToken: "t", ExpiresIn: 10},
		},
		{
			name: "JSON labelled text/plain", contentType: "text/plain",
			body: ` {"access_token":"t","expires_in":10}`,
			want: tokenmanager.Token{AccessToken: "t", ExpiresIn: 10},
		},
		{
			name: "no Content-Type", contentType: "",
			body: `{"access_token":"t","expires_in":10}`,
			want: tokenmanager.Token{AccessToken: "t", ExpiresIn: 10},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := tokenServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Content-Type"] = []string{tt.contentType}
				io.WriteString(w, tt.body)
			})
			got, err := fetchOnce(t, ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id", ClientSecret: "secret"})
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestClientCredentials_errors(t *testing.T) {
	date := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	tests := []struct {
		name      string
		status    int
		header    map[string]string
		body      string
		wantRE    *RetrieveError // nil: a plain error
		wantRetry time.Duration
		wantText  string // in err.Error()
	}{
		{
			name: "OAuth error JSON", status: 400,
			header: map[string]string{"Content-Type": "application/json"},
			body:   `{"error":"invalid_scope","error_description":"scope \"admin\" is not allowed","error_uri":"https://idp.example/docs/errors"}`,
			wantRE: &RetrieveError{StatusCode: 400, ErrorCode: "invalid_scope",
				ErrorDescription: `scope "admin" is not allowed`, ErrorURI: "https://idp.example/docs/errors"},
			wantText: `providers: token endpoint answered 400 Bad Request: invalid_scope: scope "admin" is not allowed (see https://idp.example/docs/errors)`,
		},
		{
			name: "OAuth error form-encoded", status: 401,
			header:   map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
			body:     "error=invalid_client&error_description=bad+client",
			wantRE:   &RetrieveError{StatusCode: 401, ErrorCode: "invalid_client", ErrorDescription: "bad client"},
			wantText: "invalid_client: bad client",
		},
		{
			name: "429 Retry-After seconds", status: 429,
			header:    map[string]string{"Retry-After": "30", "Content-Type": "application/json"},
			body:      `{"error":"slow_down"}`,
			wantRE:    &RetrieveError{StatusCode: 429, ErrorCode: "slow_down"},
			wantRetry: 30 * time.Second,
			wantText:  "(retry after 30s)",
		},
		{
			name: "429 Retry-After HTTP date, measured from Date", status: 429,
			header: map[string]string{
				"Date":        date.Format(http.TimeFormat),
				"Retry-After": date.Add(2 * time.Minute).Format(http.TimeFormat),
			},
			wantRE:    &RetrieveError{StatusCode: 429},
			wantRetry: 2 * time.Minute,
		},
		{
			name: "503 Retry-After", status: 503,
			header:    map[string]string{"Retry-After": "120"},
			body:      "<html>maintenance</html>",
			wantRE:    &RetrieveError{StatusCode: 503},
			wantRetry: 2 * time.Minute,
			wantText:  "providers: token endpoint answered 503 Service Unavailable (retry after 2m0s)",
		},
		{
			name: "503 without Retry-After", status: 503,
			wantRE: &RetrieveError{StatusCode: 503},
		},
		{
			name: "Retry-After in the past", status: 429,
			header: map[string]string{"Date": date.Format(http.TimeFormat),
				"Retry-After": date.Add(-time.Minute).Format(http.TimeFormat)},
			wantRE: &RetrieveError{StatusCode: 429},
		},
		{
			name: "Retry-After garbage", status: 429,
			header: map[string]string{"Retry-After": "soon"},
			wantRE: &RetrieveError{StatusCode: 429},
		},
		{
			name: "error object, not RFC 6749", status: 400,
			header: map[string]string{"Content-Type": "application/json"},
			body:   `{"error":{"code":1,"message":"no"}}`,
			wantRE: &RetrieveError{StatusCode: 400},
		},
		{
			name: "200 with OAuth error (GitHub style)", status: 200,
			header:   map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
			body:     "error=incorrect_client_credentials&error_description=The+client_id+and%2For+client_secret+passed+are+incorrect.",
			wantRE:   &RetrieveError{StatusCode: 200, ErrorCode: "incorrect_client_credentials", ErrorDescription: "The client_id and/or client_secret passed are incorrect."},
			wantText: "incorrect_client_credentials",
		},
		{
			name: "200 without access_token", status: 200,
			header:   map[string]string{"Content-Type": "application/json"},
			body:     `{"token_type":"Bearer"}`,
			wantRE:   &RetrieveError{StatusCode: 200, ErrorDescription: "the response has no access_token"},
			wantText: "no access_token",
		},
		{
			name: "garbage body", status: 200,
			header:   map[string]string{"Content-Type": "application/json"},
			body:     "<html>login page</html>",
			wantText: "providers: decoding token response (application/json)",
		},
		{
			name: "bad expires_in", status: 200,
			header:   map[string]string{"Content-Type": "application/json"},
			body:     `{"access_token":"t","expires_in":"soon"}`,
			wantText: "expires_in",
		},
		{
			name: "huge body", status: 200,
			header:   map[string]string{"Content-Type": "application/json"},
			body:     `{"access_token":"` + strings.Repeat("x", maxResponseBody) + `"}`,
			wantText: "more than 1048576 bytes",
		},
		{
			name: "huge error body", status: 502,
			body:   strings.Repeat("x", 3*maxResponseBody),
			wantRE: &RetrieveError{StatusCode: 502},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := tokenServer(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			_, err := fetchOnce(t, ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id", ClientSecret: "s3cr3t-value", AuthStyle: AuthStyleInParams})
			if err == nil {
				t.Fatal("err = nil; want an error")
			}
			var re *RetrieveError
			isRE := errors.As(err, &re)
			switch {
			case tt.wantRE == nil && isRE:
				t.Errorf("err = %#v; want a plain error", re)
			case tt.wantRE != nil && !isRE:
				t.Errorf("err = %v (%T); want a *RetrieveError", err, err)
			case tt.wantRE != nil:
				want := *tt.wantRE
				want.retryAfter = tt.wantRetry
				if *re != want {
					t.Errorf("got %+v; want %+v", *re, want)
				}
			}
			var hint interface{ RetryAfter() time.Duration }
			if errors.As(err, &hint) && hint.RetryAfter() != tt.wantRetry {
				t.Errorf("RetryAfter() = %v; want %v", hint.RetryAfter(), tt.wantRetry)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("err = %q; want it to contain %q", err, tt.wantText)
			}
			if len(err.Error()) > 2000 {
				t.Errorf("error text is %d bytes long", len(err.Error()))
			}
		})
	}
}

func TestRetrieveError_Temporary(t *testing.T) {
	tests := []struct {
		err  RetrieveError
		want bool
	}{
		{RetrieveError{StatusCode: 400}, false},
		{RetrieveError{StatusCode: 401}, false},
		{RetrieveError{StatusCode: 429}, true},
		{RetrieveError{StatusCode: 500}, true},
		{RetrieveError{StatusCode: 503}, true},
		{RetrieveError{StatusCode: 400, retryAfter: time.Second}, true},
	}
	for _, tt := range tests {
		if got := tt.err.Temporary(); got != tt.want {
			t.Errorf("%+v.Temporary() = %v; want %v", tt.err, got, tt.want)
		}
	}
}

func TestClientCredentials_secretNeverInErrors(t *testing.T) {
	const id, secret = "client", "p@ss w0rd/+secret"
	// A server that echoes everything it got back in the error.
	echo := func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		writeJSON(w, 401, map[string]string{
			"error":             "invalid_client " + secret,
			"error_description": "got body " + string(body) + " auth " + r.Header.Get("Authorization"),
			"error_uri":         "https://idp.example/?s=" + url.QueryEscape(secret),
		})
	}
	for _, style := range []AuthStyle{AuthStyleAutoDetect, AuthStyleInHeader, AuthStyleInParams} {
		t.Run(style.String(), func(t *testing.T) {
			srv, _ := tokenServer(t, echo)
			_, err := fetchOnce(t, ClientCredentialsConfig{TokenURL: srv.URL, ClientID: id, ClientSecret: secret, AuthStyle: style})
			if err == nil {
				t.Fatal("err = nil")
			}
			text := fmt.Sprintf("%v %+v %#v", err, err, err)
			basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret)))
			for _, leak := range []string{secret, url.QueryEscape(secret), url.PathEscape(secret), basic} {
				if strings.Contains(text, leak) {
					t.Errorf("error text %q contains %q", text, leak)
				}
			}
			if !strings.Contains(text, "[redacted]") {
				t.Errorf("error text %q; want the echoed secret shown as [redacted]", text)
			}
		})
	}
	t.Run("transport error", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		u := srv.URL
		srv.Close() // nothing listens there now
		_, err := fetchOnce(t, ClientCredentialsConfig{TokenURL: u, ClientID: id, ClientSecret: secret})
		if err == nil || strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), url.QueryEscape(secret)) {
			t.Errorf("err = %v; want an error without the secret", err)
		}
	})
}

func TestClientCredentials_context(t *testing.T) {
	t.Run("cancelled before", func(t *testing.T) {
		srv, rec := tokenServer(t, okToken)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := ClientCredentials(ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id"})(ctx)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v; want context.Canceled", err)
		}
		if n := len(rec.all()); n != 0 {
			t.Errorf("got %d requests; want none", n)
		}
	})
	t.Run("cancelled while waiting for the server", func(t *testing.T) {
		arrived := make(chan struct{})
		srv, _ := tokenServer(t, func(w http.ResponseWriter, r *http.Request) {
			close(arrived)
			<-r.Context().Done() // hang until the client gives up
		})
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := ClientCredentials(ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id", AuthStyle: AuthStyleInParams})(ctx)
			errc <- err
		}()
		<-arrived
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v; want context.Canceled", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		srv, _ := tokenServer(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := ClientCredentials(ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id", AuthStyle: AuthStyleInParams})(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v; want context.DeadlineExceeded", err)
		}
	})
}

func TestClientCredentialsConfig_Validate(t *testing.T) {
	tests := []struct {
		name   string
		cfg    ClientCredentialsConfig
		want   []string // substrings; nil means valid
		wantIs error    // errors.Is must find it, when set
	}{
		{name: "valid", cfg: ClientCredentialsConfig{TokenURL: "https://idp.example/oauth/token", ClientID: "id"}},
		{name: "plain http to loopback", cfg: ClientCredentialsConfig{TokenURL: "http://127.0.0.1:8080/token", ClientID: "id"}},
		{name: "plain http to localhost", cfg: ClientCredentialsConfig{TokenURL: "http://localhost/token", ClientID: "id"}},
		{name: "plain http to ::1", cfg: ClientCredentialsConfig{TokenURL: "http://[::1]:8080/token", ClientID: "id"}},
		{name: "plain http, allowed", cfg: ClientCredentialsConfig{TokenURL: "http://idp.example/token", ClientID: "id", AllowInsecureHTTP: true}},
		{name: "plain http to a remote host", cfg: ClientCredentialsConfig{TokenURL: "http://u:hunter2@idp.example/token", ClientID: "id"},
			want:   []string{`TokenURL "http://u:xxxxx@idp.example/token" is plain http`, "AllowInsecureHTTP"},
			wantIs: tokenmanager.ErrInsecureTransport},
		{name: "empty", cfg: ClientCredentialsConfig{},
			want: []string{"providers: TokenURL is empty", "providers: ClientID is empty"}},
		{name: "relative URL", cfg: ClientCredentialsConfig{TokenURL: "/oauth/token", ClientID: "id"},
			want: []string{"must be an http or https URL"}},
		{name: "no host", cfg: ClientCredentialsConfig{TokenURL: "https:///token", ClientID: "id"},
			want: []string{"has no host"}},
		{name: "bad URL", cfg: ClientCredentialsConfig{TokenURL: "https://idp.example/%zz", ClientID: "id"},
			want: []string{"TokenURL is not a valid URL"}},
		{name: "password redacted", cfg: ClientCredentialsConfig{TokenURL: "ftp://u:hunter2@idp.example/", ClientID: "id"},
			want: []string{"ftp://u:xxxxx@idp.example/"}},
		{name: "bad style", cfg: ClientCredentialsConfig{TokenURL: "https://idp.example/", ClientID: "id", AuthStyle: 7},
			want: []string{"AuthStyle is AuthStyle(7)"}},
		{name: "credentials in params", cfg: ClientCredentialsConfig{TokenURL: "https://idp.example/", ClientID: "id",
			EndpointParams: url.Values{"client_secret": {"s"}}},
			want: []string{`EndpointParams sets "client_secret"`}},
		{name: "scope twice", cfg: ClientCredentialsConfig{TokenURL: "https://idp.example/", ClientID: "id",
			Scopes: []string{"a"}, EndpointParams: url.Values{"scope": {"b"}}},
			want: []string{`EndpointParams sets "scope" and Scopes is set too`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
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
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("Validate() = %q shows a password", err)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Validate() = %q; want it to wrap %q", err, tt.wantIs)
			}
			// The provider reports the same error without a request.
			if _, perr := ClientCredentials(tt.cfg)(context.Background()); perr == nil || perr.Error() != err.Error() {
				t.Errorf("provider error = %v; want %v", perr, err)
			}
		})
	}
}

func TestClientCredentials_concurrentFetches(t *testing.T) {
	var n atomic.Int32
	srv, _ := tokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if r.Header.Get("Authorization") != "" {
			writeJSON(w, 401, map[string]string{"error": "invalid_client"})
			return
		}
		okToken(w, r)
	})
	p := ClientCredentials(ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id", ClientSecret: "s"})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := n.Load(); got < 9 || got > 16 {
		t.Errorf("got %d requests for 8 fetches; want 9..16", got)
	}
}

func TestAuthStyle_String(t *testing.T) {
	for s, want := range map[AuthStyle]string{
		AuthStyleAutoDetect: "AuthStyleAutoDetect", AuthStyleInHeader: "AuthStyleInHeader",
		AuthStyleInParams: "AuthStyleInParams", -1: "AuthStyle(-1)",
	} {
		if got := s.String(); got != want {
			t.Errorf("AuthStyle(%d).String() = %q; want %q", int(s), got, want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		header http.Header
		want   time.Duration
	}{
		{http.Header{}, 0},
		{http.Header{"Retry-After": {"0"}}, 0},
		{http.Header{"Retry-After": {"-5"}}, 0},
		{http.Header{"Retry-After": {" 7 "}}, 7 * time.Second},
		{http.Header{"Retry-After": {"99999999999999999"}}, time.Duration(1<<63 - 1)},
		{http.Header{"Retry-After": {now.Add(90 * time.Second).Format(http.TimeFormat)}}, 90 * time.Second},
		{http.Header{"Retry-After": {"Tue, 01 Jan 2030 00:01:00 GMT"}, "Date": {"Tue, 01 Jan 2030 00:00:30 GMT"}}, 30 * time.Second},
		{http.Header{"Retry-After": {"1.5"}}, 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.header, now); got != tt.want {
			t.Errorf("parseRetryAfter(%v) = %v; want %v", tt.header, got, tt.want)
		}
	}
}

func TestJWTLifetime(t *testing.T) {
	exp := fixedNow.Unix() + 300
	tests := []struct {
		name    string
		token   string
		want    int64
		expired bool // want an error wrapping ErrExpiredOnArrival
	}{
		{"exp", jwtWith(fmt.Sprintf(`{"exp":%d}`, exp)), 300, false},
		{"under a second left", jwtWith(fmt.Sprintf(`{"exp":%d.5}`, fixedNow.Unix())), 1, false},
		{"expires now", jwtWith(fmt.Sprintf(`{"exp":%d}`, fixedNow.Unix())), 0, true},
		{"expired", jwtWith(fmt.Sprintf(`{"exp":%d}`, fixedNow.Unix()-5)), 0, true},
		{"iat equals exp", jwtWith(fmt.Sprintf(`{"iat":%d,"exp":%d}`, exp, exp)), 0, true},
		{"padded payload", strings.Replace(jwtWith(fmt.Sprintf(`{"exp":%d}`, exp)), ".sig", "==.sig", 1), 300, false},
		{"iat after exp ignored", jwtWith(fmt.Sprintf(`{"iat":%d,"exp":%d}`, exp+10, exp)), 300, false},
		{"exp as string", jwtWith(`{"exp":"soon"}`), 0, false},
		{"no exp", jwtWith(`{"sub":"x"}`), 0, false},
		{"negative exp", jwtWith(`{"exp":-1}`), 0, false},
		{"payload not JSON", "a." + base64.RawURLEncoding.EncodeToString([]byte("nope")) + ".c", 0, false},
		{"payload not base64", "a.!!!.c", 0, false},
		{"two parts", "a.b", 0, false},
		{"opaque", "2YotnFZFEjr1zCsicMWpAA", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := jwtLifetime(tt.token, fixedNow)
			if got != tt.want {
				t.Errorf("jwtLifetime = %d; want %d", got, tt.want)
			}
			if gotExpired := errors.Is(err, tokenmanager.ErrExpiredOnArrival); gotExpired != tt.expired || (err != nil && !gotExpired) {
				t.Errorf("jwtLifetime error = %v; want ErrExpiredOnArrival: %v", err, tt.expired)
			}
		})
	}
}

func TestClientCredentials_errorTextBounded(t *testing.T) {
	srv, _ := tokenServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 400, map[string]string{"error": "invalid_request", "error_description": "line1\nline2\x1b[31m" + strings.Repeat("x", 5000)})
	})
	_, err := fetchOnce(t, ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id", AuthStyle: AuthStyleInParams})
	var re *RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v; want a *RetrieveError", err)
	}
	if strings.ContainsAny(re.ErrorDescription, "\n\x1b") || len(re.ErrorDescription) > 520 {
		t.Errorf("ErrorDescription = %q (%d bytes); want one bounded line", re.ErrorDescription[:40], len(re.ErrorDescription))
	}
}

// TestAuthStyleAutoDetect_retries: auto-detection sends the secret in
// the body after a refusal of the client's authentication only; a
// refused grant (invalid_grant) is not sent again.
func TestAuthStyleAutoDetect_retries(t *testing.T) {
	for _, tt := range []struct {
		status int
		code   string
		want   int // requests
	}{
		{401, "", 2},
		{401, "invalid_client", 2},
		{400, "invalid_client", 2},
		{400, "", 2},
		{400, "invalid_request", 2},
		{400, "invalid_grant", 1},
		{401, "invalid_grant", 1},
		{400, "invalid_scope", 1},
	} {
		t.Run(fmt.Sprintf("%d %s", tt.status, tt.code), func(t *testing.T) {
			srv, rec := tokenServer(t, func(w http.ResponseWriter, r *http.Request) {
				body := map[string]string{}
				if tt.code != "" {
					body["error"] = tt.code
				}
				writeJSON(w, tt.status, body)
			})
			_, err := fetchOnce(t, ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id", ClientSecret: "s", AuthStyle: AuthStyleAutoDetect})
			if err == nil {
				t.Fatal("err = nil")
			}
			if got := len(rec.all()); got != tt.want {
				t.Fatalf("%d requests; want %d", got, tt.want)
			}
		})
	}
}
