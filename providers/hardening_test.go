package providers

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-tokenmanager/tokenmanager"
)

func TestRetrieveError_Permanent(t *testing.T) {
	tests := []struct {
		err  RetrieveError
		want bool
	}{
		{RetrieveError{StatusCode: 400}, true},
		{RetrieveError{StatusCode: 401}, true},
		{RetrieveError{StatusCode: 403}, true},
		{RetrieveError{StatusCode: 404}, false},
		{RetrieveError{StatusCode: 200, ErrorDescription: "the response has no access_token"}, false},
		{RetrieveError{StatusCode: 200, ErrorCode: "invalid_client"}, true},
		{RetrieveError{StatusCode: 200, ErrorCode: "incorrect_client_credentials"}, true},
		{RetrieveError{StatusCode: 201, ErrorCode: "bad_verification_code"}, true},
		{RetrieveError{StatusCode: 200, ErrorCode: "temporarily_unavailable"}, false},
		{RetrieveError{StatusCode: 200, ErrorCode: "slow_down"}, false},
		{RetrieveError{StatusCode: 200, ErrorCode: "server_error"}, false},
		{RetrieveError{StatusCode: 200, ErrorCode: "incorrect_client_credentials", retryAfter: time.Second}, false},
		{RetrieveError{StatusCode: 404, ErrorCode: "incorrect_client_credentials"}, false},
		{RetrieveError{StatusCode: 404, ErrorCode: "unsupported_grant_type"}, true},
		{RetrieveError{StatusCode: 400, ErrorCode: "slow_down"}, false},
		{RetrieveError{StatusCode: 400, ErrorCode: "invalid_request"}, true},
		{RetrieveError{StatusCode: 429, ErrorCode: "invalid_client"}, false},
		{RetrieveError{StatusCode: 500, ErrorCode: "invalid_grant"}, false},
		{RetrieveError{StatusCode: 401, ErrorCode: "invalid_client", retryAfter: time.Second}, false},
	}
	for _, tt := range tests {
		if got := tt.err.Permanent(); got != tt.want {
			t.Errorf("%+v.Permanent() = %v; want %v", tt.err, got, tt.want)
		}
	}
}

// TestClientCredentials_permanent checks which answers of a token
// endpoint make the provider's error permanent for the manager.
func TestClientCredentials_permanent(t *testing.T) {
	tests := []struct {
		name   string
		status int
		code   string // OAuth error code; empty: none
		header map[string]string
		body   string // when set, sent instead of the OAuth error
		want   bool
	}{
		{name: "400 invalid_client", status: 400, code: "invalid_client", want: true},
		{name: "401 invalid_client", status: 401, code: "invalid_client", want: true},
		{name: "400 unauthorized_client", status: 400, code: "unauthorized_client", want: true},
		{name: "400 invalid_grant", status: 400, code: "invalid_grant", want: true},
		{name: "400 invalid_scope", status: 400, code: "invalid_scope", want: true},
		{name: "400 unsupported_grant_type", status: 400, code: "unsupported_grant_type", want: true},
		{name: "200 invalid_client", status: 200, code: "invalid_client", want: true},
		{name: "404 invalid_scope", status: 404, code: "invalid_scope", want: true},
		{name: "400 invalid_request", status: 400, code: "invalid_request", want: true},
		{name: "400 without code", status: 400, want: true},
		{name: "401 without code", status: 401, want: true},
		{name: "403 without code", status: 403, body: "<html>forbidden</html>", want: true},
		{name: "400 temporarily_unavailable", status: 400, code: "temporarily_unavailable", want: false},
		{name: "400 slow_down", status: 400, code: "slow_down", want: false},
		{name: "400 server_error", status: 400, code: "server_error", want: false},
		{name: "200 temporarily_unavailable", status: 200, code: "temporarily_unavailable", want: false},
		{name: "200 unknown code", status: 200, code: "incorrect_client_credentials", want: true},
		{name: "200 GitHub's refusal", status: 200, body: `{"error":"incorrect_client_credentials",` +
			`"error_description":"The client_id and/or client_secret passed are incorrect.","error_uri":"https://docs.github.com/"}`, want: true},
		{name: "200 slow_down", status: 200, code: "slow_down", want: false},
		{name: "200 server_error", status: 200, code: "server_error", want: false},
		{name: "200 unknown code with Retry-After", status: 200, code: "incorrect_client_credentials",
			header: map[string]string{"Retry-After": "5"}, want: false},
		{name: "200 without access_token", status: 200, body: `{"token_type":"Bearer"}`, want: false},
		{name: "404 without code", status: 404, want: false},
		{name: "429 invalid_client", status: 429, code: "invalid_client", want: false},
		{name: "500 invalid_client", status: 500, code: "invalid_client", want: false},
		{name: "503", status: 503, want: false},
		{name: "401 invalid_client with Retry-After", status: 401, code: "invalid_client",
			header: map[string]string{"Retry-After": "5"}, want: false},
		{name: "200 garbage", status: 200, body: "<html>login page</html>", want: false},
		{name: "200 truncated JSON", status: 200, body: `{"access_token":"t","expi`, want: false},
		{name: "200 bad expires_in", status: 200, body: `{"access_token":"t","expires_in":"soon"}`, want: true},
		{name: "200 over 1 MiB", status: 200, body: `{"access_token":"` + strings.Repeat("x", maxResponseBody) + `"}`, want: true},
		{name: "502 over 1 MiB", status: 502, body: strings.Repeat("x", 2*maxResponseBody), want: false},
		{name: "400 over 1 MiB", status: 400, body: strings.Repeat("x", 2*maxResponseBody), want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := tokenServer(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				if tt.body != "" {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(tt.status)
					io.WriteString(w, tt.body)
					return
				}
				writeJSON(w, tt.status, map[string]string{"error": tt.code})
			})
			_, err := fetchOnce(t, ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id", ClientSecret: "secret", AuthStyle: AuthStyleInParams})
			if err == nil {
				t.Fatal("err = nil; want an error")
			}
			if got := tokenmanager.IsPermanent(err); got != tt.want {
				t.Errorf("IsPermanent(%v) = %v; want %v", err, got, tt.want)
			}
		})
	}
	t.Run("auto-detect, both styles refused", func(t *testing.T) {
		srv, _ := tokenServer(t, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 401, map[string]string{"error": "invalid_client"})
		})
		_, err := fetchOnce(t, ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id", ClientSecret: "wrong"})
		if !tokenmanager.IsPermanent(err) {
			t.Errorf("IsPermanent(%v) = false; want true", err)
		}
	})
	t.Run("network error", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		u := srv.URL
		srv.Close() // nothing listens there now
		_, err := fetchOnce(t, ClientCredentialsConfig{TokenURL: u, ClientID: "id", ClientSecret: "secret"})
		if err == nil || tokenmanager.IsPermanent(err) {
			t.Errorf("err = %v; want a temporary error", err)
		}
	})
	t.Run("ctx cancelled", func(t *testing.T) {
		srv, _ := tokenServer(t, okToken)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := ClientCredentials(ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id"})(ctx)
		if !errors.Is(err, context.Canceled) || tokenmanager.IsPermanent(err) {
			t.Errorf("err = %v; want a temporary context.Canceled", err)
		}
	})
}

// TestClientCredentials_invalidConfigPermanent checks that the error an
// invalid config gives on every call is permanent and still shows its
// causes.
func TestClientCredentials_invalidConfigPermanent(t *testing.T) {
	tests := []struct {
		name   string
		cfg    ClientCredentialsConfig
		wantIs error // errors.Is must find it, when set
	}{
		{name: "empty", cfg: ClientCredentialsConfig{}},
		{name: "bad style", cfg: ClientCredentialsConfig{TokenURL: "https://idp.example/", ClientID: "id", AuthStyle: 7}},
		{name: "plain http", cfg: ClientCredentialsConfig{TokenURL: "http://idp.example/token", ClientID: "id"},
			wantIs: tokenmanager.ErrInsecureTransport},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ClientCredentials(tt.cfg)
			for i := 0; i < 2; i++ {
				_, err := p(context.Background())
				if err == nil {
					t.Fatal("err = nil; want the config's problems")
				}
				if !tokenmanager.IsPermanent(err) {
					t.Errorf("IsPermanent(%v) = false; want true", err)
				}
				var joined interface{ Unwrap() []error }
				if !errors.As(err, &joined) || len(joined.Unwrap()) == 0 {
					t.Errorf("err = %v (%T); want it to wrap Validate's joined errors", err, err)
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("err = %v; want it to wrap %v", err, tt.wantIs)
				}
			}
		})
	}
}

// fakeIdP is an http.RoundTripper standing in for remote token
// endpoints. It counts the requests that would travel in clear text to a
// host that is not loopback, and fails the test on them unless insecureOK.
// https://idp.example/redirect answers a 307 to redirectTo; any other URL
// gets a token.
type fakeIdP struct {
	t          *testing.T
	insecureOK bool
	redirectTo string
	insecure   atomic.Int32
}

func (f *fakeIdP) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	if r.URL.Scheme == "http" && r.URL.Hostname() != "127.0.0.1" {
		f.insecure.Add(1)
		if !f.insecureOK {
			f.t.Errorf("request sent over plain http to %s; want none", r.URL)
			return nil, errors.New("fakeIdP: refusing plain http")
		}
	}
	if r.URL.Path == "/redirect" {
		return &http.Response{StatusCode: http.StatusTemporaryRedirect, Header: http.Header{"Location": {f.redirectTo}},
			Body: http.NoBody, Request: r}, nil
	}
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(`{"access_token":"tok","expires_in":60}`)), Request: r}, nil
}

func TestClientCredentials_insecureHTTP(t *testing.T) {
	tests := []struct {
		name       string
		tokenURL   string
		redirectTo string
		allow      bool
		want       int32 // requests sent in clear text
		wantErr    bool  // permanent, wrapping ErrInsecureTransport
	}{
		{name: "plain http refused", tokenURL: "http://idp.example.invalid/token", wantErr: true},
		{name: "plain http allowed", tokenURL: "http://idp.example.invalid/token", allow: true, want: 1},
		{name: "https", tokenURL: "https://idp.example.invalid/token"},
		{name: "redirect to plain http refused", tokenURL: "https://idp.example/redirect",
			redirectTo: "http://idp.example.invalid/token", wantErr: true},
		{name: "redirect to plain http allowed", tokenURL: "https://idp.example/redirect",
			redirectTo: "http://idp.example.invalid/token", allow: true, want: 1},
		{name: "redirect to loopback", tokenURL: "https://idp.example/redirect",
			redirectTo: "http://127.0.0.1:1/token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idp := &fakeIdP{t: t, insecureOK: tt.allow, redirectTo: tt.redirectTo}
			for _, style := range []AuthStyle{AuthStyleInHeader, AuthStyleInParams} {
				idp.insecure.Store(0)
				tok, err := fetchOnce(t, ClientCredentialsConfig{TokenURL: tt.tokenURL, ClientID: "id", ClientSecret: "secret",
					AuthStyle: style, AllowInsecureHTTP: tt.allow, HTTPClient: &http.Client{Transport: idp}})
				if got := idp.insecure.Load(); got != tt.want {
					t.Errorf("%v: %d requests in clear text; want %d", style, got, tt.want)
				}
				if !tt.wantErr {
					if err != nil || tok.AccessToken != "tok" {
						t.Errorf("%v: got %v, %v; want the token", style, tok, err)
					}
					continue
				}
				if !errors.Is(err, tokenmanager.ErrInsecureTransport) || !tokenmanager.IsPermanent(err) {
					t.Errorf("%v: err = %v; want a permanent error wrapping ErrInsecureTransport", style, err)
				}
				if err != nil && !strings.Contains(err.Error(), "AllowInsecureHTTP") {
					t.Errorf("%v: err = %q; want it to name AllowInsecureHTTP", style, err)
				}
			}
		})
	}
	t.Run("the caller's client is left alone", func(t *testing.T) {
		hc := &http.Client{Transport: &fakeIdP{t: t}}
		ClientCredentials(ClientCredentialsConfig{TokenURL: "https://idp.example/token", ClientID: "id", HTTPClient: hc})
		if hc.CheckRedirect != nil {
			t.Error("CheckRedirect of the caller's client was set")
		}
	})
}

// TestClientCredentials_expiredOnArrival checks how a JWT access token's
// exp claim turns into a lifetime when the response has no expires_in.
func TestClientCredentials_expiredOnArrival(t *testing.T) {
	now := fixedNow.Unix()
	tests := []struct {
		name      string
		claims    string
		expiresIn string // JSON value; empty: none sent
		want      int64
		wantErr   string // in the error, which must wrap ErrExpiredOnArrival
	}{
		{name: "expired 5s ago", claims: fmt.Sprintf(`{"exp":%d}`, now-5), wantErr: "passed 5s ago"},
		{name: "expired, expires_in 0", claims: fmt.Sprintf(`{"exp":%d}`, now-5), expiresIn: "0", wantErr: "exp claim (2030-01-02T03:04:00Z)"},
		{name: "expires this instant", claims: fmt.Sprintf(`{"exp":%d}`, now), wantErr: "passed 0s ago"},
		{name: "iat equals exp", claims: fmt.Sprintf(`{"iat":%d,"exp":%d}`, now+60, now+60), wantErr: "equals its iat"},
		{name: "expired but expires_in given", claims: fmt.Sprintf(`{"exp":%d}`, now-5), expiresIn: "60", want: 60},
		{name: "half a second left", claims: fmt.Sprintf(`{"exp":%d.5}`, now), want: 1},
		{name: "100s left", claims: fmt.Sprintf(`{"exp":%d}`, now+100), want: 100},
		{name: "100.9s left", claims: fmt.Sprintf(`{"exp":%d.9}`, now+100), want: 100},
		{name: "iat bound", claims: fmt.Sprintf(`{"iat":%d,"exp":%d}`, now+50, now+100), want: 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := jwtWith(tt.claims)
			body := fmt.Sprintf(`{"access_token":%q`, token)
			if tt.expiresIn != "" {
				body += `,"expires_in":` + tt.expiresIn
			}
			body += "}"
			srv, _ := tokenServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, body)
			})
			got, err := fetchOnce(t, ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "id", AuthStyle: AuthStyleInParams})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got.ExpiresIn != tt.want {
					t.Errorf("ExpiresIn = %d; want %d", got.ExpiresIn, tt.want)
				}
				return
			}
			if !errors.Is(err, tokenmanager.ErrExpiredOnArrival) {
				t.Fatalf("err = %v (token %v); want ErrExpiredOnArrival", err, got)
			}
			if tokenmanager.IsPermanent(err) {
				t.Errorf("IsPermanent(%v) = true; want a temporary error", err)
			}
			if got != (tokenmanager.Token{}) {
				t.Errorf("got %v with the error; want no token", got)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %q; want it to contain %q", err, tt.wantErr)
			}
			if payload := strings.Split(token, ".")[1]; strings.Contains(err.Error(), payload) {
				t.Errorf("err = %q shows the token", err)
			}
		})
	}
}

// TestClientCredentials_redactWholeTokens checks that the client secret
// is masked where a server echoes it as a value, and only there: a short
// secret inside a longer word is left alone.
func TestClientCredentials_redactWholeTokens(t *testing.T) {
	basicS := base64.StdEncoding.EncodeToString([]byte("client:s"))
	long := strings.Repeat("x ", 255) // 510 bytes
	tests := []struct {
		name, secret                string
		code, desc, uri             string
		wantCode, wantDesc, wantURI string
	}{
		{name: "slow_down kept", secret: "s", code: "slow_down", desc: "too many requests",
			wantCode: "slow_down", wantDesc: "too many requests"},
		{name: "invalid scope kept", secret: "cope", code: "invalid_scope", desc: "invalid scope",
			uri: "https://idp.example/docs#scope", wantCode: "invalid_scope", wantDesc: "invalid scope", wantURI: "https://idp.example/docs#scope"},
		{name: "s kept in invalid scope", secret: "s", code: "invalid_scope", desc: "invalid scope",
			wantCode: "invalid_scope", wantDesc: "invalid scope"},
		{name: "embedded in a longer value", secret: "s3cr", code: "invalid_client", desc: "token s3cr3t-value refused",
			wantCode: "invalid_client", wantDesc: "token s3cr3t-value refused"},
		{name: "form value", secret: "s", code: "invalid_client", desc: "got client_secret=s&x",
			wantCode: "invalid_client", wantDesc: "got client_secret=[redacted]&x"},
		{name: "form value at the end", secret: "cope", code: "invalid_scope", desc: "client_secret=cope",
			uri: "https://idp.example/?s=cope", wantCode: "invalid_scope", wantDesc: "client_secret=[redacted]", wantURI: "https://idp.example/?s=[redacted]"},
		{name: "quoted", secret: "s", code: "invalid_client", desc: `secret "s" is wrong`,
			wantCode: "invalid_client", wantDesc: `secret "[redacted]" is wrong`},
		{name: "basic", secret: "s", code: "invalid_client", desc: "auth Basic " + basicS,
			wantCode: "invalid_client", wantDesc: "auth Basic [redacted]"},
		{name: "whole word", secret: "demo", code: "invalid_client", desc: "client demo unknown",
			wantCode: "invalid_client", wantDesc: "client [redacted] unknown"},
		{name: "a neighbour unmasked by a replacement", secret: "a;", code: "invalid_client", desc: "a;a;",
			wantCode: "invalid_client", wantDesc: "[redacted][redacted]"},
		{name: "secret cut by the length cap", secret: "p4ss", code: "invalid_client", desc: long + "p4ss and more",
			wantCode: "invalid_client", wantDesc: long + "..."},
		{name: "secret ending at the length cap", secret: "p4", code: "invalid_client", desc: long + "p4ss and more",
			wantCode: "invalid_client", wantDesc: long + "[redacted]..."},
		{name: "short secret ending a sentence", secret: "s3cr", code: "invalid_client", desc: "Invalid value: s3cr. Try again.",
			wantCode: "invalid_client", wantDesc: "Invalid value: [redacted]. Try again."},
		{name: "short secret before a full stop inside a value kept", secret: "s3cr", code: "invalid_client", desc: "file s3cr.txt",
			wantCode: "invalid_client", wantDesc: "file s3cr.txt"},
		{name: "long secret inside a longer value", secret: "client-secret-0123456789", code: "invalid_client",
			desc: "token=abcclient-secret-0123456789def", wantCode: "invalid_client", wantDesc: "token=abc[redacted]def"},
		{name: "control character in the secret", secret: "a\tb", code: "invalid_client", desc: "got a\tb",
			wantCode: "invalid_client", wantDesc: "got [redacted]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := tokenServer(t, func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, 400, map[string]string{"error": tt.code, "error_description": tt.desc, "error_uri": tt.uri})
			})
			_, err := fetchOnce(t, ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "client", ClientSecret: tt.secret, AuthStyle: AuthStyleInParams})
			var re *RetrieveError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v; want a *RetrieveError", err)
			}
			if re.ErrorCode != tt.wantCode || re.ErrorDescription != tt.wantDesc || re.ErrorURI != tt.wantURI {
				t.Errorf("got (%q, %q, %q); want (%q, %q, %q)",
					re.ErrorCode, re.ErrorDescription, re.ErrorURI, tt.wantCode, tt.wantDesc, tt.wantURI)
			}
		})
	}
}

// isWholeToken reports whether clean must mask v in s: s holds v and v
// is long (longSecret bytes or more), or s holds v with neither a token
// character right before it ('=' allowed) nor right after it, full stops
// that end a sentence aside.
func isWholeToken(s, v string) bool {
	if len(v) >= longSecret {
		return strings.Contains(s, v)
	}
	tokenChar := func(r rune) bool {
		return unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("-._~+/=%", r)
	}
	for i := 0; i+len(v) <= len(s); i++ {
		if s[i:i+len(v)] != v {
			continue
		}
		if r, _ := utf8.DecodeLastRuneInString(s[:i]); i > 0 && tokenChar(r) && r != '=' {
			continue
		}
		rest := strings.TrimLeft(s[i+len(v):], ".")
		if r, _ := utf8.DecodeRuneInString(rest); rest != "" && tokenChar(r) {
			continue
		}
		return true
	}
	return false
}

func FuzzRedact(f *testing.F) {
	basic := base64.StdEncoding.EncodeToString([]byte("client:" + url.QueryEscape("p@ss w0rd")))
	for _, seed := range [][2]string{
		{"s", "slow_down"},
		{"s", `{"error":"slow_down","error_description":"too many requests"}`},
		{"cope", "invalid scope"},
		{"s", `client_secret=s&x "s"`},
		{"demo", "client demo unknown"},
		{"p@ss w0rd", "client_secret=p%40ss+w0rd auth Basic " + basic + " p@ss%20w0rd"},
		{"a;", "a;a;a;a;"},
		{"==", "a===b ==="},
		{"\t", "a\tb"},
		{"x", strings.Repeat("y ", 300) + "x"},
		{".", strings.Repeat("y", 600)},
		{"é", "café é"},
		{"\xff", "a\xffb \xff"},
		{"s", "Invalid value: s."},
		{"s", "file s.txt and s... then s.."},
		{"e", "e.g. e."},
		{"client-secret-0123456789", "Invalid value: client-secret-0123456789."},
		{"client-secret-0123456789", "xclient-secret-0123456789x and client-secret-0123456789=="},
		{"p@ss.w0rd/long+secret", "got client_secret=p%40ss.w0rd%2Flong%2Bsecret. auth Basic " +
			base64.StdEncoding.EncodeToString([]byte("client:"+url.QueryEscape("p@ss.w0rd/long+secret"))) + "."},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, secret, text string) {
		cfg := ClientCredentialsConfig{TokenURL: "https://idp.example/token", ClientID: "client", ClientSecret: secret}
		p := newClientCredentials(cfg)
		forms := p.secretForms()
		for _, v := range forms {
			if strings.Contains(v, "redacted") {
				t.Skip("the secret holds the marker's text")
			}
		}
		got := p.clean(text)

		body := got
		if len(text) > maxCleanLen {
			body = strings.TrimSuffix(got, "...")
		}
		for _, v := range forms {
			if v := strings.Map(printable, v); v != "" && isWholeToken(body, v) {
				t.Errorf("clean(%q) = %q holds %q as a whole token", text, got, v)
			}
		}

		cfg.ClientSecret = ""
		plain := newClientCredentials(cfg).clean(text)
		mapped := strings.Map(printable, text)
		mappedCut := strings.Map(printable, text[:min(len(text), maxCleanLen)])
		occurs, whole := false, false
		for _, v := range forms {
			mv := strings.Map(printable, v)
			occurs = occurs || strings.Contains(text, v) || strings.Contains(mapped, mv) || strings.Contains(mappedCut, mv)
			whole = whole || isWholeToken(mapped, mv)
		}
		if !occurs && got != plain {
			t.Errorf("clean(%q) = %q; want %q: the secret is not in it", text, got, plain)
		}
		// Not mangling: a secret found only inside longer values changes
		// nothing (below the length cap, whose cut is a boundary).
		if len(text) <= maxCleanLen && !whole && got != plain {
			t.Errorf("clean(%q) = %q; want %q: the secret is in it only inside longer values", text, got, plain)
		}
	})
}
