// Package userload_test runs member processes that serve tokens on behalf
// of users from a PostgreSQL store (pgstore) against a token server that
// rotates refresh tokens and revokes a family whose spent token comes
// back: with and without the cluster grain, under load, and with members
// killed (SIGKILL) during rotations.
package userload_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/pgstore"
	"github.com/go-tokenmanager/tokenmanager/users"
)

func TestMain(m *testing.M) {
	if os.Getenv(envMember) != "" {
		os.Exit(runMember())
	}
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

var pg struct {
	once sync.Once
	dsn  string
	err  error
	skip string
	stop func()
}

// database returns the DSN of a new database in the test's PostgreSQL
// (started on first use), with the store's table and users' tokens
// seeded from srv.
func database(t *testing.T) string {
	t.Helper()
	pg.once.Do(func() {
		p, skip, err := testutil.StartPostgres()
		pg.dsn, pg.stop, pg.skip, pg.err = p.DSN, p.Stop, skip, err
	})
	if pg.skip != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s; CI must run the PostgreSQL tests (apt-get install -y postgresql)", pg.skip)
		}
		t.Skipf("%s (apt-get install -y postgresql): skipped outside CI", pg.skip)
	}
	if pg.err != nil {
		t.Fatal(pg.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgxpool.New(ctx, pg.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	db := fmt.Sprintf("u%d", time.Now().UnixNano())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	return strings.Replace(pg.dsn, "/postgres?", "/"+db+"?", 1)
}

// rig is one run's token server, API, store and users.
type rig struct {
	srv   *testutil.RefreshServer
	token *httptest.Server
	api   *httptest.Server
	dsn   string
	keys  string // users.ParseKeys
	seeds []string
	store *pgstore.Store
	pool  *pgxpool.Pool
	k     *users.Keys
}

// newRig starts a rotating token server, an API that accepts its live,
// unexpired access tokens, and a database with n users seeded.
func newRig(t *testing.T, n int) *rig {
	t.Helper()
	r := &rig{srv: &testutil.RefreshServer{ExpiresIn: lifetimeSeconds}}
	r.token = httptest.NewServer(r.srv)
	t.Cleanup(r.token.Close)
	r.api = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		at, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		if !ok || !r.srv.Valid(at, time.Now()) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.api.Close)
	r.dsn = database(t)
	ctx := context.Background()
	var err error
	if r.pool, err = pgxpool.New(ctx, r.dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.pool.Close)
	if r.store, err = pgstore.New(ctx, r.pool, pgstore.Options{CreateTable: true}); err != nil {
		t.Fatal(err)
	}
	r.keys = "k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, users.KeySize))
	if r.k, err = users.ParseKeys(r.keys); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		seed := r.srv.Issue()
		if _, err := users.Seed(ctx, r.store, r.k, identity(i), seed); err != nil {
			t.Fatal(err)
		}
		r.seeds = append(r.seeds, seed)
	}
	return r
}

// stored returns user i's refresh token as the store holds it.
func (r *rig) stored(t *testing.T, i int) string {
	t.Helper()
	e, err := r.store.Load(context.Background(), identity(i))
	if err != nil {
		return ""
	}
	plain, _, err := r.k.Open(identity(i), e.Sealed)
	if err != nil {
		t.Fatal(err)
	}
	return string(plain)
}

// member is a member process as the parent sees it.
type member struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}

	mu    sync.Mutex
	ready bool
	stats *memberStats
	lines []string
}

// memberConfig is what members of one run share.
type memberConfig struct {
	mode    string
	users   int
	workers int
	run     time.Duration // 0: until stop
	startAt time.Time
	ports   []int // remote ports, then automanaged ports: 2 per member
}

// start runs member i of cfg against r.
func (r *rig) start(t *testing.T, cfg memberConfig, i int) *member {
	t.Helper()
	n := len(cfg.ports) / 2
	var hosts []string
	for _, p := range cfg.ports[n:] {
		hosts = append(hosts, "127.0.0.1:"+strconv.Itoa(p))
	}
	m := &member{name: fmt.Sprintf("%s-%d", cfg.mode, i), done: make(chan struct{})}
	m.cmd = exec.Command(os.Args[0], "-test.run=^$")
	m.cmd.Env = append(os.Environ(),
		envMember+"="+m.name,
		envMode+"="+cfg.mode,
		envDSN+"="+r.dsn,
		envKeys+"="+r.keys,
		envTokenURL+"="+r.token.URL,
		envAPIURL+"="+r.api.URL,
		envUsers+"="+strconv.Itoa(cfg.users),
		envWorkers+"="+strconv.Itoa(cfg.workers),
		envPort+"="+strconv.Itoa(cfg.ports[i]),
		envAutoPort+"="+strconv.Itoa(cfg.ports[n+i]),
		envHosts+"="+strings.Join(hosts, ","),
		envStart+"="+strconv.FormatInt(cfg.startAt.UnixMilli(), 10),
		envRun+"="+cfg.run.String(),
	)
	// A member's standard error goes to a file, shown if the test fails:
	// members built with -race report the races protoactor's cluster
	// has inside (disthash's ring read while a topology change writes
	// it), which are not this test's subject.
	stderr, err := os.CreateTemp(t.TempDir(), m.name+"-*.stderr")
	if err != nil {
		t.Fatal(err)
	}
	m.cmd.Stderr = stderr
	t.Cleanup(func() {
		stderr.Close()
		if !t.Failed() {
			return
		}
		out, _ := os.ReadFile(stderr.Name())
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Logf("member %s, the end of its standard error:\n%s", m.name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
	})
	out, err := m.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if m.stdin, err = m.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go m.read(out)
	t.Cleanup(m.kill)
	return m
}

func (m *member) read(out io.Reader) {
	defer close(m.done)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		m.mu.Lock()
		m.lines = append(m.lines, line)
		switch {
		case line == "READY":
			m.ready = true
		case strings.HasPrefix(line, "STATS "):
			var st memberStats
			if json.Unmarshal([]byte(strings.TrimPrefix(line, "STATS ")), &st) == nil {
				m.stats = &st
			}
		}
		m.mu.Unlock()
	}
	_ = m.cmd.Wait()
}

// kill kills the member at once (SIGKILL) and waits until it is gone.
func (m *member) kill() {
	_ = m.cmd.Process.Kill()
	<-m.done
}

// finish tells a member run without a duration to stop sending, and
// waits up to limit for its stats.
func (m *member) finish(limit time.Duration) *memberStats {
	m.stdin.Close()
	return m.wait(limit)
}

// wait waits up to limit for the member to exit and returns its stats,
// nil if it printed none.
func (m *member) wait(limit time.Duration) *memberStats {
	select {
	case <-m.done:
	case <-time.After(limit):
		m.kill()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stats == nil {
		fmt.Fprintf(os.Stderr, "member %s printed no stats: %q\n", m.name, m.lines)
	}
	return m.stats
}

func (m *member) isReady() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ready
}
