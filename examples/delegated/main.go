// Command delegated calls an API on behalf of a user: the user signs in
// with the authorization code grant and PKCE (providers.AuthCode), which
// seals their refresh token into a file store; from then on three members
// of the service, each an owner of many identities (transport.NewMulti)
// with providers.RefreshToken, trade it for access tokens, rotating it in
// turn under the store's lock.
//
// Everything runs on loopback: the authorization server (PKCE, rotating
// refresh tokens with reuse detection) and the API are httptest servers,
// and the browser's redirect is played in-process.
//
//	go run ./examples/delegated
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/transport"
	"github.com/go-tokenmanager/tokenmanager/users"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "delegated:", err)
		os.Exit(1)
	}
}

func run(out io.Writer) error {
	ctx := context.Background()

	// The authorization server: /authorize, /token (authorization code
	// with PKCE, refresh token with rotation).
	as := &testutil.SignInServer{ClientID: "mail-app"}
	idp := httptest.NewServer(as)
	defer idp.Close()
	// The API accepts the access tokens the server issued and still
	// holds valid.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !as.Refresh.Live(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, "3 unread messages")
	}))
	defer api.Close()

	// The service's key and store. In production: users.ParseKeys of a
	// secret setting, and a store on a durable disk (or pgstore).
	key := make([]byte, users.KeySize)
	_, _ = rand.Read(key)
	keys, err := users.NewKeys("k1", map[string][]byte{"k1": key})
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "delegated")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	store, err := users.OpenFile(filepath.Join(dir, "tokens.db"))
	if err != nil {
		return err
	}
	defer store.Close()

	// 1. Sign-in: redirect the browser to req.URL, keep req in the
	// session, and at the callback exchange the code.
	signIn, err := providers.NewAuthCode(providers.AuthCodeConfig{
		AuthURL: idp.URL + "/authorize", TokenURL: idp.URL + "/token",
		RedirectURL: "http://127.0.0.1:8080/callback",
		Scopes:      []string{"openid", "offline_access"},
		Auth:        providers.NoClientAuth("mail-app"),
		Store:       store, Keys: keys,
	})
	if err != nil {
		return err
	}
	req, err := signIn.Start(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "sign-in: redirect the browser to %s/authorize?...&code_challenge_method=S256\n", idp.URL)
	callback, err := browser(req.URL)
	if err != nil {
		return err
	}
	ann := users.Identity{User: "ann", Client: "mail-app", Resource: api.URL}
	if _, err := signIn.Exchange(ctx, req, callback, ann); err != nil {
		return err
	}
	e, err := store.Load(ctx, ann.String())
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "callback: code exchanged, refresh token sealed and stored (version %d)\n", e.Version)

	// 2. Calls on the user's behalf from three members of the service
	// (here in one process), each an owner for every user, sharing the
	// store. Each member refreshes for itself, in turn: the store is a
	// users.Locker, so no two send the same refresh token, which the
	// server would punish by revoking the user's tokens. (In a cluster,
	// tokengrain gives the members one refresh per rollover.)
	var members []*transport.MultiRoundTripper
	for range 3 {
		m, err := transport.NewMulti(tokenmanager.OwnerSettings{
			SettingsFor: func(identity string) (tokenmanager.Settings, error) {
				return tokenmanager.Settings{GetCredentials: providers.RefreshToken(providers.RefreshTokenConfig{
					TokenURL: idp.URL + "/token", Identity: identity, Store: store, Keys: keys,
					Auth: providers.NoClientAuth("mail-app"),
				})}, nil
			},
		})
		if err != nil {
			return err
		}
		defer m.Close()
		members = append(members, m)
	}
	// All at once: each member's first call refreshes.
	logs := make([]bytes.Buffer, len(members))
	errs := make([]error, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() {
			for range 2 {
				if errs[i] = inbox(ctx, &logs[i], m, i+1, ann.String(), api.URL); errs[i] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	for i := range members {
		out.Write(logs[i].Bytes())
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if e, err = store.Load(ctx, ann.String()); err != nil {
		return err
	}
	fmt.Fprintf(out, "refresh token rotated by each member in turn and stored (version %d); token answers: %d (the sign-in, 3 refreshes), refresh tokens reused: %d\n",
		e.Version, as.Refresh.Refreshes(), as.Refresh.Reuses())
	return nil
}

// inbox calls the API as identity through member m.
func inbox(ctx context.Context, out io.Writer, m *transport.MultiRoundTripper, member int, identity, api string) error {
	r, err := http.NewRequestWithContext(transport.WithIdentity(ctx, identity), http.MethodGet, api+"/inbox", nil)
	if err != nil {
		return err
	}
	resp, err := m.Client().Do(r)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Fprintf(out, "member %d: GET /inbox as ann: %d %s\n", member, resp.StatusCode, body)
	if resp.StatusCode != http.StatusOK {
		return errors.New("the API refused the call")
	}
	return nil
}

// browser plays the user's browser: it opens the authorization URL, the
// user signs in, and the server redirects back to the app's callback,
// whose query it returns.
func browser(authURL string) (url.Values, error) {
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(authURL)
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
