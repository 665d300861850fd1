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
// Replicas that share the store should share one refresh per identity as
// well: host the identities in the cluster grain
// (github.com/go-tokenmanager/tokenmanager/tokengrain), which gives one
// token state per identity across the cluster. Two replicas refreshing
// the same identity on their own spend the same refresh token, and a
// server with reuse detection revokes the whole family; the
// compare-and-swap keeps the store consistent, it does not stop that.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
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

// Store is a users.Store in a PostgreSQL table. It is safe for
// concurrent use by multiple goroutines (and by many processes).
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
	err := s.pool.QueryRow(ctx, s.load, identity).Scan(&version, &e.Sealed)
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
	tag, err := s.pool.Exec(ctx, sql, args...)
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
	tag, err := s.pool.Exec(ctx, s.del, identity, int64(version))
	if err != nil {
		return fmt.Errorf("pgstore: deleting: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var cur int64
	switch err := s.pool.QueryRow(ctx, s.exists, identity).Scan(&cur); {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("pgstore: deleting: %w", err)
	}
	return fmt.Errorf("%w: stored version %d, deleting version %d", users.ErrConflict, cur, version)
}
