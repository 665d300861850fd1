package bench

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"

	"golang.org/x/oauth2"

	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/users"
)

// BenchmarkSignIn measures one whole sign-in with the authorization code
// and PKCE against a loopback server (testutil.SignInServer): a new
// verifier and state, the authorization request (the browser's redirect,
// played by an http.Client), the code exchange, and the refresh token
// sealed and stored durably in a users.FileStore. Rows: oauth2
// (oauth2.Config's AuthCodeURL and Exchange with a verifier, then
// users.Seed) and tokenmanager (providers.AuthCode's Start and Exchange,
// which seeds). The server and the store are the same for both.
func BenchmarkSignIn(b *testing.B) {
	for _, row := range signInRows {
		b.Run(row.name, func(b *testing.B) {
			env := newSignInEnv(b)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := row.run(ctx, env); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var signInRows = []struct {
	name string
	run  func(ctx context.Context, env *signInEnv) error
}{
	{"oauth2", signInOAuth2},
	{"tokenmanager", signInTokenManager},
}

// TestSignInScenarios runs each row of BenchmarkSignIn twice: each signs
// the user in and stores a new refresh token.
func TestSignInScenarios(t *testing.T) {
	for _, row := range signInRows {
		t.Run(row.name, func(t *testing.T) {
			env := newSignInEnv(t)
			for i := range 2 {
				if err := row.run(context.Background(), env); err != nil {
					t.Fatal(err)
				}
				if e, err := env.store.Load(context.Background(), signInUser.String()); err != nil || e.Version != uint64(i+1) {
					t.Errorf("after sign-in %d: version %d, %v", i+1, e.Version, err)
				}
			}
		})
	}
}

type signInEnv struct {
	url     string
	store   *users.FileStore
	keys    *users.Keys
	browser *http.Client
	hc      *http.Client
	auth    *providers.AuthCode
	conf    *oauth2.Config
}

const signInRedirect = "http://127.0.0.1:1/callback"

var signInUser = users.Identity{User: "ann", Client: "app"}

func newSignInEnv(b testing.TB) *signInEnv {
	srv := httptest.NewServer(&testutil.SignInServer{ClientID: "app"})
	b.Cleanup(srv.Close)
	env := &signInEnv{url: srv.URL, store: testutil.OpenFileStore(b, filepath.Join(b.TempDir(), "tokens.db")),
		browser: &http.Client{Transport: &http.Transport{}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		hc:      &http.Client{Transport: &http.Transport{}}}
	b.Cleanup(env.browser.CloseIdleConnections)
	b.Cleanup(env.hc.CloseIdleConnections)
	var err error
	if env.keys, err = users.NewKeys("k1", map[string][]byte{"k1": bytes.Repeat([]byte{7}, users.KeySize)}); err != nil {
		b.Fatal(err)
	}
	env.auth, err = providers.NewAuthCode(providers.AuthCodeConfig{AuthURL: srv.URL + "/authorize", TokenURL: srv.URL + "/token",
		RedirectURL: signInRedirect, Scopes: []string{"offline_access"}, Auth: providers.NoClientAuth("app"),
		Store: env.store, Keys: env.keys, HTTPClient: env.hc})
	if err != nil {
		b.Fatal(err)
	}
	env.conf = &oauth2.Config{ClientID: "app", RedirectURL: signInRedirect, Scopes: []string{"offline_access"},
		Endpoint: oauth2.Endpoint{AuthURL: srv.URL + "/authorize", TokenURL: srv.URL + "/token", AuthStyle: oauth2.AuthStyleInParams}}
	return env
}

// callback plays the browser: the query of the redirect to the app.
func (env *signInEnv) callback(authURL string) (url.Values, error) {
	resp, err := env.browser.Get(authURL)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return nil, err
	}
	return loc.Query(), nil
}

func signInOAuth2(ctx context.Context, env *signInEnv) error {
	verifier, state := oauth2.GenerateVerifier(), oauth2.GenerateVerifier()
	cb, err := env.callback(env.conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)))
	if err != nil {
		return err
	}
	if cb.Get("state") != state {
		return providers.ErrStateMismatch
	}
	tok, err := env.conf.Exchange(context.WithValue(ctx, oauth2.HTTPClient, env.hc), cb.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		return err
	}
	_, err = users.Seed(ctx, env.store, env.keys, signInUser.String(), tok.RefreshToken)
	return err
}

func signInTokenManager(ctx context.Context, env *signInEnv) error {
	req, err := env.auth.Start(ctx)
	if err != nil {
		return err
	}
	cb, err := env.callback(req.URL)
	if err != nil {
		return err
	}
	_, err = env.auth.Exchange(ctx, req, cb, signInUser)
	return err
}
