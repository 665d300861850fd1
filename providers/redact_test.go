package providers

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestSecrets_echoedWithFullStop checks that every kind of secret a
// request carries is redacted when a server echoes it at the end of a
// sentence ("Invalid value: <value>."), in each form it took: raw,
// URL-encoded, path-escaped, and inside HTTP Basic credentials.
func TestSecrets_echoedWithFullStop(t *testing.T) {
	const (
		longSecret      = "p@ss.w0rd/long+secret"
		shortSecret     = "s3cr3t"
		clientAssertion = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjIn0.Y2xpZW50"
		bearer          = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJzdmMifQ.YmVhcmVy"
		subject         = "subject+token/value=="
		actor           = "actor%token value"
	)
	// The server echoes every value the request carried, each in all its
	// forms, each followed by a full stop.
	echo := func(w http.ResponseWriter, r *http.Request) {
		var desc []string
		for _, k := range []string{"client_secret", "client_assertion", "assertion", "subject_token", "actor_token"} {
			if v := r.PostForm.Get(k); v != "" {
				desc = append(desc, fmt.Sprintf("Invalid %s: %s. Encoded: %s. Escaped: %s.", k, v, url.QueryEscape(v), url.PathEscape(v)))
			}
		}
		if h := r.Header.Get("Authorization"); h != "" {
			desc = append(desc, "Invalid header: "+h+".")
		}
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": strings.Join(desc, " ")})
	}
	basic := func(id, secret string) string {
		return base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret)))
	}
	tests := []struct {
		name    string
		make    func(tokenURL string) *endpoint
		secrets []string // raw values
		extra   []string // other forms (Basic credentials)
	}{
		{name: "long client secret in the body", secrets: []string{longSecret},
			make: func(u string) *endpoint {
				return newClientCredentials(ClientCredentialsConfig{TokenURL: u, ClientID: "c", ClientSecret: longSecret, AuthStyle: AuthStyleInParams})
			}},
		{name: "long client secret in the header", extra: []string{basic("c", longSecret)},
			make: func(u string) *endpoint {
				return newClientCredentials(ClientCredentialsConfig{TokenURL: u, ClientID: "c", ClientSecret: longSecret, AuthStyle: AuthStyleInHeader})
			}},
		{name: "short client secret in the body", secrets: []string{shortSecret},
			make: func(u string) *endpoint {
				return newClientCredentials(ClientCredentialsConfig{TokenURL: u, ClientID: "c", ClientSecret: shortSecret, AuthStyle: AuthStyleInParams})
			}},
		{name: "short client secret in the header", extra: []string{basic("c", shortSecret)},
			make: func(u string) *endpoint {
				return newClientCredentialsGrant(GrantConfig{TokenURL: u, Auth: ClientSecret("c", shortSecret, AuthStyleInHeader)})
			}},
		{name: "client assertion", secrets: []string{clientAssertion},
			make: func(u string) *endpoint {
				return newClientCredentialsGrant(GrantConfig{TokenURL: u, Auth: ClientAssertion("c", staticAssertion(clientAssertion))})
			}},
		{name: "JWT bearer assertion", secrets: []string{bearer},
			make: func(u string) *endpoint {
				return newJWTBearer(JWTBearerConfig{TokenURL: u, Assertion: staticAssertion(bearer)})
			}},
		{name: "subject and actor tokens", secrets: []string{subject, actor},
			make: func(u string) *endpoint {
				return newTokenExchange(TokenExchangeConfig{TokenURL: u, SubjectToken: staticToken(subject), SubjectTokenType: TokenTypeJWT,
					ActorToken: staticToken(actor), ActorTokenType: TokenTypeJWT})
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := tokenServer(t, func(w http.ResponseWriter, r *http.Request) {
				if err := r.ParseForm(); err != nil {
					t.Error(err)
				}
				echo(w, r)
			})
			_, err := tt.make(srv.URL).fetch(context.Background())
			var re *RetrieveError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v; want a *RetrieveError", err)
			}
			text := fmt.Sprintf("%v %+v %#v", err, err, err)
			leaks := append([]string(nil), tt.extra...)
			for _, s := range tt.secrets {
				leaks = append(leaks, s, url.QueryEscape(s), url.PathEscape(s))
			}
			for _, leak := range leaks {
				if strings.Contains(text, leak) {
					t.Errorf("error text %q shows %q", text, leak)
				}
			}
			if !strings.Contains(re.ErrorDescription, "[redacted].") {
				t.Errorf("ErrorDescription = %q; want the echoed values shown as [redacted].", re.ErrorDescription)
			}
		})
	}
}

// TestConfigs_neverPrinted pins that printing, logging or encoding as JSON
// any grant's config never shows its client secret, its Auth's secret or
// a password in its TokenURL.
func TestConfigs_neverPrinted(t *testing.T) {
	const secret = "hunter2-secret"
	tokenURL := "https://admin:" + secret + "@idp.example/token"
	auth := ClientSecret("c", secret, AuthStyleInParams)
	values := []any{
		ClientCredentialsConfig{TokenURL: tokenURL, ClientID: "c", ClientSecret: secret, HTTPClient: &http.Client{}},
		GrantConfig{TokenURL: tokenURL, Auth: auth},
		JWTBearerConfig{TokenURL: tokenURL, Assertion: staticAssertion(secret), Auth: auth},
		TokenExchangeConfig{TokenURL: tokenURL, SubjectToken: staticToken(secret), SubjectTokenType: TokenTypeJWT, Auth: auth},
	}
	check := func(what, text string) {
		t.Helper()
		if strings.Contains(text, secret) {
			t.Errorf("%s = %.300q shows the secret", what, text)
		}
	}
	for _, v := range values {
		for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
			check(fmt.Sprintf("Sprintf(%q, %T)", format, v), fmt.Sprintf(format, v))
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Errorf("json.Marshal(%T): %v", v, err)
		}
		check(fmt.Sprintf("json.Marshal(%T)", v), string(b))
		b, err = json.Marshal([]any{v})
		if err != nil {
			t.Errorf("json.Marshal([]any{%T}): %v", v, err)
		}
		check(fmt.Sprintf("json.Marshal([]any{%T})", v), string(b))
		var logged bytes.Buffer
		for _, h := range []slog.Handler{slog.NewJSONHandler(&logged, nil), slog.NewTextHandler(&logged, nil)} {
			slog.New(h).Info("config", "cfg", v, "in a slice", []any{v})
		}
		check(fmt.Sprintf("slog of %T", v), logged.String())
	}
	got := fmt.Sprint(values[0])
	want := `ClientCredentialsConfig{TokenURL:"https://admin:xxxxx@idp.example/token" ClientID:"c" ClientSecret:[redacted] ` +
		`Scopes:[] EndpointParams:map[] AuthStyle:AuthStyleAutoDetect HTTPClient:set AllowInsecureHTTP:false}`
	if got != want {
		t.Errorf("ClientCredentialsConfig prints as\n%s\nwant\n%s", got, want)
	}
}
