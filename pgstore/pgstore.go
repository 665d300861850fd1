// Package pgstore is a users.Store on PostgreSQL, for many replicas
// sharing the refresh tokens of their users.
//
// It lives in a module of its own, so that the PostgreSQL driver
// (github.com/jackc/pgx/v5) enters only the builds that use it.
//
// Each write is one statement in its own transaction, compare-and-swap
// on the entry's version, and returns once PostgreSQL has committed it
// (with synchronous_commit on, its default: flushed to the WAL). The
// store keeps only sealed tokens (users.Keys): the database, its
// backups and its logs hold nothing usable without the keys.
//
// A Store is a users.Locker: providers.RefreshToken holds a PostgreSQL
// advisory lock per identity from loading the refresh token until the
// rotated one is committed, so replicas sharing the store never send the
// same refresh token twice, which a server with reuse detection punishes
// by revoking the whole family. The lock lives in a database session:
// when its holder dies, PostgreSQL ends the session and the lock goes
// with it. A refresh holds one connection of the pool while it runs (its
// reads and writes use that connection), so the pool's size bounds how
// many identities refresh at once.
//
// Replicas that share the store should also share one refresh per
// identity: host the identities in the cluster grain
// (github.com/go-tokenmanager/tokenmanager/tokengrain), which gives one
// token state per identity across the cluster. Without it each replica
// refreshes for itself (under the lock, one after the other), which costs
// one refresh per replica at every rollover.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-tokenmanager/tokenmanager/users"
)

// DefaultTable is the table a Store uses unless told otherwise.
const DefaultTable = "tokenmanager_refresh_tokens"

// Options configure a [Store]. The zero value is usable.
type Options struct {
	// Table is the table's name, optionally schema-qualified
	// ("auth.refresh_tokens"). Optional; empty means [DefaultTable]. It
	// is quoted as written: "Tokens" names the table Tokens, not tokens,
	// and a reserved word ("user") is a valid name.
	Table string
	// CreateTable creates the table if it does not exist. Optional;
	// without it the table must exist (see [Store.Schema]).
	CreateTable bool
}

// Store is a users.Store and a users.Locker in a PostgreSQL table. It is
// safe for concurrent use by multiple goroutines (and by many processes).
type Store struct {
	pool  *pgxpool.Pool
	table string // quoted

	load, insert, update, del, exists string
}

var tableName = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]{0,62}\.)?[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// New returns a store using pool, which it does not close. It checks the
// table (creating it with CreateTable), so a wrong name or missing
// grant shows at start-up, not at the first refresh.
func New(ctx context.Context, pool *pgxpool.Pool, o Options) (*Store, error) {
	if pool == nil {
		return nil, errors.New("pgstore: pool is nil")
	}
	if o.Table == "" {
		o.Table = DefaultTable
	}
	if !tableName.MatchString(o.Table) {
		return nil, fmt.Errorf("pgstore: table name %q: want name or schema.name of letters, digits and _", o.Table)
	}
	s := &Store{pool: pool, table: pgx.Identifier(strings.Split(o.Table, ".")).Sanitize()}
	s.load = `SELECT version, sealed FROM ` + s.table + ` WHERE identity = $1`
	s.insert = `INSERT INTO ` + s.table + ` (identity, version, sealed) VALUES ($1, 1, $2) ON CONFLICT (identity) DO NOTHING`
	s.update = `UPDATE ` + s.table + ` SET version = $2, sealed = $3, updated_at = now() WHERE identity = $1 AND version = $2 - 1`
	s.del = `DELETE FROM ` + s.table + ` WHERE identity = $1 AND version = $2`
	s.exists = `SELECT version FROM ` + s.table + ` WHERE identity = $1`
	if o.CreateTable {
		if _, err := pool.Exec(ctx, s.Schema()); err != nil {
			return nil, fmt.Errorf("pgstore: creating table %s: %w", s.table, err)
		}
	}
	if _, err := pool.Exec(ctx, `SELECT identity, version, sealed, updated_at FROM `+s.table+` LIMIT 0`); err != nil {
		return nil, fmt.Errorf("pgstore: checking table %s: %w", s.table, err)
	}
	return s, nil
}

// Schema returns the statement that creates the store's table, for
// migrations that create it themselves.
func (s *Store) Schema() string {
	return `CREATE TABLE IF NOT EXISTS ` + s.table + ` (
	identity   text PRIMARY KEY,
	version    bigint NOT NULL CHECK (version > 0),
	sealed     bytea NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now()
)`
}

// Load implements users.Store.
func (s *Store) Load(ctx context.Context, identity string) (users.Entry, error) {
	var e users.Entry
	var version int64
	err := s.db(ctx, identity).QueryRow(ctx, s.load, identity).Scan(&version, &e.Sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return users.Entry{}, users.ErrNotFound
	}
	if err != nil {
		return users.Entry{}, fmt.Errorf("pgstore: loading: %w", err)
	}
	e.Version = uint64(version)
	return e, nil
}

// Save implements users.Store: one INSERT (version 1) or UPDATE ... WHERE
// version = e.Version-1, committed before it returns.
func (s *Store) Save(ctx context.Context, identity string, e users.Entry) error {
	if e.Version == 0 || e.Version > 1<<62 {
		return fmt.Errorf("pgstore: saving: version %d out of range", e.Version)
	}
	var sql string
	args := []any{identity}
	if e.Version == 1 {
		sql, args = s.insert, append(args, e.Sealed)
	} else {
		sql, args = s.update, append(args, int64(e.Version), e.Sealed)
	}
	tag, err := s.db(ctx, identity).Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("pgstore: saving: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("%w: writing version %d", users.ErrConflict, e.Version)
	}
	return nil
}

// Delete implements users.Store.
func (s *Store) Delete(ctx context.Context, identity string, version uint64) error {
	db := s.db(ctx, identity)
	tag, err := db.Exec(ctx, s.del, identity, int64(version))
	if err != nil {
		return fmt.Errorf("pgstore: deleting: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var cur int64
	switch err := db.QueryRow(ctx, s.exists, identity).Scan(&cur); {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("pgstore: deleting: %w", err)
	}
	return fmt.Errorf("%w: stored version %d, deleting version %d", users.ErrConflict, cur, version)
}

// querier is what Load, Save and Delete need of a pool or a connection.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// lockedKey is the context key of a held lock ([Store.Lock]).
type lockedKey struct{}

// held is an identity's lock: the session that holds it.
type held struct {
	s        *Store
	identity string
	conn     *pgxpool.Conn
}

// db returns the connection holding identity's lock when ctx carries it,
// the pool otherwise.
func (s *Store) db(ctx context.Context, identity string) querier {
	if h, ok := ctx.Value(lockedKey{}).(*held); ok && h.s == s && h.identity == identity {
		return h.conn
	}
	return s.pool
}

// lockKey is the advisory lock key of identity in the store's table.
func (s *Store) lockKey(identity string) int64 {
	h := fnv.New64a()
	h.Write([]byte(s.table))
	h.Write([]byte{0})
	h.Write([]byte(identity))
	return int64(h.Sum64())
}

// unlockTimeout bounds releasing a lock; past it the session is closed,
// which releases it too.
const unlockTimeout = 5 * time.Second

// Lock implements users.Locker with a session-level advisory lock
// (pg_advisory_lock) on a connection taken from the pool for as long as
// the lock is held. Load, Save and Delete called with the returned
// context for the identity use that connection. Identities whose keys
// collide (a 64-bit hash of table and identity) share a lock: it only
// makes them wait for each other.
func (s *Store) Lock(ctx context.Context, identity string) (context.Context, func(), error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("pgstore: locking: %w", err)
	}
	key := s.lockKey(identity)
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		// The lock may have been granted as ctx ended: end the session,
		// which releases whatever it holds.
		closeSession(conn)
		return nil, nil, fmt.Errorf("pgstore: locking: %w", err)
	}
	var once sync.Once
	unlock := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout)
			defer cancel()
			var released bool
			if err := conn.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, key).Scan(&released); err != nil || !released {
				closeSession(conn)
				return
			}
			conn.Release()
		})
	}
	return context.WithValue(ctx, lockedKey{}, &held{s: s, identity: identity, conn: conn}), unlock, nil
}

// closeSession closes conn's session, releasing its locks, and gives it
// back to the pool, which drops it.
func closeSession(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout)
	defer cancel()
	_ = conn.Conn().Close(ctx)
	conn.Release()
}

var _ users.Locker = (*Store)(nil)
