package oidcprovider_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/tests/oidcprovider"
	"github.com/go-tokenmanager/tokenmanager/users"
)

// The sign-in helpers against oidc-provider: the authorization code grant
// with PKCE through its real authorization endpoint and interactions (a
// stand-in login page signs the user in), and the device flow through its
// device authorization endpoint (a stand-in for the user entering the
// code). Each seeds the store, and providers.RefreshToken then rotates
// the seeded refresh token.

const (
	webApp   = "web-app"
	cliApp   = "cli-app"
	callback = "https://client.example/callback"
)

type signInRig struct {
	*oidcprovider.Server
	iss   *providers.Issuer
	store *users.FileStore
	keys  *users.Keys
	hc    *http.Client
}

func newSignInRig(t *testing.T) *signInRig {
	t.Helper()
	s := oidcprovider.Start(t, oidcprovider.Config{TokenTTL: time.Minute, Clients: []map[string]any{
		secretClientMetadata(),
		{
			"client_id": webApp, "token_endpoint_auth_method": "none",
			"grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"},
			"redirect_uris": []string{callback},
		},
		{
			"client_id": cliApp, "token_endpoint_auth_method": "none",
			"grant_types": []string{"urn:ietf:params:oauth:grant-type:device_code", "refresh_token"}, "response_types": []string{},
		},
	}})
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	iss, err := providers.NewIssuer(providers.IssuerConfig{Issuer: s.Issuer, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := users.NewKeys("k1", map[string][]byte{"k1": bytes.Repeat([]byte{9}, users.KeySize)})
	if err != nil {
		t.Fatal(err)
	}
	return &signInRig{Server: s, iss: iss, keys: keys, hc: hc,
		store: testutil.OpenFileStore(t, filepath.Join(t.TempDir(), "tokens.db"))}
}

// refreshes checks that the stored refresh token of id works, and
// rotates, through providers.RefreshToken.
func (r *signInRig) refreshes(t *testing.T, id users.Identity) {
	t.Helper()
	before, err := r.store.Load(context.Background(), id.String())
	if err != nil {
		t.Fatal(err)
	}
	p := providers.RefreshToken(providers.RefreshTokenConfig{Issuer: r.iss, Identity: id.String(), Store: r.store, Keys: r.keys,
		Auth: providers.NoClientAuth(id.Client), HTTPClient: r.hc})
	tok, err := p(context.Background())
	if err != nil {
		t.Fatalf("refreshing the seeded token: %v", err)
	}
	after, _ := r.store.Load(context.Background(), id.String())
	if after.Version != before.Version+1 {
		t.Errorf("version %d after a refresh of version %d; want the rotated token stored", after.Version, before.Version)
	}
	if v := introspect(t, r.hc, r.Issuer+"/token/introspection", tok.AccessToken); v["active"] != true || v["sub"] != id.User {
		t.Errorf("refreshed token introspects as %v", v)
	}
}

// signIn plays the browser: it follows the authorization URL through the
// provider's interactions (login, consent) to the redirect to the
// client's callback, and returns that callback's query.
func signIn(t *testing.T, authURL string) url.Values {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	var back *url.URL
	c := &http.Client{Jar: jar, Transport: &http.Transport{}, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if req.URL.Host == "client.example" {
			back = req.URL
			return http.ErrUseLastResponse
		}
		if len(via) > 10 {
			return errors.New("too many redirects")
		}
		return nil
	}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if back == nil {
		t.Fatalf("the sign-in ended with %d at %s, not at the callback", resp.StatusCode, resp.Request.URL)
	}
	return back.Query()
}

func TestSignIn_authorizationCodePKCE(t *testing.T) {
	r := newSignInRig(t)
	rec := &testutil.Recorder{}
	a, err := providers.NewAuthCode(providers.AuthCodeConfig{
		Issuer: r.iss, RedirectURL: callback, Scopes: []string{"openid", "offline_access"},
		AuthParams: url.Values{"prompt": {"consent"}, "login_hint": {"mary"}}, // oidc-provider grants offline_access only with consent
		Auth:       providers.NoClientAuth(webApp), Store: r.store, Keys: r.keys, Events: rec.Add, HTTPClient: r.hc,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mary := users.Identity{User: "mary", Client: webApp}

	// A wrong verifier: the server checks PKCE and refuses the code.
	req, err := a.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := a.Start(ctx)
	cb := signIn(t, req.URL)
	_, err = a.Exchange(ctx, providers.AuthRequest{State: req.State, Verifier: other.Verifier}, cb, mary)
	var re *providers.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("wrong verifier: %v; want invalid_grant", err)
	}

	req, err = a.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cb = signIn(t, req.URL)
	tok, err := a.Exchange(ctx, req, cb, mary)
	if err != nil {
		t.Fatal(err)
	}
	if v := introspect(t, r.hc, r.Issuer+"/token/introspection", tok.AccessToken); v["active"] != true || v["sub"] != "mary" {
		t.Errorf("the sign-in's access token introspects as %v", v)
	}
	if ev := testutil.EventsOf[messages.SignedIn](rec); len(ev) != 1 || ev[0].Identity != mary.String() {
		t.Errorf("SignedIn events %+v", ev)
	}
	r.refreshes(t, mary)

	// The code is single-use, and oidc-provider revokes the grant when it
	// comes back (RFC 6749 §4.1.2): the stored refresh token dies with it.
	if _, err := a.Exchange(ctx, req, cb, mary); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("second exchange of the code: %v; want invalid_grant", err)
	}
	p := providers.RefreshToken(providers.RefreshTokenConfig{Issuer: r.iss, Identity: mary.String(), Store: r.store, Keys: r.keys,
		Auth: providers.NoClientAuth(webApp), HTTPClient: r.hc})
	if _, err := p(ctx); !errors.Is(err, tokenmanager.ErrReauthRequired) {
		t.Errorf("refresh after the code's reuse: %v; want ErrReauthRequired", err)
	}
}

func TestSignIn_deviceFlow(t *testing.T) {
	r := newSignInRig(t)
	mock := clock.NewMock()
	rec := &testutil.Recorder{}
	d, err := providers.NewDeviceFlow(providers.DeviceFlowConfig{
		Issuer: r.iss, Scopes: []string{"openid", "offline_access"}, Auth: providers.NoClientAuth(cliApp),
		Store: r.store, Keys: r.keys, Events: rec.Add, Clock: mock, HTTPClient: r.hc,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	peter := users.Identity{User: "peter", Client: cliApp}
	auth, err := d.Start(ctx, peter)
	if err != nil {
		t.Fatal(err)
	}
	if auth.UserCode == "" || auth.VerificationURI != r.Issuer+"/device" || auth.Interval != 5*time.Second {
		t.Errorf("device authorization %v", auth)
	}
	done := make(chan error, 1)
	go func() {
		_, err := d.Wait(ctx, auth)
		done <- err
	}()
	testutil.AdvanceUntil(t, mock, time.Second, 30, "a pending poll", func() bool {
		return len(testutil.EventsOf[messages.DevicePollPending](rec)) >= 1
	})
	if ev := testutil.EventsOf[messages.DevicePollPending](rec); ev[0].Reason != "authorization_pending" {
		t.Errorf("first poll: %+v", ev[0])
	}
	r.Device(t, auth.UserCode, "peter", false)
	if werr := waitDone(t, mock, done); werr != nil {
		t.Fatal(werr)
	}
	r.refreshes(t, peter)

	// A refusal ends the flow with ErrAccessDenied.
	auth, err = d.Start(ctx, peter)
	if err != nil {
		t.Fatal(err)
	}
	r.Device(t, auth.UserCode, "", true)
	go func() {
		_, err := d.Wait(ctx, auth)
		done <- err
	}()
	if werr := waitDone(t, mock, done); !errors.Is(werr, providers.ErrAccessDenied) || !tokenmanager.IsPermanent(werr) {
		t.Errorf("refused: %v; want ErrAccessDenied", werr)
	}
}

// waitDone advances mock until Wait's error arrives on done.
func waitDone(t *testing.T, mock *clock.Mock, done chan error) error {
	t.Helper()
	var err error
	testutil.AdvanceUntil(t, mock, time.Second, 30, "Wait to return", func() bool {
		select {
		case err = <-done:
			return true
		default:
			return false
		}
	})
	return err
}
