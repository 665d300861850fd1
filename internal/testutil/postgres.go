package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
)

// Postgres is a throwaway PostgreSQL server (Debian's postgresql package:
// initdb, pg_ctl) in a temporary directory, listening on 127.0.0.1 only.
type Postgres struct {
	// DSN connects to its postgres database as the trusted postgres user.
	DSN string
	// Stop stops the server and removes its directory.
	Stop func()
}

// StartPostgres starts a [Postgres]. Without the server programs it
// returns skip (why) and no error; the caller skips, or fails under CI.
func StartPostgres() (pg Postgres, skip string, err error) {
	initdb, err := pgBin("initdb")
	if err != nil {
		return pg, err.Error(), nil
	}
	pgctl, err := pgBin("pg_ctl")
	if err != nil {
		return pg, err.Error(), nil
	}
	dir, err := os.MkdirTemp("", "pgstore-test-")
	if err != nil {
		return pg, "", err
	}
	data := filepath.Join(dir, "data")
	// PostgreSQL refuses to run as root: run it as the postgres user
	// the package creates.
	var asUser []string
	if os.Geteuid() == 0 {
		u, lerr := user.Lookup("postgres")
		if lerr != nil {
			os.RemoveAll(dir)
			return pg, "", fmt.Errorf("running as root and there is no postgres user: %v", lerr)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err = os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return pg, "", err
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
		return pg, "", err
	}
	if err = run(initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return pg, "", err
	}
	// fsync stays on: the benchmark measures durable writes.
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories='' -c max_connections=50", port)
	if err = run(pgctl, "-D", data, "-l", filepath.Join(dir, "log"), "-o", opts, "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		os.RemoveAll(dir)
		return pg, "", fmt.Errorf("%v\n%s", err, log)
	}
	pg.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	pg.Stop = func() {
		_ = run(pgctl, "-D", data, "-m", "immediate", "-w", "stop")
		os.RemoveAll(dir)
	}
	return pg, "", nil
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
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
