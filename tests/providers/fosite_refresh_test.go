package providers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/storage"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/users"
)

// Tokens on behalf of a user against fosite, whose refresh token grant
// rotates every refresh token and, when a spent one comes back, revokes
// the family: the refresh tokens and access tokens of the grant.

const fositeUser = "user=peter|client=native-app"

// addUserClient registers a public client that may refresh tokens of
// the user peter, and returns peter's first refresh token, as a sign in
// gives it (here through the password grant, the shortest way to one).
func (f *fositeServer) addUserClient(t *testing.T) string {
	t.Helper()
	f.store.Clients["native-app"] = &fosite.DefaultClient{
		ID:         "native-app",
		Public:     true,
		GrantTypes: []string{"password", "refresh_token"},
		Scopes:     []string{"offline", "invoices:read"},
	}
	f.store.Users["peter"] = storage.MemoryUserRelation{Username: "peter", Password: "peter-password"}
	resp, err := http.PostForm(f.tokenURL, url.Values{
		"grant_type": {"password"}, "username": {"peter"}, "password": {"peter-password"},
		"client_id": {"native-app"}, "scope": {"offline invoices:read"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.RefreshToken == "" {
		t.Fatalf("sign in: status %d, %v; want a refresh token", resp.StatusCode, err)
	}
	return body.RefreshToken
}

func userKeys(t *testing.T) *users.Keys {
	t.Helper()
	k, err := users.NewKeys("k1", map[string][]byte{"k1": bytes.Repeat([]byte{3}, users.KeySize)})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func seededStore(t *testing.T, path string, keys *users.Keys, rt string) *users.FileStore {
	t.Helper()
	s := testutil.OpenFileStore(t, path)
	if rt != "" {
		if _, err := users.Seed(context.Background(), s, keys, fositeUser, rt); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (f *fositeServer) userConfig(store users.Store, keys *users.Keys) providers.RefreshTokenConfig {
	return providers.RefreshTokenConfig{
		TokenURL: f.tokenURL, Identity: fositeUser, Store: store, Keys: keys,
		Auth: providers.NoClientAuth("native-app"), Scopes: []string{"offline", "invoices:read"},
	}
}

// TestFosite_refreshManaged: the managed refresher makes one refresh
// for many requests and one per early refresh; every rotation is stored
// and no refresh is refused.
func TestFosite_refreshManaged(t *testing.T) {
	f := newFosite(t)
	keys := userKeys(t)
	store := seededStore(t, filepath.Join(t.TempDir(), "tokens.db"), keys, f.addUserClient(t))
	rt, mock := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: providers.RefreshToken(f.userConfig(store, keys))}, nil)
	rec := testutil.Record(t, rt)
	ctx := context.Background()
	testutil.Burst(t, 20, rt.Token)
	for i := 2; i <= 4; i++ {
		// fosite's access tokens last an hour: the early refresh comes
		// 10s before.
		testutil.AdvanceUntil(t, mock, time.Minute, 120, "early refresh", func() bool {
			return len(testutil.EventsOf[messages.RefreshTokenRotated](rec)) >= i
		})
	}
	tok, err := rt.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := f.check(ctx, tok.AccessToken); !ok || id != "native-app" {
		t.Fatalf("the last access token is not live (client %q)", id)
	}
	if n := rec.Count("token_request_failed"); n != 0 {
		t.Fatalf("%d failed refreshes; want none", n)
	}
	e, err := store.Load(ctx, fositeUser)
	if err != nil || e.Version != 5 {
		t.Fatalf("stored version %d, %v; want 5 (seed + 4 rotations)", e.Version, err)
	}
}

// TestFosite_independentRefreshersRevokeTheFamily: two refreshers of
// peter without a shared owner (two processes, each with a copy of the
// token) spend the same refresh token: fosite sees the reuse and revokes
// the family; both must have peter sign in again.
func TestFosite_independentRefreshersRevokeTheFamily(t *testing.T) {
	f := newFosite(t)
	keys := userKeys(t)
	seed := f.addUserClient(t)
	a := providers.RefreshToken(f.userConfig(seededStore(t, filepath.Join(t.TempDir(), "a.db"), keys, seed), keys))
	b := providers.RefreshToken(f.userConfig(seededStore(t, filepath.Join(t.TempDir(), "b.db"), keys, seed), keys))
	ctx := context.Background()
	tokA, err := a(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b(ctx); !errors.Is(err, tokenmanager.ErrReauthRequired) {
		t.Fatalf("second refresher: %v; want ErrReauthRequired", err)
	}
	if _, ok := f.check(ctx, tokA.AccessToken); ok {
		t.Fatal("the first refresher's access token is still live; want the family revoked")
	}
	if _, err := a(ctx); !errors.Is(err, tokenmanager.ErrReauthRequired) {
		t.Fatalf("first refresher after the reuse: %v; want ErrReauthRequired", err)
	}
}

// TestFosite_restart: a new manager on the same store file, three times,
// goes on with the rotated token; no refresh is refused.
func TestFosite_restart(t *testing.T) {
	f := newFosite(t)
	keys := userKeys(t)
	path := filepath.Join(t.TempDir(), "tokens.db")
	seededStore(t, path, keys, f.addUserClient(t)).Close()
	ctx := context.Background()
	for round := range 3 {
		store := seededStore(t, path, keys, "")
		rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: providers.RefreshToken(f.userConfig(store, keys))}, nil)
		tok, err := rt.Token(ctx)
		if err != nil {
			t.Fatalf("manager %d: %v", round+1, err)
		}
		if _, ok := f.check(ctx, tok.AccessToken); !ok {
			t.Fatalf("manager %d: access token not live", round+1)
		}
		rt.Close()
		store.Close()
	}
}
