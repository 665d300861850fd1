package users_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/users"
)

// TestFileStore_lock: two refreshers of one identity in the process take
// turns; another identity is not held up; a waiter whose context ends
// gives up; and nothing stays behind once every lock is released.
func TestFileStore_lock(t *testing.T) {
	s := testutil.OpenFileStore(t, filepath.Join(t.TempDir(), "tokens.db"))
	ctx := context.Background()
	_, unlock, err := s.Lock(ctx, "ann")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, _, err := s.Lock(short, "ann"); err == nil {
		t.Fatal("a held lock was taken again")
	}
	_, unlockBob, err := s.Lock(ctx, "bob")
	if err != nil {
		t.Fatalf("another identity: %v", err)
	}
	unlockBob()

	got := make(chan func())
	go func() {
		_, u, err := s.Lock(ctx, "ann")
		if err != nil {
			t.Error(err)
			u = func() {}
		}
		got <- u
	}()
	select {
	case <-got:
		t.Fatal("the waiter got the lock while it was held")
	case <-time.After(20 * time.Millisecond):
	}
	unlock()
	unlock() // twice is harmless
	(<-got)()
	if n := users.LocksHeld(s); n != 0 {
		t.Fatalf("%d identities left in the lock table; want none", n)
	}
}
