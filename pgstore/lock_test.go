package pgstore_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/pgstore"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/users"
)

// replica opens another pool on pool's database, with at most maxConns
// connections, as another process would, and a store on it.
func replica(t *testing.T, pool *pgxpool.Pool, maxConns int32) (*pgstore.Store, *pgxpool.Pool) {
	t.Helper()
	cfg := pool.Config().Copy()
	cfg.MaxConns = maxConns
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	s, err := pgstore.New(context.Background(), p, pgstore.Options{CreateTable: true})
	if err != nil {
		t.Fatal(err)
	}
	return s, p
}

// TestLock_excludesOtherReplicas: while one replica holds an identity's
// lock, another waits for it (here until its context ends), and gets it
// once released; other identities are not held up.
func TestLock_excludesOtherReplicas(t *testing.T) {
	pool := newPool(t)
	a, _ := replica(t, pool, 4)
	b, _ := replica(t, pool, 4)
	ctx := context.Background()
	_, unlock, err := a.Lock(ctx, "ann")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, _, err := b.Lock(short, "ann"); err == nil {
		t.Fatal("a second replica took a held lock")
	}
	_, unlockBob, err := b.Lock(ctx, "bob")
	if err != nil {
		t.Fatalf("another identity's lock: %v", err)
	}
	unlockBob()
	unlock()
	unlock() // twice is harmless
	_, unlock, err = b.Lock(ctx, "ann")
	if err != nil {
		t.Fatalf("the lock after its release: %v", err)
	}
	unlock()
}

// TestLock_diesWithItsHolder: a holder whose session ends (its process
// died) leaves no lock behind.
func TestLock_diesWithItsHolder(t *testing.T) {
	pool := newPool(t)
	a, aPool := replica(t, pool, 1)
	b, _ := replica(t, pool, 4)
	ctx := context.Background()
	var pid int
	if err := aPool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	_, unlock, err := a.Lock(ctx, "ann") // on that one connection
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	var killed bool
	if err := pool.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&killed); err != nil || !killed {
		t.Fatalf("terminating the holder's session: %v, %v", killed, err)
	}
	waited, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, unlockB, err := b.Lock(waited, "ann")
	if err != nil {
		t.Fatalf("the lock of a dead holder: %v", err)
	}
	unlockB()
}

// TestLock_usesItsConnection: the store's methods called with the locked
// context use the connection holding the lock, so a refresh needs one
// connection, not two: with a pool of one, they would otherwise wait for
// the connection the lock holds, for ever.
func TestLock_usesItsConnection(t *testing.T) {
	s, _ := replica(t, newPool(t), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	locked, unlock, err := s.Lock(ctx, "ann")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(locked, "ann", users.Entry{Version: 1, Sealed: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if e, err := s.Load(locked, "ann"); err != nil || e.Version != 1 {
		t.Fatalf("load under the lock: %d, %v", e.Version, err)
	}
	if err := s.Delete(locked, "ann", 1); err != nil {
		t.Fatal(err)
	}
	unlock()
	if _, err := s.Load(ctx, "ann"); !errors.Is(err, users.ErrNotFound) {
		t.Fatalf("load after the unlock: %v; want ErrNotFound", err)
	}
}

// storeOnly hides the store's lock: a store shared without one, as
// replicas share tokens today.
type storeOnly struct{ users.Store }

// TestRefreshToken_replicasWithTheLock: three replicas, each with its own
// manager-less provider on its own pool, refresh one user's token
// concurrently again and again against a server that revokes the family
// of a reused refresh token. With the store's lock no refresh token is
// sent twice and every refresh works. Without it (the control), the
// same load gets the family revoked.
func TestRefreshToken_replicasWithTheLock(t *testing.T) {
	for _, tc := range []struct {
		name string
		lock bool
	}{{"with the lock", true}, {"without the lock", false}} {
		t.Run(tc.name, func(t *testing.T) {
			pool := newPool(t)
			srv := &testutil.RefreshServer{}
			// A token endpoint that takes 10ms, as a remote one does:
			// replicas' refreshes overlap.
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(10 * time.Millisecond)
				srv.ServeHTTP(w, r)
			}))
			defer hs.Close()
			keys, _ := users.NewKeys("k1", map[string][]byte{"k1": bytes.Repeat([]byte{1}, users.KeySize)})
			id := users.Identity{User: "ann", Client: "app"}.String()
			first, _ := replica(t, pool, 4)
			if _, err := users.Seed(context.Background(), first, keys, id, srv.Issue()); err != nil {
				t.Fatal(err)
			}
			const replicas, rounds = 3, 20
			var failed, worked int
			var mu sync.Mutex
			var wg sync.WaitGroup
			for range replicas {
				s, _ := replica(t, pool, 4)
				var store users.Store = s
				if !tc.lock {
					store = storeOnly{s}
				}
				p := providers.RefreshToken(providers.RefreshTokenConfig{
					TokenURL: hs.URL, Identity: id, Store: store, Keys: keys, Auth: providers.NoClientAuth("app"),
				})
				wg.Go(func() {
					for range rounds {
						_, err := p(context.Background())
						mu.Lock()
						if err != nil {
							failed++
						} else {
							worked++
						}
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			t.Logf("%d refreshes worked, %d failed, %d refresh tokens reused", worked, failed, srv.Reuses())
			if tc.lock {
				if failed != 0 || srv.Reuses() != 0 || worked != replicas*rounds {
					t.Fatalf("with the lock: %d failed, %d reused, %d worked; want 0, 0, %d", failed, srv.Reuses(), worked, replicas*rounds)
				}
				return
			}
			if srv.Reuses() == 0 {
				t.Fatal("without the lock, concurrent replicas never reused a refresh token: the control shows nothing")
			}
		})
	}
}
