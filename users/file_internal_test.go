package users

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"testing"
)

// TestOpenFile_lockAcrossCompaction: a store compacting between another
// OpenFile's open and its lock leaves that open holding the replaced
// file; its lock must not count, and the open fails with ErrLocked.
func TestOpenFile_lockAcrossCompaction(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no flock")
	}
	path := filepath.Join(t.TempDir(), "tokens.db")
	a, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Save(context.Background(), "a", Entry{Version: 1, Sealed: []byte("a1")}); err != nil {
		t.Fatal(err)
	}
	compacted := false
	afterOpen = func() {
		if compacted {
			return
		}
		compacted = true
		a.mu.Lock()
		defer a.mu.Unlock()
		if err := a.compact(); err != nil {
			t.Errorf("compact: %v", err)
		}
	}
	defer func() { afterOpen = nil }()
	b, err := OpenFile(path)
	if err == nil {
		b.Close()
		t.Fatal("OpenFile while another store holds the compacted file succeeded")
	}
	if !compacted || !errors.Is(err, ErrLocked) {
		t.Fatalf("compacted %v, err %v; want ErrLocked after a compaction", compacted, err)
	}
}
