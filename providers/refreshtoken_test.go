package providers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/users"
)

const userID = "user=ann|client=app|resource=https%3A%2F%2Fapi"

// userFixture is a rotating token endpoint, a file store and keys, with
// a refresh token for userID seeded.
type userFixture struct {
	srv   *testutil.RefreshServer
	url   string
	path  string
	store *users.FileStore
	keys  *users.Keys
	seed  string
}

func newUserFixture(t *testing.T) *userFixture {
	t.Helper()
	f := &userFixture{srv: &testutil.RefreshServer{}, path: filepath.Join(t.TempDir(), "tokens.db")}
	hs := httptest.NewServer(f.srv)
	t.Cleanup(hs.Close)
	f.url = hs.URL + "/token"
	f.store = testutil.OpenFileStore(t, f.path)
	var err error
	if f.keys, err = users.NewKeys("k1", map[string][]byte{"k1": bytes.Repeat([]byte{7}, users.KeySize)}); err != nil {
		t.Fatal(err)
	}
	f.seed = f.srv.Issue()
	if _, err := users.Seed(context.Background(), f.store, f.keys, userID, f.seed); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *userFixture) config(store users.Store) providers.RefreshTokenConfig {
	return providers.RefreshTokenConfig{
		TokenURL: f.url, Identity: userID, Store: store, Keys: f.keys,
		Auth: providers.NoClientAuth("app"),
	}
}

// stored returns the refresh token stored for userID, and its version.
func (f *userFixture) stored(t *testing.T, s users.Store) (string, uint64) {
	t.Helper()
	e, err := s.Load(context.Background(), userID)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	rt, _, err := f.keys.Open(userID, e.Sealed)
	if err != nil {
		t.Fatal(err)
	}
	return string(rt), e.Version
}

func TestRefreshToken_rotatesAndStores(t *testing.T) {
	f := newUserFixture(t)
	p := providers.RefreshToken(f.config(f.store))
	prev := f.seed
	for i := range 3 {
		tok, err := p(context.Background())
		if err != nil {
			t.Fatalf("refresh %d: %v", i+1, err)
		}
		if !f.srv.Live(tok.AccessToken) || tok.ExpiresIn != 3600 {
			t.Fatalf("refresh %d: token %+v not live", i+1, tok)
		}
		rt, v := f.stored(t, f.store)
		if rt == prev || v != uint64(i+2) {
			t.Fatalf("refresh %d: stored version %d, rotated %v; want version %d holding the new token", i+1, v, rt != prev, i+2)
		}
		prev = rt
	}
	if f.srv.Reuses() != 0 || f.srv.Refreshes() != 3 {
		t.Fatalf("%d refreshes, %d reuses; want 3, 0", f.srv.Refreshes(), f.srv.Reuses())
	}
}

// TestRefreshToken_managedOneRefresh: many requests at cold start and at
// every early refresh make one refresh each; each rotation is stored
// and published before its access token is handed out.
func TestRefreshToken_managedOneRefresh(t *testing.T) {
	f := newUserFixture(t)
	f.srv.ExpiresIn = 60
	var saves atomic.Int64
	store := &hookStore{Store: f.store, afterSave: func() { saves.Add(1) }}
	var handedOut []int64 // saves done when each new token was handed out
	var mu sync.Mutex
	cfg := f.config(store)
	inner := providers.RefreshToken(cfg)
	rt, mock := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: func(ctx context.Context) (tokenmanager.Token, error) {
		tok, err := inner(ctx)
		mu.Lock()
		handedOut = append(handedOut, saves.Load())
		mu.Unlock()
		return tok, err
	}}, nil)
	rec := testutil.Record(t, rt)
	ctx := context.Background()
	testutil.Burst(t, 20, rt.Token)
	if n := f.srv.Refreshes(); n != 1 {
		t.Fatalf("20 requests at cold start made %d refreshes; want 1", n)
	}
	for i := 2; i <= 4; i++ {
		// The early refresh comes at expiry - RefreshBuffer, 50s on.
		testutil.AdvanceUntil(t, mock, 5*time.Second, 40, "early refresh", func() bool {
			return f.srv.Refreshes() == int64(i)
		})
		if _, err := rt.Token(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ev := testutil.WaitEvents[messages.RefreshTokenRotated](t, rec, 4)
	for i, e := range ev {
		if e.Identity != userID || e.Version != uint64(i+2) || e.KeyID != "k1" {
			t.Errorf("rotation event %d = %+v; want identity %q, version %d, key k1", i, e, userID, i+2)
		}
		if messages.IdentityOf(e) != userID {
			t.Errorf("IdentityOf(%T) = %q", e, messages.IdentityOf(e))
		}
	}
	mu.Lock()
	for i, n := range handedOut {
		if n != int64(i+1) {
			t.Errorf("token %d handed out after %d saves; want its rotation saved first (%d)", i+1, n, i+1)
		}
	}
	mu.Unlock()
	if f.srv.Reuses() != 0 {
		t.Fatalf("%d reuses; want none", f.srv.Reuses())
	}
}

// TestRefreshToken_independentRefreshersRevokeTheFamily: two refreshers
// of one user that share no owner (two processes, each with a copy of
// the token) spend the same refresh token; the server sees the reuse and
// revokes the family, and both must sign in again.
func TestRefreshToken_independentRefreshersRevokeTheFamily(t *testing.T) {
	f := newUserFixture(t)
	other := testutil.OpenFileStore(t, filepath.Join(t.TempDir(), "replica.db"))
	if _, err := users.Seed(context.Background(), other, f.keys, userID, f.seed); err != nil {
		t.Fatal(err)
	}
	a := providers.RefreshToken(f.config(f.store))
	b := providers.RefreshToken(f.config(other))
	tokA, err := a(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = b(context.Background())
	if !errors.Is(err, tokenmanager.ErrReauthRequired) {
		t.Fatalf("second refresher: err = %v; want ErrReauthRequired", err)
	}
	if f.srv.Reuses() != 1 || f.srv.Live(tokA.AccessToken) {
		t.Fatalf("reuses %d, first token live %v; want the family revoked", f.srv.Reuses(), f.srv.Live(tokA.AccessToken))
	}
	if _, err := a(context.Background()); !errors.Is(err, tokenmanager.ErrReauthRequired) {
		t.Fatalf("first refresher after the revocation: err = %v; want ErrReauthRequired", err)
	}
}

// newRefusedFixture is a user fixture whose stored refresh token the
// server does not know (it answers invalid_grant), served at f.url
// through a handler counting the token requests.
func newRefusedFixture(t *testing.T) (*userFixture, *atomic.Int64) {
	t.Helper()
	f := newUserFixture(t)
	if _, err := users.Seed(context.Background(), f.store, f.keys, userID, "rt-unknown-to-the-server"); err != nil {
		t.Fatal(err)
	}
	requests := new(atomic.Int64)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		f.srv.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	f.url = hs.URL
	return f, requests
}

// TestRefreshToken_invalidGrant: a refused refresh token is permanent
// for the identity: one typed error, one event, the entry removed, and
// the token is not sent again.
func TestRefreshToken_invalidGrant(t *testing.T) {
	f, requests := newRefusedFixture(t)
	cfg := f.config(f.store)
	rt, mock := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: providers.RefreshToken(cfg)}, nil)
	rec := testutil.Record(t, rt)
	_, err := rt.Token(context.Background())
	var re *providers.ReauthError
	if !errors.Is(err, tokenmanager.ErrReauthRequired) || !errors.As(err, &re) || re.Identity != userID || !tokenmanager.IsPermanent(err) {
		t.Fatalf("err = %v; want a permanent *ReauthError for %q", err, userID)
	}
	var retrieve *providers.RetrieveError
	if !errors.As(err, &retrieve) || retrieve.ErrorCode != "invalid_grant" {
		t.Fatalf("err = %v; want it to wrap the invalid_grant answer", err)
	}
	revoked := testutil.WaitEvents[messages.RefreshTokenRevoked](t, rec, 1)
	if revoked[0].Identity != userID || !errors.Is(revoked[0].Err, tokenmanager.ErrReauthRequired) {
		t.Fatalf("event %+v", revoked[0])
	}
	if _, err := f.store.Load(context.Background(), userID); !errors.Is(err, users.ErrNotFound) {
		t.Fatalf("entry after invalid_grant: %v; want it removed", err)
	}
	for range 5 {
		mock.Add(time.Minute)
		if _, err := rt.Token(context.Background()); !errors.Is(err, tokenmanager.ErrReauthRequired) {
			t.Fatalf("later request: %v; want ErrReauthRequired", err)
		}
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("%d token requests; want the refused token sent once", n)
	}
	if n := rec.Count("refresh_token_revoked"); n != 1 {
		t.Fatalf("%d revoked events; want 1", n)
	}
}

// TestRefreshToken_deleteFails: after invalid_grant, a store that fails
// to remove the refused token keeps it; later fetches do not send it
// again, but ask the user to sign in and try the removal again.
func TestRefreshToken_deleteFails(t *testing.T) {
	f, requests := newRefusedFixture(t)
	store := &hookStore{Store: f.store}
	store.failDeletes.Store(2)
	cfg := f.config(store)
	p := providers.RefreshToken(cfg)
	for i := range 3 {
		_, err := p(context.Background())
		var retrieve *providers.RetrieveError
		if !errors.Is(err, tokenmanager.ErrReauthRequired) || !errors.As(err, &retrieve) || retrieve.ErrorCode != "invalid_grant" {
			t.Fatalf("fetch %d: %v; want ErrReauthRequired wrapping the invalid_grant answer", i+1, err)
		}
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("%d token requests; want the refused token sent once", n)
	}
	if _, err := f.store.Load(context.Background(), userID); !errors.Is(err, users.ErrNotFound) {
		t.Fatalf("entry after the third fetch: %v; want it removed", err)
	}
}

// TestRefreshToken_restart: a new manager on the same store file goes on
// with the rotated token, without invalid_grant.
func TestRefreshToken_restart(t *testing.T) {
	f := newUserFixture(t)
	f.store.Close() // the first process ends
	for round := range 3 {
		store := testutil.OpenFileStore(t, f.path)
		rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: providers.RefreshToken(f.config(store))}, nil)
		if _, err := rt.Token(context.Background()); err != nil {
			t.Fatalf("manager %d: %v", round+1, err)
		}
		rt.Close()
		store.Close()
	}
	if f.srv.Refreshes() != 3 || f.srv.Reuses() != 0 {
		t.Fatalf("%d refreshes, %d reuses; want 3, 0", f.srv.Refreshes(), f.srv.Reuses())
	}
}

// TestRefreshToken_saveFails: when the rotated token cannot be saved the
// access token is withheld; the next fetch saves the kept token first
// and refreshes with it, never with the spent one.
func TestRefreshToken_saveFails(t *testing.T) {
	f := newUserFixture(t)
	store := &hookStore{Store: f.store}
	store.failSaves.Store(1)
	p := providers.RefreshToken(f.config(store))
	tok, err := p(context.Background())
	if err == nil || tokenmanager.IsPermanent(err) || tok.AccessToken != "" {
		t.Fatalf("fetch with a failing save = %+v, %v; want no token and a temporary error", tok, err)
	}
	if _, v := f.stored(t, f.store); v != 1 {
		t.Fatalf("version %d after a failed save; want 1", v)
	}
	if _, err := p(context.Background()); err != nil {
		t.Fatalf("next fetch: %v", err)
	}
	if _, v := f.stored(t, f.store); v != 3 {
		t.Fatalf("version %d; want 3 (the kept token, then the next rotation)", v)
	}
	if f.srv.Reuses() != 0 {
		t.Fatalf("%d reuses; want none: the spent token must not be sent again", f.srv.Reuses())
	}
}

// TestRefreshToken_saveOutlivesCancelledFetch: once the server has
// answered with a rotated token, the old one is spent; a fetch cancelled
// at that moment (its manager closing) still saves the new one.
func TestRefreshToken_saveOutlivesCancelledFetch(t *testing.T) {
	f := newUserFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := &ctxStore{Store: f.store}
	cfg := f.config(store)
	cfg.HTTPClient = &http.Client{Transport: cancelAfterAnswer{base: http.DefaultTransport, cancel: cancel}}
	providers.RefreshToken(cfg)(ctx) // its outcome may be the cancellation; the save is what counts
	if _, v := f.stored(t, f.store); v != 2 {
		t.Fatalf("version %d after a fetch cancelled once the server rotated; want 2 (the rotated token saved)", v)
	}
	if got, _ := f.stored(t, f.store); func() bool { fam, ok := f.srv.Family(got); return !ok || fam.Newest != got }() {
		t.Fatal("the stored token is not the one the server issued last")
	}
}

// TestRefreshToken_exchangeOutlivesCancelledFetch: a fetch cancelled
// while the token endpoint answers (the manager closing, a grain moving
// to another member) still reads the answer and saves the rotated token:
// the server has spent the one sent.
func TestRefreshToken_exchangeOutlivesCancelledFetch(t *testing.T) {
	f := newUserFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := f.config(&ctxStore{Store: f.store})
	cfg.HTTPClient = &http.Client{Transport: cancelBeforeAnswer{base: http.DefaultTransport, cancel: cancel}}
	providers.RefreshToken(cfg)(ctx) // its outcome may be the cancellation; the save is what counts
	if _, v := f.stored(t, f.store); v != 2 {
		t.Fatalf("version %d after a fetch cancelled while the server answered; want 2 (the rotated token saved)", v)
	}
	if got, _ := f.stored(t, f.store); func() bool { fam, ok := f.srv.Family(got); return !ok || fam.Newest != got }() {
		t.Fatal("the stored token is not the one the server issued last")
	}
}

// cancelBeforeAnswer cancels the fetch's context once the token endpoint
// has answered, before the answer is read: the request's context ending
// then fails it, as net/http does.
type cancelBeforeAnswer struct {
	base   http.RoundTripper
	cancel context.CancelFunc
}

func (c cancelBeforeAnswer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(req.WithContext(context.WithoutCancel(req.Context())))
	c.cancel()
	if cerr := req.Context().Err(); cerr != nil {
		if err == nil {
			resp.Body.Close()
		}
		return nil, cerr
	}
	return resp, err
}

// ctxStore fails a Save whose context has ended, as a database driver
// does.
type ctxStore struct{ users.Store }

func (s *ctxStore) Save(ctx context.Context, id string, e users.Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.Store.Save(ctx, id, e)
}

// cancelAfterAnswer cancels the fetch's context as the token endpoint's
// answer arrives.
type cancelAfterAnswer struct {
	base   http.RoundTripper
	cancel context.CancelFunc
}

func (c cancelAfterAnswer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(req)
	c.cancel()
	return resp, err
}

// TestRefreshToken_replacedMeanwhile: an invalid_grant for a token that
// another writer had replaced is temporary, and the entry stays.
func TestRefreshToken_replacedMeanwhile(t *testing.T) {
	f := newUserFixture(t)
	if _, err := users.Seed(context.Background(), f.store, f.keys, userID, "rt-stale"); err != nil {
		t.Fatal(err)
	}
	store := &hookStore{Store: f.store, beforeDelete: func() {
		users.Seed(context.Background(), f.store, f.keys, userID, f.srv.Issue())
	}}
	_, err := providers.RefreshToken(f.config(store))(context.Background())
	if err == nil || tokenmanager.IsPermanent(err) || errors.Is(err, tokenmanager.ErrReauthRequired) {
		t.Fatalf("err = %v; want a temporary error", err)
	}
	if _, err := providers.RefreshToken(f.config(store))(context.Background()); err != nil {
		t.Fatalf("next fetch with the new stored token: %v", err)
	}
}

// TestRefreshToken_keyRotation: a token sealed under an old key is
// sealed anew under the current one, even without a rotation.
func TestRefreshToken_keyRotation(t *testing.T) {
	f := newUserFixture(t)
	f.srv.NoRotation = true
	rotated, err := users.NewKeys("k2", map[string][]byte{"k1": bytes.Repeat([]byte{7}, users.KeySize), "k2": bytes.Repeat([]byte{8}, users.KeySize)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.config(f.store)
	cfg.Keys = rotated
	if _, err := providers.RefreshToken(cfg)(context.Background()); err != nil {
		t.Fatal(err)
	}
	e, _ := f.store.Load(context.Background(), userID)
	rt, id, err := rotated.Open(userID, e.Sealed)
	if err != nil || id != "k2" || string(rt) != f.seed || e.Version != 2 {
		t.Fatalf("after refresh: key %q version %d same token %v, %v; want the same token under k2", id, e.Version, string(rt) == f.seed, err)
	}
	// Unchanged under the current key: no write.
	if _, err := providers.RefreshToken(cfg)(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e, _ := f.store.Load(context.Background(), userID); e.Version != 2 {
		t.Fatalf("version %d; want no write without rotation", e.Version)
	}
	// Without the key that sealed it, nothing is sent.
	only1, _ := users.NewKeys("k1", map[string][]byte{"k1": bytes.Repeat([]byte{7}, users.KeySize)})
	cfg.Keys = only1
	before := f.srv.Refreshes()
	if _, err := providers.RefreshToken(cfg)(context.Background()); !errors.Is(err, users.ErrUnknownKey) || !tokenmanager.IsPermanent(err) {
		t.Fatalf("err = %v; want a permanent ErrUnknownKey", err)
	}
	if f.srv.Refreshes() != before {
		t.Fatal("a refresh was sent without the token's key")
	}
}

// TestRefreshToken_resealFails: without a rotation, a failed save of the
// token sealed anew under the current key does not fail the refresh; the
// next refresh seals it again.
func TestRefreshToken_resealFails(t *testing.T) {
	f := newUserFixture(t)
	f.srv.NoRotation = true
	rotated, err := users.NewKeys("k2", map[string][]byte{"k1": bytes.Repeat([]byte{7}, users.KeySize), "k2": bytes.Repeat([]byte{8}, users.KeySize)})
	if err != nil {
		t.Fatal(err)
	}
	store := &hookStore{Store: f.store}
	store.failSaves.Store(1)
	cfg := f.config(store)
	cfg.Keys = rotated
	p := providers.RefreshToken(cfg)
	tok, err := p(context.Background())
	if err != nil || !f.srv.Live(tok.AccessToken) {
		t.Fatalf("refresh with a failing reseal = %+v, %v; want the access token", tok, err)
	}
	if _, v := f.stored(t, f.store); v != 1 {
		t.Fatalf("version %d; want 1 (the save failed)", v)
	}
	if _, err := p(context.Background()); err != nil {
		t.Fatal(err)
	}
	e, _ := f.store.Load(context.Background(), userID)
	if _, id, err := rotated.Open(userID, e.Sealed); err != nil || id != "k2" || e.Version != 2 {
		t.Fatalf("after the next refresh: key %q version %d, %v; want version 2 under k2", id, e.Version, err)
	}
}

// TestRefreshToken_noSecretsInErrors: a server echoing the refresh token
// in its error gets it redacted; no error or event shows a token.
func TestRefreshToken_noSecretsInErrors(t *testing.T) {
	f := newUserFixture(t)
	rtSecret := "rt-echoed-secret-value-0123456789"
	users.Seed(context.Background(), f.store, f.keys, userID, rtSecret)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":"invalid_grant","error_description":"token %s is not known"}`, r.PostForm.Get("refresh_token"))
	}))
	defer hs.Close()
	cfg := f.config(f.store)
	cfg.TokenURL = hs.URL
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: providers.RefreshToken(cfg)}, nil)
	rec := testutil.Record(t, rt)
	_, err := rt.Token(context.Background())
	if !errors.Is(err, tokenmanager.ErrReauthRequired) {
		t.Fatalf("err = %v", err)
	}
	testutil.WaitEvents[messages.RefreshTokenRevoked](t, rec, 1)
	texts := []string{fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)}
	for _, ev := range rec.All() {
		texts = append(texts, fmt.Sprintf("%+v", ev), fmt.Sprintf("%#v", ev))
	}
	for _, s := range texts {
		if strings.Contains(s, rtSecret) {
			t.Fatalf("the refresh token shows in %s", s)
		}
	}
	if !strings.Contains(err.Error(), "[redacted]") {
		t.Fatalf("err = %v; want the echo redacted", err)
	}
}

func TestRefreshTokenConfig_Validate(t *testing.T) {
	err := providers.RefreshTokenConfig{EndpointParams: map[string][]string{"refresh_token": {"x"}}}.Validate()
	for _, want := range []string{"TokenURL", "Identity", "Store", "Keys", "Auth", `"refresh_token"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v; want it to name %s", err, want)
		}
	}
	_, err = providers.RefreshToken(providers.RefreshTokenConfig{})(context.Background())
	if !tokenmanager.IsPermanent(err) {
		t.Fatalf("fetch with an invalid config: %v; want a permanent error", err)
	}
}

// hookStore wraps a store to fail saves or act around calls.
type hookStore struct {
	users.Store
	failSaves    atomic.Int64
	failDeletes  atomic.Int64
	afterSave    func()
	beforeDelete func()
}

func (s *hookStore) Save(ctx context.Context, id string, e users.Entry) error {
	if s.failSaves.Add(-1) >= 0 {
		return errors.New("disk full")
	}
	err := s.Store.Save(ctx, id, e)
	if err == nil && s.afterSave != nil {
		s.afterSave()
	}
	return err
}

func (s *hookStore) Delete(ctx context.Context, id string, v uint64) error {
	if s.beforeDelete != nil {
		s.beforeDelete()
	}
	if s.failDeletes.Add(-1) >= 0 {
		return errors.New("disk full")
	}
	return s.Store.Delete(ctx, id, v)
}

// TestRefreshToken_oneAtATime: a fetch the manager abandoned (after
// FetchTimeout) may still run when the next starts; the provider lets
// the next wait, so the same refresh token is never sent twice.
func TestRefreshToken_oneAtATime(t *testing.T) {
	f := newUserFixture(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	open := func() { releaseOnce.Do(func() { close(release) }) }
	var inFlight, most atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		f.srv.ServeHTTP(w, r)
	}))
	defer hs.Close()
	defer open() // before the server closes, even when the test fails
	cfg := f.config(f.store)
	cfg.TokenURL = hs.URL
	p := providers.RefreshToken(cfg)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := p(context.Background())
			errs <- err
		}()
	}
	testutil.Eventually(t, "the first refresh at the server", func() bool { return inFlight.Load() == 1 })
	testutil.Stays(t, "no second refresh while the first runs", func() bool { return inFlight.Load() == 1 })
	open()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if most.Load() != 1 || f.srv.Reuses() != 0 || f.srv.Refreshes() != 2 {
		t.Fatalf("at most %d refreshes at once, %d reuses, %d refreshes; want 1, 0, 2", most.Load(), f.srv.Reuses(), f.srv.Refreshes())
	}
}

// TestRefreshToken_crashWindow shows the window docs/users.md describes:
// the server rotated, and the process ended before the store held the
// new token (here: the save failed and the provider is gone). The store
// still holds the spent token; a server that rotates strictly refuses
// it, and the user must sign in again. With a grace period for the
// previous token the next process goes on.
func TestRefreshToken_crashWindow(t *testing.T) {
	for _, grace := range []bool{false, true} {
		t.Run(fmt.Sprintf("grace=%v", grace), func(t *testing.T) {
			f := newUserFixture(t)
			store := &hookStore{Store: f.store}
			store.failSaves.Store(1)
			if _, err := providers.RefreshToken(f.config(store))(context.Background()); err == nil {
				t.Fatal("the fetch whose save failed succeeded")
			}
			f.srv.Grace = grace
			_, err := providers.RefreshToken(f.config(f.store))(context.Background()) // the next process
			if grace && err != nil {
				t.Fatalf("with a grace period: %v; want the spent token accepted", err)
			}
			if !grace && !errors.Is(err, tokenmanager.ErrReauthRequired) {
				t.Fatalf("without a grace period: %v; want ErrReauthRequired", err)
			}
		})
	}
}

// TestRefreshToken_refusedAnswerKeepsRotation: an answer whose access
// token is refused (a fractional expires_in, no access_token) still
// rotated the refresh token; the new one is stored, so the next fetch
// does not send the spent one.
func TestRefreshToken_refusedAnswerKeepsRotation(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mangle func(map[string]any)
	}{
		{"fractional expires_in", func(m map[string]any) { m["expires_in"] = 3600.5 }},
		{"no access_token", func(m map[string]any) { delete(m, "access_token") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newUserFixture(t)
			var mangle atomic.Bool
			mangle.Store(true)
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !mangle.Load() {
					f.srv.ServeHTTP(w, r)
					return
				}
				rec := httptest.NewRecorder()
				f.srv.ServeHTTP(rec, r)
				var m map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
					t.Error(err)
				}
				tt.mangle(m)
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(m)
			}))
			defer hs.Close()
			cfg := f.config(f.store)
			cfg.TokenURL = hs.URL
			p := providers.RefreshToken(cfg)
			if _, err := p(context.Background()); err == nil {
				t.Fatal("fetch with a refused answer succeeded")
			}
			if rt, v := f.stored(t, f.store); rt == f.seed || v != 2 {
				t.Fatalf("stored version %d, rotated %v; want version 2 holding the rotated token", v, rt != f.seed)
			}
			mangle.Store(false)
			if _, err := p(context.Background()); err != nil {
				t.Fatalf("next fetch: %v", err)
			}
			if f.srv.Reuses() != 0 {
				t.Fatalf("%d reuses; want none", f.srv.Reuses())
			}
		})
	}
}

// logContext is a RoundTripper that prints each request's context, as a
// logging transport might.
type logContext struct {
	mu   sync.Mutex
	logs []string
}

func (l *logContext) RoundTrip(r *http.Request) (*http.Response, error) {
	l.mu.Lock()
	l.logs = append(l.logs, fmt.Sprint(r.Context()))
	l.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

// TestRefreshToken_contextHidesToken: the refresh token the provider puts
// in the request's context does not show when the context is printed.
func TestRefreshToken_contextHidesToken(t *testing.T) {
	f := newUserFixture(t)
	l := &logContext{}
	cfg := f.config(f.store)
	cfg.HTTPClient = &http.Client{Transport: l}
	if _, err := providers.RefreshToken(cfg)(context.Background()); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.logs) == 0 {
		t.Fatal("no request logged")
	}
	for _, s := range l.logs {
		if strings.Contains(s, f.seed) {
			t.Fatal("a printed context holds the refresh token")
		}
	}
}

// TestRefreshToken_nothingStored: an identity with nothing stored gets a
// permanent ReauthError, and RefreshTokenRevoked is published once, not
// at every fetch; a token stored again re-arms it.
func TestRefreshToken_nothingStored(t *testing.T) {
	f := newUserFixture(t)
	if err := f.store.Delete(context.Background(), userID, 1); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var events []messages.RefreshTokenRevoked
	ctx := protocol.WithPublish(context.Background(), func(ev messages.Event) {
		if r, ok := ev.(messages.RefreshTokenRevoked); ok {
			mu.Lock()
			events = append(events, r)
			mu.Unlock()
		}
	})
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(events) }
	p := providers.RefreshToken(f.config(f.store))
	for i := range 3 {
		_, err := p(ctx)
		if !errors.Is(err, tokenmanager.ErrReauthRequired) || !errors.Is(err, users.ErrNotFound) || !tokenmanager.IsPermanent(err) {
			t.Fatalf("fetch %d: %v; want a permanent ErrReauthRequired wrapping ErrNotFound", i+1, err)
		}
	}
	if n := count(); n != 1 {
		t.Fatalf("%d RefreshTokenRevoked events after 3 fetches; want 1", n)
	}
	if events[0].Identity != userID || !errors.Is(events[0].Err, tokenmanager.ErrReauthRequired) {
		t.Fatalf("event %+v", events[0])
	}
	if _, err := users.Seed(context.Background(), f.store, f.keys, userID, f.srv.Issue()); err != nil {
		t.Fatal(err)
	}
	if _, err := p(ctx); err != nil {
		t.Fatal(err)
	}
	_, v := f.stored(t, f.store)
	if err := f.store.Delete(context.Background(), userID, v); err != nil {
		t.Fatal(err)
	}
	p(ctx)
	if n := count(); n != 2 {
		t.Fatalf("%d RefreshTokenRevoked events; want 2 after a token was stored and removed again", n)
	}
}

// TestDrainRefreshes: DrainRefreshes does not return while a call whose
// fetch was cancelled is still exchanging its refresh token, and returns
// once the rotated token is saved.
func TestDrainRefreshes(t *testing.T) {
	f := newUserFixture(t)
	sent, release := make(chan struct{}), make(chan struct{})
	cfg := f.config(f.store)
	cfg.HTTPClient = &http.Client{Transport: testutil.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
		close(sent)
		<-release // the server is slow to answer
		return http.DefaultTransport.RoundTrip(req)
	})}
	ctx, cancel := context.WithCancel(context.Background())
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		providers.RefreshToken(cfg)(ctx)
	}()
	<-sent
	cancel() // the manager closes: the exchange goes on
	ended, endNow := context.WithCancel(context.Background())
	endNow()
	if err := providers.DrainRefreshes(ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("DrainRefreshes during an exchange = %v; want the context's error", err)
	}
	close(release)
	if err := providers.DrainRefreshes(context.Background()); err != nil {
		t.Fatalf("DrainRefreshes: %v", err)
	}
	if _, v := f.stored(t, f.store); v != 2 {
		t.Fatalf("version %d once drained; want 2 (the rotated token saved)", v)
	}
	<-returned
}
