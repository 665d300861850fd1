package tokengrain_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(memberEnv) != "" {
		os.Exit(runMember())
	}
	goleak.VerifyTestMain(m)
}

// authority is the loopback identity provider and API the members share:
// the token endpoint issues tok-1, tok-2, ... with the current lifetime,
// and the API accepts a token it issued that has neither expired nor been
// revoked.
type authority struct {
	token, api *httptest.Server

	mu       sync.Mutex
	lifetime time.Duration
	issued   map[string]time.Time // token -> expiry
	fetches  []time.Time          // when each token was issued
	accepted map[string]bool      // tokens the API accepted
}

func newAuthority(t *testing.T, lifetime time.Duration) *authority {
	a := &authority{lifetime: lifetime, issued: map[string]time.Time{}, accepted: map[string]bool{}}
	a.token = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.fetches = append(a.fetches, time.Now())
		tok := fmt.Sprintf("tok-%d", len(a.fetches))
		a.issued[tok] = time.Now().Add(a.lifetime)
		life := a.lifetime
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":%d}`, tok, int(life/time.Second))
	}))
	a.api = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		a.mu.Lock()
		exp, ok := a.issued[tok]
		ok = ok && time.Now().Before(exp)
		if ok {
			a.accepted[tok] = true
		}
		a.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(a.token.Close)
	t.Cleanup(a.api.Close)
	return a
}

func (a *authority) setLifetime(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lifetime = d
}

// revokeAll makes the API reject every token issued so far.
func (a *authority) revokeAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.issued)
}

// fetchesBetween counts the tokens issued in [from, to).
func (a *authority) fetchesBetween(from, to time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, at := range a.fetches {
		if !at.Before(from) && at.Before(to) {
			n++
		}
	}
	return n
}

func (a *authority) counts() (fetches, accepted int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.fetches), len(a.accepted)
}

// member is a member process as the parent sees it.
type member struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	ready bool
	hosts bool // the grain of identity lives here
	stats *memberStats
	lines []string
	done  chan struct{}
}

func (m *member) snapshot() (ready, hosts bool, st *memberStats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ready, m.hosts, m.stats
}

// freePorts returns n ports free on 127.0.0.1 right now.
func freePorts(t *testing.T, n int) []int {
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// startMembers runs n member processes that send requests for run, from
// startAt on; direct ones fetch on their own (the baseline).
func startMembers(t *testing.T, a *authority, n int, direct bool, startAt time.Time, run time.Duration) []*member {
	mode := ""
	if direct {
		mode = "TM_DIRECT=1"
	}
	return startMembersWith(t, a, n, mode, startAt, run)
}

// startMembersWith is startMembers with a mode variable for every member.
func startMembersWith(t *testing.T, a *authority, n int, mode string, startAt time.Time, run time.Duration) []*member {
	ports := freePorts(t, 2*n)
	var hosts []string
	for i := range n {
		hosts = append(hosts, fmt.Sprintf("127.0.0.1:%d", ports[n+i]))
	}
	var members []*member
	for i := range n {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(),
			memberEnv+"=1",
			"TM_PORT="+strconv.Itoa(ports[i]),
			"TM_AUTO_PORT="+strconv.Itoa(ports[n+i]),
			"TM_HOSTS="+strings.Join(hosts, ","),
			"TM_TOKEN_URL="+a.token.URL+"/token",
			"TM_API_URL="+a.api.URL+"/orders",
			"TM_RUN="+run.String(),
			"TM_WORKERS=8",
			"TM_START_UNIX_MS="+strconv.FormatInt(startAt.UnixMilli(), 10),
		)
		if mode != "" {
			cmd.Env = append(cmd.Env, mode)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		m := &member{cmd: cmd, done: make(chan struct{})}
		go func() {
			defer close(m.done)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				line := sc.Text()
				m.mu.Lock()
				m.lines = append(m.lines, line)
				switch {
				case line == "READY":
					m.ready = true
				case strings.HasPrefix(line, "HOSTED "):
					m.hosts = true
				case strings.HasPrefix(line, "STATS "):
					var st memberStats
					if json.Unmarshal([]byte(strings.TrimPrefix(line, "STATS ")), &st) == nil {
						m.stats = &st
					}
				}
				m.mu.Unlock()
			}
			cmd.Wait()
		}()
		members = append(members, m)
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-m.done
		})
	}
	return members
}

// wait waits for every member to finish and returns their stats; a
// killed member has none.
func wait(t *testing.T, members []*member, limit time.Duration) []*memberStats {
	deadline := time.After(limit)
	var out []*memberStats
	for _, m := range members {
		select {
		case <-m.done:
		case <-deadline:
			t.Fatal("members did not finish in time")
		}
		_, _, st := m.snapshot()
		out = append(out, st)
	}
	return out
}

func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts member processes: skipped with -short")
	}
	const startup = 4 * time.Second // process start, StartMember's 1s, joining

	// The baseline: three processes, each fetching on its own.
	base := newAuthority(t, 2*time.Second)
	baseStart := time.Now().Add(2 * time.Second)
	const phase = 6 * time.Second
	direct := startMembers(t, base, 3, true, baseStart, phase)
	wait(t, direct, phase+30*time.Second)
	baselineFetches, _ := base.counts()

	// The cluster: steady rollover with 2s tokens; then 60s tokens and a
	// revocation every member sees; then 2s tokens again and the member
	// hosting the grain killed.
	a := newAuthority(t, 2*time.Second)
	start := time.Now().Add(startup)
	const run = 18 * time.Second
	members := startMembers(t, a, 3, false, start, run)
	at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }

	at(phase)
	steadyFetches := a.fetchesBetween(start, start.Add(phase))
	a.setLifetime(time.Minute)
	at(phase + 1500*time.Millisecond)
	revokedAt := time.Now()
	a.revokeAll()
	at(phase + 4*time.Second)
	revocationFetches := a.fetchesBetween(revokedAt, time.Now())
	// Back to 2s tokens, rolling over while the grain's member dies.
	a.setLifetime(2 * time.Second)
	a.revokeAll()
	at(phase + 5500*time.Millisecond)
	var victim *member
	for _, m := range members {
		if _, hosts, _ := m.snapshot(); hosts {
			victim = m
		}
	}
	if victim == nil {
		t.Fatal("no member says it hosts the grain")
	}
	killedAt := time.Now()
	victim.cmd.Process.Signal(syscall.SIGKILL)
	stats := wait(t, members, run+30*time.Second)
	end := start.Add(run)
	afterKill := a.fetchesBetween(killedAt, end)
	fetches, accepted := a.counts()

	var requests, failed, slow, fallbacks int64
	var maxMs int64
	for i, st := range stats {
		if members[i] == victim {
			continue
		}
		if st == nil {
			t.Fatalf("a surviving member printed no stats: %q", members[i].lines)
		}
		requests += st.Requests
		failed += st.Failed
		slow += st.Slow
		fallbacks += st.Fallbacks
		maxMs = max(maxMs, st.MaxMs)
		if st.Failed > 0 {
			t.Errorf("member %d: %d failed requests, the first: %s", i, st.Failed, st.FirstErr)
		}
	}
	steadyRollovers := int(phase / time.Second) // a 2s token is replaced every second
	killRollovers := int(end.Sub(killedAt) / time.Second)
	const moves = 1
	t.Logf("cluster: members=3 requests=%d failed=%d slow=%d max_ms=%d fetches=%d accepted_tokens=%d baseline_fetches=%d",
		requests, failed, slow, maxMs, fetches, accepted, baselineFetches)
	t.Logf("steady %v: fetches=%d (rollovers ~%d, baseline %d); revocation: fetches=%d; after the kill: fetches=%d (rollovers ~%d) fallbacks=%d",
		phase, steadyFetches, steadyRollovers, baselineFetches, revocationFetches, afterKill, killRollovers, fallbacks)

	if steadyFetches > steadyRollovers+1 {
		t.Errorf("steady phase: %d fetches; want at most rollovers+1 = %d", steadyFetches, steadyRollovers+1)
	}
	if baselineFetches < 2*steadyFetches {
		t.Errorf("baseline fetched %d times, the cluster %d; want the cluster to save most", baselineFetches, steadyFetches)
	}
	if revocationFetches != 1 {
		t.Errorf("a revocation seen by every member cost %d fetches; want 1", revocationFetches)
	}
	if failed != 0 {
		t.Errorf("%d requests failed on surviving members", failed)
	}
	if afterKill > killRollovers+moves+1 {
		t.Errorf("after the kill: %d fetches; want at most rollovers+moves+1 = %d", afterKill, killRollovers+moves+1)
	}
}

func TestCluster_unreachableFallsBack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a member process: skipped with -short")
	}
	// A lone cluster client: no member hosts the kind, so every ask of
	// the grain fails, and the member fetches on its own.
	a := newAuthority(t, 2*time.Second)
	start := time.Now().Add(3 * time.Second)
	const run = 3 * time.Second
	members := startMembersWith(t, a, 1, "TM_CLIENT=1", start, run)
	st := wait(t, members, run+30*time.Second)[0]
	if st == nil {
		t.Fatalf("no stats: %q", members[0].lines)
	}
	fetches, _ := a.counts()
	t.Logf("unreachable cluster: requests=%d failed=%d max_ms=%d fallbacks=%d fetches=%d", st.Requests, st.Failed, st.MaxMs, st.Fallbacks, fetches)
	if st.Failed != 0 || st.Fallbacks == 0 || fetches == 0 {
		t.Errorf("requests=%d failed=%d fallbacks=%d fetches=%d; want every request served by direct fetches", st.Requests, st.Failed, st.Fallbacks, fetches)
	}
	if bound := int64(defaultBoundMs + 1000); st.MaxMs > bound {
		t.Errorf("slowest request %dms; want it within the ask bound and a fetch (%dms)", st.MaxMs, bound)
	}
}

// defaultBoundMs is tokengrain's default ask timeout.
const defaultBoundMs = 750
