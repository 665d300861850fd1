package pgstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/storetest"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/pgstore"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/users"
)

func newStore(tb testing.TB) *pgstore.Store {
	tb.Helper()
	s, err := pgstore.New(context.Background(), newPool(tb), pgstore.Options{CreateTable: true})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestStore_contract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) users.Store { return newStore(t) })
}

func TestNew_checksTable(t *testing.T) {
	pool := newPool(t)
	ctx := context.Background()
	if _, err := pgstore.New(ctx, pool, pgstore.Options{}); err == nil {
		t.Fatal("New without the table and without CreateTable succeeded")
	}
	if _, err := pgstore.New(ctx, pool, pgstore.Options{Table: "x; DROP TABLE y", CreateTable: true}); err == nil {
		t.Fatal("New accepted a table name that is not a name")
	}
	if _, err := pool.Exec(ctx, "CREATE SCHEMA auth"); err != nil {
		t.Fatal(err)
	}
	s, err := pgstore.New(ctx, pool, pgstore.Options{Table: "auth.refresh", CreateTable: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(ctx, "id", users.Entry{Version: 1, Sealed: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if _, err := pgstore.New(ctx, pool, pgstore.Options{Table: "auth.refresh"}); err != nil {
		t.Fatalf("New on the existing table: %v", err)
	}
	if _, err := pgstore.New(ctx, nil, pgstore.Options{}); err == nil {
		t.Fatal("New with a nil pool succeeded")
	}
}

// TestNew_quotesTable: the table name is quoted as written: a reserved
// word works, and a capital letter is kept, not folded to lower case.
func TestNew_quotesTable(t *testing.T) {
	pool := newPool(t)
	ctx := context.Background()
	for _, table := range []string{"user", "Tokens"} {
		s, err := pgstore.New(ctx, pool, pgstore.Options{Table: table, CreateTable: true})
		if err != nil {
			t.Fatalf("table %q: %v", table, err)
		}
		if err := s.Save(ctx, "id", users.Entry{Version: 1, Sealed: []byte("x")}); err != nil {
			t.Fatalf("table %q: %v", table, err)
		}
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename = $1`, table).Scan(&n); err != nil || n != 1 {
			t.Fatalf("tables named exactly %q: %d, %v; want 1", table, n, err)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename = 'tokens'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("tables named tokens: %d, %v; want none (Tokens is not folded)", n, err)
	}
}

// TestStore_twoReplicas: two stores on one database (two replicas) see
// each other's writes, and the compare-and-swap lets one writer of a
// version win.
func TestStore_twoReplicas(t *testing.T) {
	pool := newPool(t)
	ctx := context.Background()
	a, err := pgstore.New(ctx, pool, pgstore.Options{CreateTable: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := pgstore.New(ctx, pool, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Save(ctx, "id", users.Entry{Version: 1, Sealed: []byte("a1")}); err != nil {
		t.Fatal(err)
	}
	if e, err := b.Load(ctx, "id"); err != nil || string(e.Sealed) != "a1" {
		t.Fatalf("replica b loads %q, %v; want a1", e.Sealed, err)
	}
	if err := b.Save(ctx, "id", users.Entry{Version: 2, Sealed: []byte("b2")}); err != nil {
		t.Fatal(err)
	}
	if err := a.Save(ctx, "id", users.Entry{Version: 2, Sealed: []byte("a2")}); !errors.Is(err, users.ErrConflict) {
		t.Fatalf("replica a writing version 2 after b: %v; want ErrConflict", err)
	}
}

// TestRefreshToken_postgres: the refresh provider over the PostgreSQL
// store rotates and stores, and a manager started anew (another replica)
// goes on from the stored token; only sealed bytes reach the database.
func TestRefreshToken_postgres(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	srv := &testutil.RefreshServer{}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	keys, _ := users.NewKeys("k1", map[string][]byte{"k1": bytes.Repeat([]byte{1}, users.KeySize)})
	id := users.Identity{User: "ann", Client: "app"}.String()
	seed := srv.Issue()
	if _, err := users.Seed(ctx, store, keys, id, seed); err != nil {
		t.Fatal(err)
	}
	for replica := range 3 {
		p := providers.RefreshToken(providers.RefreshTokenConfig{
			TokenURL: hs.URL, Identity: id, Store: store, Keys: keys, Auth: providers.NoClientAuth("app"),
		})
		rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p}, nil)
		if _, err := rt.Token(ctx); err != nil {
			t.Fatalf("replica %d: %v", replica, err)
		}
		rt.Close()
	}
	if srv.Refreshes() != 3 || srv.Reuses() != 0 {
		t.Fatalf("%d refreshes, %d reuses; want 3, 0", srv.Refreshes(), srv.Reuses())
	}
	e, err := store.Load(ctx, id)
	if err != nil || e.Version != 4 {
		t.Fatalf("stored version %d, %v; want 4", e.Version, err)
	}
	if strings.Contains(string(e.Sealed), "rt-") {
		t.Fatal("the database holds a refresh token in clear")
	}
}

// BenchmarkRotation measures rotations per second: one refresh through
// the provider (loopback token endpoint, seal, durable compare-and-swap
// write) per iteration, with the file store and the PostgreSQL store
// side by side; and the store's write alone.
func BenchmarkRotation(b *testing.B) {
	keys, _ := users.NewKeys("k1", map[string][]byte{"k1": bytes.Repeat([]byte{1}, users.KeySize)})
	stores := []struct {
		name string
		open func(b *testing.B) users.Store
	}{
		{"file", func(b *testing.B) users.Store {
			s, err := users.OpenFile(filepath.Join(b.TempDir(), "tokens.db"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
		{"postgres", func(b *testing.B) users.Store { return newStore(b) }},
	}
	for _, st := range stores {
		b.Run("provider/"+st.name, func(b *testing.B) {
			store := st.open(b)
			srv := &testutil.RefreshServer{}
			hs := httptest.NewServer(srv)
			defer hs.Close()
			id := "user=bench|client=app"
			if _, err := users.Seed(context.Background(), store, keys, id, srv.Issue()); err != nil {
				b.Fatal(err)
			}
			p := providers.RefreshToken(providers.RefreshTokenConfig{
				TokenURL: hs.URL, Identity: id, Store: store, Keys: keys, Auth: providers.NoClientAuth("app"),
			})
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rotations/s")
		})
		b.Run("save/"+st.name, func(b *testing.B) {
			store := st.open(b)
			sealed, _ := keys.Seal("id", []byte("rt-0123456789abcdef0123456789abcdef"))
			v := uint64(0)
			b.ReportAllocs()
			for b.Loop() {
				v++
				if err := store.Save(context.Background(), "id", users.Entry{Version: v, Sealed: sealed}); err != nil {
					b.Fatal(fmt.Sprint(err))
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
		})
	}
}
