package clusterdemo

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Mode says how members get their tokens.
type Mode int

const (
	// Cluster members host the token grains and ask them
	// (tokengrain.NewKind and tokengrain.SettingsFor).
	Cluster Mode = iota
	// Direct members fetch from the token endpoint on their own, with no
	// cluster: the baseline.
	Direct
	// Client members join as cluster clients, which host no grains: with
	// no member hosting the kind, every ask of the grain fails and they
	// fall back to fetching on their own.
	Client
	// Stranger members join as cluster clients and only ask the grain
	// for the token (tokengrain.Ask), never the token endpoint: what any
	// process that reaches a member's port could do. Their Stats count
	// asks (Requests), failed asks and asks answered with a token
	// (Tokens).
	Stranger
)

// Config configures the members [Start] runs.
type Config struct {
	// Members is how many member processes to run.
	Members int
	// Mode says how they get their tokens.
	Mode Mode
	// StartAt is when they start sending requests, all together: leave
	// them time to start and join (about 4s for a cluster).
	StartAt time.Time
	// Run is how long each sends requests.
	Run time.Duration
	// Workers is how many goroutines of each send them. Optional; zero
	// means 8.
	Workers int
	// Progress makes members report their requests each second
	// ([Member.Progress]).
	Progress bool
	// Args are the arguments members are run with (the executable is
	// os.Args[0]); a test binary passes "-test.run=^$". Optional.
	Args []string
	// Stderr receives the members' standard error. Optional; nil means
	// os.Stderr.
	Stderr io.Writer
	// TLSDir holds ca.crt, tls.crt and tls.key ([WriteCredentials]): the
	// members' remote uses tokengrain.MutualTLS with them. Optional;
	// empty means a plaintext remote (on 127.0.0.1).
	TLSDir string
	// Ports are the members' remote ports. Optional; nil means free
	// ports picked by Start.
	Ports []int
	// Advertise are the addresses the members advertise to the cluster
	// (host:port; a proxy in front of each, say). Optional.
	Advertise []string
	// Hosts are the automanaged health addresses of the cluster to join
	// (another Start's [Member.Hosts]). Optional; nil means the members
	// form a cluster of their own.
	Hosts []string
	// Etcd are the endpoints of an etcd the members use as their
	// cluster provider (protoactor's etcd provider), under EtcdKey.
	// Optional; nil means automanaged.
	Etcd []string
	// EtcdKey is the cluster's base key in etcd; give each cluster its
	// own. Optional; empty means "/tokenmanager-test".
	EtcdKey string
}

// Member is a member process as the parent sees it.
type Member struct {
	cmd   *exec.Cmd
	done  chan struct{}
	hosts []string

	mu        sync.Mutex
	ready     bool
	hosted    int    // HOSTED lines: grains activated here
	readiness string // its readiness check, once joined: "ok" or why not
	progress  Progress
	stats     *Stats
	lines     []string
}

// Snapshot returns whether the member said READY, whether a grain was
// activated on it (it hosts, or hosted, the identity's grain), and its
// stats, nil until it has printed them.
func (m *Member) Snapshot() (ready, hosts bool, st *Stats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ready, m.hosted > 0, m.stats
}

// Readiness returns the member's readiness check once it joined: "ok",
// or why it was not ready; empty before.
func (m *Member) Readiness() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.readiness
}

// Hosted returns how many times a grain was activated on the member.
func (m *Member) Hosted() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hosted
}

// Progress returns the member's latest progress report (with
// Config.Progress).
func (m *Member) Progress() Progress {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.progress
}

// Lines returns every line the member printed so far.
func (m *Member) Lines() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.lines...)
}

// Hosts returns the automanaged health addresses of the member's
// cluster, for [Config.Hosts].
func (m *Member) Hosts() []string { return m.hosts }

// Pid returns the member's process id.
func (m *Member) Pid() int { return m.cmd.Process.Pid }

// Done is closed when the member has exited and its output is read.
func (m *Member) Done() <-chan struct{} { return m.done }

// Kill kills the member at once (SIGKILL on Unix): no shutdown, no
// goodbye to the cluster.
func (m *Member) Kill() error { return m.cmd.Process.Kill() }

// Stop kills the member if it still runs and waits until it has exited.
func (m *Member) Stop() {
	m.cmd.Process.Kill()
	<-m.done
}

// read parses the member's stdout until it ends, then reaps the process.
func (m *Member) read(out io.Reader) {
	defer close(m.done)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		m.mu.Lock()
		m.lines = append(m.lines, line)
		switch {
		case line == "READY":
			m.ready = true
		case strings.HasPrefix(line, "READINESS "):
			m.readiness = strings.TrimPrefix(line, "READINESS ")
		case strings.HasPrefix(line, "HOSTED "):
			m.hosted++
		case strings.HasPrefix(line, "PROGRESS "):
			var p Progress
			if json.Unmarshal([]byte(strings.TrimPrefix(line, "PROGRESS ")), &p) == nil {
				m.progress = p
			}
		case strings.HasPrefix(line, "STATS "):
			var st Stats
			if json.Unmarshal([]byte(strings.TrimPrefix(line, "STATS ")), &st) == nil {
				m.stats = &st
			}
		}
		m.mu.Unlock()
	}
	m.cmd.Wait()
}

// FreePorts returns n ports free on 127.0.0.1 right now.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Start runs cfg.Members member processes of this very executable
// (os.Args[0], which must call [RunMemberIfChild] first thing), against
// a's token endpoint and API. They start sending requests at cfg.StartAt,
// for cfg.Run. Stop each member when done with it; on an error, the
// members already started are stopped.
func Start(a *Authority, cfg Config) ([]*Member, error) {
	n := cfg.Members
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	ports, err := FreePorts(2 * n)
	if err != nil {
		return nil, err
	}
	if cfg.Ports != nil {
		copy(ports, cfg.Ports)
	}
	hosts := cfg.Hosts
	if hosts == nil {
		for i := range n {
			hosts = append(hosts, fmt.Sprintf("127.0.0.1:%d", ports[n+i]))
		}
	}
	var members []*Member
	fail := func(err error) ([]*Member, error) {
		for _, m := range members {
			m.Stop()
		}
		return nil, err
	}
	for i := range n {
		cmd := exec.Command(os.Args[0], cfg.Args...)
		cmd.Env = append(os.Environ(),
			MemberEnv+"=1",
			envPort+"="+strconv.Itoa(ports[i]),
			envAutoPort+"="+strconv.Itoa(ports[n+i]),
			envHosts+"="+strings.Join(hosts, ","),
			envTokenURL+"="+a.TokenURL(),
			envAPIURL+"="+a.APIURL(),
			envRun+"="+cfg.Run.String(),
			envWorkers+"="+strconv.Itoa(cfg.Workers),
			envStart+"="+strconv.FormatInt(cfg.StartAt.UnixMilli(), 10),
		)
		switch cfg.Mode {
		case Direct:
			cmd.Env = append(cmd.Env, envDirect+"=1")
		case Client:
			cmd.Env = append(cmd.Env, envClient+"=1")
		case Stranger:
			cmd.Env = append(cmd.Env, envClient+"=1", envStranger+"=1")
		}
		if len(cfg.Etcd) > 0 {
			key := cfg.EtcdKey
			if key == "" {
				key = "/tokenmanager-test"
			}
			cmd.Env = append(cmd.Env, envEtcd+"="+strings.Join(cfg.Etcd, ","), envEtcdKey+"="+key)
		}
		if cfg.TLSDir != "" {
			cmd.Env = append(cmd.Env, envTLSDir+"="+cfg.TLSDir)
		}
		if i < len(cfg.Advertise) {
			cmd.Env = append(cmd.Env, envAdvertise+"="+cfg.Advertise[i])
		}
		if cfg.Progress {
			cmd.Env = append(cmd.Env, envProgress+"=1")
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return fail(err)
		}
		cmd.Stderr = cfg.Stderr
		if err := cmd.Start(); err != nil {
			return fail(fmt.Errorf("starting member %d: %w", i, err))
		}
		m := &Member{cmd: cmd, done: make(chan struct{}), hosts: hosts}
		go m.read(out)
		members = append(members, m)
	}
	return members, nil
}

// ErrTimeout is returned by [Wait] when members did not finish in time.
var ErrTimeout = errors.New("members did not finish in time")

// Wait waits up to limit for every member to finish and returns their
// stats, in order; a killed member has none (nil).
func Wait(members []*Member, limit time.Duration) ([]*Stats, error) {
	deadline := time.After(limit)
	var out []*Stats
	for _, m := range members {
		select {
		case <-m.done:
		case <-deadline:
			return nil, ErrTimeout
		}
		_, _, st := m.Snapshot()
		out = append(out, st)
	}
	return out, nil
}
