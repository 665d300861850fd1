package users

import (
	"context"
	"errors"
	"fmt"
)

// ErrNotFound is returned by [Store.Load] when nothing is stored for the
// identity.
var ErrNotFound = errors.New("users: no refresh token stored for the identity")

// ErrConflict is returned by [Store.Save] and [Store.Delete] when the
// stored version is not the one expected: another writer got there
// first. Nothing was written.
var ErrConflict = errors.New("users: the stored refresh token changed meanwhile")

// Entry is what a [Store] keeps for one identity.
type Entry struct {
	// Version is 1 for the first write of an identity and grows by one
	// with every write.
	Version uint64
	// Sealed is the refresh token as [Keys.Seal] sealed it: opaque to
	// the store, useless without the keys.
	Sealed []byte
}

// Store keeps one [Entry] per identity. Implementations must be safe for
// concurrent use by multiple goroutines, and their errors must not hold
// Sealed. Writes are compare-and-swap on the version, so two writers
// never overwrite each other unseen.
type Store interface {
	// Load returns the identity's entry, or an error wrapping
	// [ErrNotFound].
	Load(ctx context.Context, identity string) (Entry, error)
	// Save stores e for the identity if the stored version is
	// e.Version-1 (nothing stored, when e.Version is 1), and returns
	// only once e is durable (fsync'd, committed). Otherwise it returns
	// an error wrapping [ErrConflict] and writes nothing.
	Save(ctx context.Context, identity string, e Entry) error
	// Delete removes the identity's entry if its version is version;
	// an error wrapping [ErrConflict] if it has another. Deleting what
	// is not there is not an error.
	Delete(ctx context.Context, identity string, version uint64) error
}

// Locker is implemented by a [Store] that several processes share, so
// that one refresh of an identity runs at a time across all of them.
// providers.RefreshToken takes the lock before it loads the refresh token
// and releases it once the rotated token is saved: a second process (or a
// cluster grain that just moved and whose previous activation is still
// refreshing) waits, then loads the rotated token instead of sending the
// spent one, which a server with reuse detection punishes by revoking the
// whole family.
type Locker interface {
	// Lock blocks until the caller holds the identity's lock, or ctx
	// ends. It returns a context derived from ctx: the store's methods
	// called with it (or a context derived from it) for the same
	// identity run under the lock, one call at a time. unlock releases
	// the lock; it may be called more than once. A lock whose holder
	// dies is released by the store (the holder's session ends), never
	// held forever.
	Lock(ctx context.Context, identity string) (locked context.Context, unlock func(), err error)
}

// Seed stores refreshToken for identity, sealed with keys' current key,
// over whatever was stored: the first refresh token of a user who just
// signed in (authorization code, device flow), or a new one after the
// user signed in again. It returns the entry's new version.
func Seed(ctx context.Context, s Store, keys *Keys, identity, refreshToken string) (uint64, error) {
	if refreshToken == "" {
		return 0, errors.New("users: Seed: the refresh token is empty")
	}
	sealed, err := keys.Seal(identity, []byte(refreshToken))
	if err != nil {
		return 0, err
	}
	for range 5 {
		var version uint64
		switch e, err := s.Load(ctx, identity); {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return 0, fmt.Errorf("users: Seed: %w", err)
		default:
			version = e.Version
		}
		err := s.Save(ctx, identity, Entry{Version: version + 1, Sealed: sealed})
		if err == nil {
			return version + 1, nil
		}
		if !errors.Is(err, ErrConflict) {
			return 0, fmt.Errorf("users: Seed: %w", err)
		}
	}
	return 0, fmt.Errorf("users: Seed: the identity's entry kept changing: %w", ErrConflict)
}
