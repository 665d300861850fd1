package oidcprovider_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/tests/oidcprovider"
	"github.com/go-tokenmanager/tokenmanager/users"
)

// Tokens on behalf of a user against oidc-provider, which rotates the
// refresh token on every use and revokes the whole grant when a spent one
// comes back.

const nativeApp = "native-app"

var userIdentity = users.Identity{User: "peter", Client: nativeApp}.String()

type userServer struct {
	*oidcprovider.Server
	tokenURL string
	keys     *users.Keys
	hc       *http.Client
}

func startUserServer(t *testing.T) *userServer {
	t.Helper()
	s := oidcprovider.Start(t, oidcprovider.Config{TokenTTL: time.Minute, Clients: []map[string]any{
		secretClientMetadata(),
		{
			"client_id": nativeApp, "token_endpoint_auth_method": "none",
			"grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"},
			"redirect_uris": []string{"https://client.example/callback"},
		},
	}})
	keys, err := users.NewKeys("k1", map[string][]byte{"k1": bytes.Repeat([]byte{9}, users.KeySize)})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	return &userServer{Server: s, tokenURL: s.Issuer + "/token", keys: keys, hc: hc}
}

// store opens the store file at path, seeding it with rt unless rt is
// empty.
func (u *userServer) store(t *testing.T, path, rt string) *users.FileStore {
	t.Helper()
	s := testutil.OpenFileStore(t, path)
	if rt != "" {
		if _, err := users.Seed(context.Background(), s, u.keys, userIdentity, rt); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (u *userServer) provider(store users.Store) tokenmanager.TokenProvider {
	return providers.RefreshToken(providers.RefreshTokenConfig{
		TokenURL: u.tokenURL, Identity: userIdentity, Store: store, Keys: u.keys,
		Auth: providers.NoClientAuth(nativeApp), HTTPClient: u.hc,
	})
}

func (u *userServer) active(t *testing.T, accessToken string) bool {
	t.Helper()
	v := introspect(t, u.hc, u.Issuer+"/token/introspection", accessToken)
	return v["active"] == true
}

// TestUsers_managedRotation: the managed refresher makes one refresh for
// many requests and one per early refresh, each rotation stored; none is
// refused.
func TestUsers_managedRotation(t *testing.T) {
	u := startUserServer(t)
	store := u.store(t, filepath.Join(t.TempDir(), "tokens.db"), u.RefreshToken(t, nativeApp, "peter", "openid offline_access"))
	rt, mock := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: u.provider(store)}, nil)
	rec := testutil.Record(t, rt)
	ctx := context.Background()
	testutil.Burst(t, 20, rt.Token)
	if e, err := store.Load(ctx, userIdentity); err != nil || e.Version != 2 {
		t.Fatalf("20 requests at cold start: stored version %d, %v; want 2 (one rotation)", e.Version, err)
	}
	testutil.WaitEvents[messages.RefreshTokenRotated](t, rec, 1)
	for want := 2; want <= 4; want++ {
		// Access tokens last a minute: the early refresh comes 10s before.
		testutil.AdvanceUntil(t, mock, 5*time.Second, 40, "early refresh", func() bool {
			return len(testutil.EventsOf[messages.RefreshTokenRotated](rec)) >= want
		})
	}
	tok, err := rt.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !u.active(t, tok.AccessToken) {
		t.Fatal("the last access token is not active")
	}
	if n := rec.Count("token_request_failed"); n != 0 {
		t.Fatalf("%d failed refreshes; want none", n)
	}
	if e, err := store.Load(ctx, userIdentity); err != nil || e.Version != 5 {
		t.Fatalf("stored version %d, %v; want 5 (seed + 4 rotations)", e.Version, err)
	}
}

// TestUsers_independentRefreshersRevokeTheGrant: two refreshers of peter
// without a shared owner spend the same refresh token; oidc-provider
// sees it used twice and revokes the grant: the first refresher's access
// token dies too, and both must have peter sign in again.
func TestUsers_independentRefreshersRevokeTheGrant(t *testing.T) {
	u := startUserServer(t)
	seed := u.RefreshToken(t, nativeApp, "peter", "openid offline_access")
	a := u.provider(u.store(t, filepath.Join(t.TempDir(), "a.db"), seed))
	b := u.provider(u.store(t, filepath.Join(t.TempDir(), "b.db"), seed))
	ctx := context.Background()
	tokA, err := a(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !u.active(t, tokA.AccessToken) {
		t.Fatal("the first refresher's access token is not active")
	}
	_, err = b(ctx)
	var re *providers.ReauthError
	if !errors.Is(err, tokenmanager.ErrReauthRequired) || !errors.As(err, &re) || re.Identity != userIdentity {
		t.Fatalf("second refresher: %v; want a ReauthError for %q", err, userIdentity)
	}
	if u.active(t, tokA.AccessToken) {
		t.Fatal("the first refresher's access token is still active; want the grant revoked")
	}
	if _, err := a(ctx); !errors.Is(err, tokenmanager.ErrReauthRequired) {
		t.Fatalf("first refresher after the reuse: %v; want ErrReauthRequired", err)
	}
}

// TestUsers_restart: a new manager on the same store file, three times,
// goes on with the rotated refresh token; none is refused.
func TestUsers_restart(t *testing.T) {
	u := startUserServer(t)
	path := filepath.Join(t.TempDir(), "tokens.db")
	u.store(t, path, u.RefreshToken(t, nativeApp, "peter", "openid offline_access")).Close()
	ctx := context.Background()
	for round := range 3 {
		store := u.store(t, path, "")
		rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: u.provider(store)}, nil)
		tok, err := rt.Token(ctx)
		if err != nil {
			t.Fatalf("manager %d: %v", round+1, err)
		}
		if !u.active(t, tok.AccessToken) {
			t.Fatalf("manager %d: access token not active", round+1)
		}
		rt.Close()
		store.Close()
	}
}
