package users_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/go-tokenmanager/tokenmanager/internal/storetest"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/users"
)

func TestFileStore_contract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) users.Store {
		return testutil.OpenFileStore(t, filepath.Join(t.TempDir(), "tokens.db"))
	})
}

func TestFileStore_reopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tokens.db")
	s := testutil.OpenFileStore(t, path)
	for v := uint64(1); v <= 3; v++ {
		if err := s.Save(ctx, "a", users.Entry{Version: v, Sealed: fmt.Appendf(nil, "a%d", v)}); err != nil {
			t.Fatal(err)
		}
	}
	s.Save(ctx, "b", users.Entry{Version: 1, Sealed: []byte("b1")})
	s.Delete(ctx, "b", 1)
	s.Close()
	if _, err := s.Load(ctx, "a"); err == nil {
		t.Fatal("Load after Close succeeded")
	}
	r := testutil.OpenFileStore(t, path)
	if got, err := r.Load(ctx, "a"); err != nil || got.Version != 3 || string(got.Sealed) != "a3" {
		t.Fatalf("after reopen: %+v, %v; want a3 at version 3", got, err)
	}
	if _, err := r.Load(ctx, "b"); !errors.Is(err, users.ErrNotFound) {
		t.Fatalf("deleted b after reopen: %v; want ErrNotFound", err)
	}
}

// TestFileStore_tornTail: a crash in the middle of a write leaves part of
// a record at the end; the store opens with every whole record and cuts
// off the rest, so the next write lands cleanly.
func TestFileStore_tornTail(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tokens.db")
	s := testutil.OpenFileStore(t, path)
	s.Save(ctx, "a", users.Entry{Version: 1, Sealed: []byte("a1")})
	s.Save(ctx, "a", users.Entry{Version: 2, Sealed: []byte("a2-longer-value")})
	s.Close()
	full, _ := os.ReadFile(path)
	for cut := 1; cut < 30; cut++ {
		if err := os.WriteFile(path, full[:len(full)-cut], 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := users.OpenFile(path)
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		got, err := r.Load(ctx, "a")
		if err != nil || got.Version != 1 || string(got.Sealed) != "a1" {
			t.Fatalf("cut %d bytes: %+v, %v; want the whole first record a1", cut, got, err)
		}
		if err := r.Save(ctx, "a", users.Entry{Version: 2, Sealed: []byte("again")}); err != nil {
			t.Fatalf("cut %d: write after recovery: %v", cut, err)
		}
		r.Close()
		r = testutil.OpenFileStore(t, path)
		if got, _ := r.Load(ctx, "a"); string(got.Sealed) != "again" {
			t.Fatalf("cut %d: after reopen %q; want again", cut, got.Sealed)
		}
		r.Close()
	}
}

func TestFileStore_notAStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other")
	os.WriteFile(path, []byte("something else entirely"), 0o600)
	if _, err := users.OpenFile(path); err == nil {
		t.Fatal("OpenFile of a foreign file succeeded")
	}
}

// TestFileStore_compacts: rotations append; once dead records outweigh
// live ones past 1 MiB the file is rewritten, and every entry survives.
func TestFileStore_compacts(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tokens.db")
	s := testutil.OpenFileStore(t, path)
	big := make([]byte, 4096)
	for id := range 4 {
		for v := uint64(1); v <= 100; v++ {
			big[0] = byte(v)
			if err := s.Save(ctx, fmt.Sprint(id), users.Entry{Version: v, Sealed: big}); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, _ := os.Stat(path)
	if st.Size() > 2<<20 {
		t.Fatalf("file is %d bytes after 400 writes of 4 KiB to 4 identities; want it compacted", st.Size())
	}
	s.Close()
	r := testutil.OpenFileStore(t, path)
	for id := range 4 {
		got, err := r.Load(ctx, fmt.Sprint(id))
		if err != nil || got.Version != 100 || got.Sealed[0] != 100 || len(got.Sealed) != 4096 {
			t.Fatalf("identity %d after compaction and reopen: version %d, %v", id, got.Version, err)
		}
	}
}

func TestSeed(t *testing.T) {
	ctx := context.Background()
	s := testutil.OpenFileStore(t, filepath.Join(t.TempDir(), "tokens.db"))
	k, _ := users.NewKeys("k1", map[string][]byte{"k1": key(1)})
	for want := uint64(1); want <= 2; want++ {
		v, err := users.Seed(ctx, s, k, "id", fmt.Sprint("rt", want))
		if err != nil || v != want {
			t.Fatalf("Seed = %d, %v; want version %d", v, err, want)
		}
	}
	e, _ := s.Load(ctx, "id")
	if rt, _, err := k.Open("id", e.Sealed); err != nil || string(rt) != "rt2" {
		t.Fatalf("stored %q, %v; want rt2", rt, err)
	}
	if _, err := users.Seed(ctx, s, k, "id", ""); err == nil {
		t.Fatal("Seed of an empty token succeeded")
	}
}

func TestIdentity(t *testing.T) {
	a := users.Identity{User: "a|client=b", Client: "c"}.String()
	b := users.Identity{User: "a", Client: "b|client=c"}.String()
	if a == b {
		t.Fatalf("distinct identities give the same string %q", a)
	}
	if got := (users.Identity{User: "ann", Client: "app", Resource: "https://api"}).String(); got != "user=ann|client=app|resource=https%3A%2F%2Fapi" {
		t.Fatalf("String = %q", got)
	}
	if err := (users.Identity{}).Validate(); err == nil {
		t.Fatal("empty identity is valid")
	}
}

// TestFileStore_locked: a second store on the same file fails at once,
// also after a compaction replaced the file; it opens once the first
// is closed.
func TestFileStore_locked(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no flock")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tokens.db")
	s := testutil.OpenFileStore(t, path)
	if _, err := users.OpenFile(path); !errors.Is(err, users.ErrLocked) {
		t.Fatalf("second OpenFile: %v; want ErrLocked", err)
	}
	big := make([]byte, 8192)
	for v := uint64(1); v <= 300; v++ { // past 1 MiB, mostly dead: compacted
		if err := s.Save(ctx, "a", users.Entry{Version: v, Sealed: big}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := users.OpenFile(path); !errors.Is(err, users.ErrLocked) {
		t.Fatalf("OpenFile after a compaction: %v; want ErrLocked", err)
	}
	s.Close()
	r := testutil.OpenFileStore(t, path)
	if e, err := r.Load(ctx, "a"); err != nil || e.Version != 300 {
		t.Fatalf("after reopen: version %d, %v; want 300", e.Version, err)
	}
}
