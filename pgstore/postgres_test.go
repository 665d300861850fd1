package pgstore_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
)

// The tests start their own PostgreSQL (Debian's postgresql package:
// initdb, pg_ctl) in a temporary directory, listening on 127.0.0.1 only,
// once for the whole test binary. Without the binaries they skip, except
// under CI, where they fail: CI installs the package (.ci/run).

var pg struct {
	once sync.Once
	dsn  string
	err  error
	skip string
	stop func()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pg.stop != nil {
		pg.stop()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// postgres returns the DSN of the test cluster, starting it on first use.
func postgres(tb testing.TB) string {
	tb.Helper()
	pg.once.Do(startPostgres)
	if pg.skip != "" {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s; CI must run the PostgreSQL tests (apt-get install -y postgresql)", pg.skip)
		}
		tb.Skipf("%s (apt-get install -y postgresql): skipped outside CI", pg.skip)
	}
	if pg.err != nil {
		tb.Fatal(pg.err)
	}
	return pg.dsn
}

func startPostgres() {
	p, skip, err := testutil.StartPostgres()
	pg.dsn, pg.stop, pg.skip, pg.err = p.DSN, p.Stop, skip, err
}

// newPool connects to the test cluster until the test ends, in a
// database of the test's own.
func newPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	dsn := postgres(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgxpool.New(ctx, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	defer admin.Close()
	db := fmt.Sprintf("t%d", time.Now().UnixNano())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		tb.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, strings.Replace(dsn, "/postgres?", "/"+db+"?", 1))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}
