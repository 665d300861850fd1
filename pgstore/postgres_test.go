package pgstore_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"
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

// pgBin finds a PostgreSQL server program: on PATH, or where Debian puts
// it (/usr/lib/postgresql/<version>/bin, newest first).
func pgBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if p := filepath.Join(d, name); isExec(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH or in /usr/lib/postgresql/*/bin", name)
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode()&0o111 != 0
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
	initdb, err := pgBin("initdb")
	if err != nil {
		pg.skip = err.Error()
		return
	}
	pgctl, err := pgBin("pg_ctl")
	if err != nil {
		pg.skip = err.Error()
		return
	}
	dir, err := os.MkdirTemp("", "pgstore-test-")
	if err != nil {
		pg.err = err
		return
	}
	data := filepath.Join(dir, "data")
	// PostgreSQL refuses to run as root: run it as the postgres user
	// the package creates.
	var asUser []string
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			pg.err = fmt.Errorf("running as root and there is no postgres user: %v", err)
			os.RemoveAll(dir)
			return
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			pg.err = err
			os.RemoveAll(dir)
			return
		}
		asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	run := func(args ...string) error {
		args = append(asUser, args...)
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v\n%s", filepath.Base(args[len(asUser)]), err, out)
		}
		return nil
	}
	port, err := freePort()
	if err != nil {
		pg.err = err
		return
	}
	if err := run(initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		pg.err = err
		os.RemoveAll(dir)
		return
	}
	// fsync stays on: the benchmark measures durable writes.
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories='' -c max_connections=50", port)
	if err := run(pgctl, "-D", data, "-l", filepath.Join(dir, "log"), "-o", opts, "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		pg.err = fmt.Errorf("%v\n%s", err, log)
		os.RemoveAll(dir)
		return
	}
	pg.dsn = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	pg.stop = func() {
		_ = run(pgctl, "-D", data, "-m", "immediate", "-w", "stop")
		os.RemoveAll(dir)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
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
