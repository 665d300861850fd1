// Package storetest checks that a users.Store keeps the contract: load
// what was saved, compare-and-swap on the version, delete, concurrent
// writers, and no sealed bytes in errors. Every store's tests run it.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/go-tokenmanager/tokenmanager/users"
)

// Run runs the contract tests against stores from open, each test with a
// store of its own that is empty.
func Run(t *testing.T, open func(t *testing.T) users.Store) {
	ctx := context.Background()
	t.Run("LoadMissing", func(t *testing.T) {
		s := open(t)
		if _, err := s.Load(ctx, "nobody"); !errors.Is(err, users.ErrNotFound) {
			t.Fatalf("Load of nothing: err = %v; want ErrNotFound", err)
		}
	})
	t.Run("SaveLoad", func(t *testing.T) {
		s := open(t)
		id := "user=ann|client=app"
		for v := uint64(1); v <= 3; v++ {
			data := fmt.Appendf(nil, "sealed-%d", v)
			if err := s.Save(ctx, id, users.Entry{Version: v, Sealed: data}); err != nil {
				t.Fatalf("Save v%d: %v", v, err)
			}
			got, err := s.Load(ctx, id)
			if err != nil || got.Version != v || !bytes.Equal(got.Sealed, data) {
				t.Fatalf("Load after Save v%d = %+v, %v; want v%d %q", v, got, err, v, data)
			}
		}
		if _, err := s.Load(ctx, "user=ann|client=other"); !errors.Is(err, users.ErrNotFound) {
			t.Fatalf("Load of another identity: err = %v; want ErrNotFound", err)
		}
	})
	t.Run("Conflict", func(t *testing.T) {
		s := open(t)
		id := "user=bob|client=app"
		secret := []byte("SECRET-SEALED-BYTES")
		if err := s.Save(ctx, id, users.Entry{Version: 2, Sealed: secret}); !errors.Is(err, users.ErrConflict) {
			t.Fatalf("Save v2 over nothing: err = %v; want ErrConflict", err)
		}
		if err := s.Save(ctx, id, users.Entry{Version: 1, Sealed: []byte("one")}); err != nil {
			t.Fatal(err)
		}
		for _, v := range []uint64{1, 3} {
			err := s.Save(ctx, id, users.Entry{Version: v, Sealed: secret})
			if !errors.Is(err, users.ErrConflict) {
				t.Fatalf("Save v%d over v1: err = %v; want ErrConflict", v, err)
			}
			if strings.Contains(fmt.Sprintf("%+v", err), string(secret)) {
				t.Fatalf("error %+v holds the sealed bytes", err)
			}
		}
		if got, _ := s.Load(ctx, id); string(got.Sealed) != "one" {
			t.Fatalf("after conflicts, Load = %q; want the first write", got.Sealed)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		s := open(t)
		id := "user=cy|client=app"
		if err := s.Delete(ctx, id, 1); err != nil {
			t.Fatalf("Delete of nothing: %v; want nil", err)
		}
		if err := s.Save(ctx, id, users.Entry{Version: 1, Sealed: []byte("a")}); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, id, 7); !errors.Is(err, users.ErrConflict) {
			t.Fatalf("Delete of another version: err = %v; want ErrConflict", err)
		}
		if err := s.Delete(ctx, id, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load(ctx, id); !errors.Is(err, users.ErrNotFound) {
			t.Fatalf("Load after Delete: err = %v; want ErrNotFound", err)
		}
		// After a delete the identity starts again at version 1.
		if err := s.Save(ctx, id, users.Entry{Version: 1, Sealed: []byte("b")}); err != nil {
			t.Fatalf("Save v1 after Delete: %v", err)
		}
	})
	t.Run("ConcurrentWritersOneWins", func(t *testing.T) {
		s := open(t)
		id := "user=dee|client=app"
		const writers = 8
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for i := range writers {
			wg.Go(func() {
				err := s.Save(ctx, id, users.Entry{Version: 1, Sealed: fmt.Appendf(nil, "w%d", i)})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					won++
				case !errors.Is(err, users.ErrConflict):
					t.Errorf("writer %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		if won != 1 {
			t.Fatalf("%d writers of version 1 succeeded; want exactly 1", won)
		}
	})
	t.Run("ManyIdentities", func(t *testing.T) {
		s := open(t)
		for i := range 50 {
			if err := s.Save(ctx, fmt.Sprintf("user=u%d|client=app", i), users.Entry{Version: 1, Sealed: fmt.Appendf(nil, "t%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 50 {
			got, err := s.Load(ctx, fmt.Sprintf("user=u%d|client=app", i))
			if err != nil || string(got.Sealed) != fmt.Sprintf("t%d", i) {
				t.Fatalf("identity %d: %q, %v", i, got.Sealed, err)
			}
		}
	})
}
