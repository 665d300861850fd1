package userload_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
)

// runFor is how long the load runs: TM_USERLOAD_SECONDS, 60 by default.
func runFor(t *testing.T) time.Duration {
	if s := os.Getenv("TM_USERLOAD_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("TM_USERLOAD_SECONDS=%q: want a whole number of seconds", s)
		}
		return time.Duration(n) * time.Second
	}
	return 60 * time.Second
}

// freePorts returns n ports free on 127.0.0.1 right now.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// awaitReady waits until every member said READY.
func awaitReady(t *testing.T, members []*member) {
	t.Helper()
	testutil.Within(t, 30*time.Second, "members ready", func() bool {
		for _, m := range members {
			if !m.isReady() {
				return false
			}
		}
		return true
	})
}

// outcome is one mode's figures.
type outcome struct {
	mode                            string
	requests, failed, reauth, revEv int64
	refreshes, reuses               int64
	revokedUsers                    int
	worstUser                       string // the user closest to the bound (grain mode)
	overBound                       []string
}

// TestLoad_oneRefreshPerRolloverAcrossMembers: three member processes
// serve 100 users each for a minute, with 2 s access tokens and a token
// server that rotates refresh tokens and revokes the family of a reused
// one. Three ways run side by side, each with its own server and
// database:
//   - grain: each user's cluster grain refreshes; members ask it. 0
//     failed requests, 0 invalid_grant, and per user at most one
//     refresh per access-token rollover plus one.
//   - lock: each member refreshes for itself over pgstore's lock. 0
//     failed, 0 invalid_grant, about one refresh per member per
//     rollover.
//   - nolock: each member refreshes for itself over a store shared
//     without a lock, as replicas do today: refresh tokens are reused
//     and families revoked.
func TestLoad_oneRefreshPerRolloverAcrossMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of load on nine processes: skipped with -short")
	}
	run := runFor(t)
	const nUsers, nMembers = 100, 3
	modes := []string{modeGrain, modeLock, modeNoLock}
	rigs := map[string]*rig{}
	all := map[string][]*member{}
	var everyone []*member
	for _, mode := range modes {
		rigs[mode] = newRig(t, nUsers)
	}
	// Start every member first, then tell them one start time: their
	// figures cover the same minute.
	startAt := time.Now().Add(8 * time.Second)
	for _, mode := range modes {
		cfg := memberConfig{mode: mode, users: nUsers, workers: 4, run: run, startAt: startAt, ports: freePorts(t, 2*nMembers)}
		for i := range nMembers {
			m := rigs[mode].start(t, cfg, i)
			all[mode] = append(all[mode], m)
			everyone = append(everyone, m)
		}
	}
	awaitReady(t, everyone)
	if time.Now().After(startAt) {
		t.Fatal("members took longer than 8 s to start: the modes' runs do not overlap")
	}
	var outs []outcome
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, mode := range modes {
		wg.Go(func() {
			o := outcome{mode: mode}
			for _, m := range all[mode] {
				st := m.wait(run + time.Until(startAt) + 60*time.Second)
				if st == nil {
					o.failed = -1
					continue
				}
				o.requests += st.Requests
				o.failed += st.Failed
				o.reauth += st.Reauth
				o.revEv += st.Revoked
			}
			r := rigs[mode]
			o.refreshes, o.reuses = r.srv.Refreshes(), r.srv.Reuses()
			worst := -1.0
			for i, seed := range r.seeds {
				f, _ := r.srv.Family(seed)
				if f.Revoked {
					o.revokedUsers++
				}
				// A single process refreshes every (lifetime - buffer):
				// that many rollovers over the span of its refreshes,
				// plus the first fetch.
				rollovers := int64(f.Last.Sub(f.First)/(lifetimeSeconds*time.Second-refreshBuffer)) + 1
				if ratio := float64(f.Refreshes) / float64(rollovers); ratio > worst {
					worst = ratio
					o.worstUser = fmt.Sprintf("%s: %d refreshes, %d rollovers", identity(i), f.Refreshes, rollovers)
				}
				if f.Refreshes > rollovers+1 {
					o.overBound = append(o.overBound, fmt.Sprintf("%s: %d refreshes > %d rollovers + 1", identity(i), f.Refreshes, rollovers))
				}
			}
			mu.Lock()
			outs = append(outs, o)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.SortFunc(outs, func(a, b outcome) int { return slices.Index(modes, a.mode) - slices.Index(modes, b.mode) })
	for _, o := range outs {
		t.Logf("%-6s %d members x %d users x %v: %d requests, %d failed (%d re-auth), %d refreshes, %d refresh tokens reused, %d of %d users revoked, %d revoked events; most refreshes per rollover: %s",
			o.mode, nMembers, nUsers, run, o.requests, o.failed, o.reauth, o.refreshes, o.reuses, o.revokedUsers, nUsers, o.revEv, o.worstUser)
	}
	for _, o := range outs {
		switch o.mode {
		case modeGrain, modeLock:
			if o.failed != 0 || o.reauth != 0 || o.reuses != 0 || o.revokedUsers != 0 || o.requests == 0 {
				t.Errorf("%s: %d requests, %d failed (-1: a member printed no figures), %d invalid_grant, %d reused, %d users revoked; want requests and no failure", o.mode, o.requests, o.failed, o.reauth, o.reuses, o.revokedUsers)
			}
		case modeNoLock:
			if o.reuses == 0 || o.revokedUsers == 0 {
				t.Errorf("nolock: %d reused, %d users revoked: the control shows none of the failures replicas hit today", o.reuses, o.revokedUsers)
			}
		}
		if o.mode == modeGrain && len(o.overBound) > 0 {
			t.Errorf("grain: %d users refreshed more than once per rollover + 1: %s", len(o.overBound), strings.Join(o.overBound[:min(5, len(o.overBound))], "; "))
		}
	}
}

// TestCrash_killDuringRotations: three members serve 50 users through
// the grain while, at random moments, a member is killed (SIGKILL) and
// started again, until the server has answered 1,000 refreshes. Then
// every user's stored refresh token must be the one the server issued
// last, its family alive, except where the member that got the newest
// token was killed before it could store it: the documented window
// between the server's answer and the store's commit. Each such loss is
// reported with how long before the kill the token was issued.
func TestCrash_killDuringRotations(t *testing.T) {
	if testing.Short() {
		t.Skip("kills member processes for a minute: skipped with -short")
	}
	const nUsers, nMembers, rotations = 50, 3, 1000
	const window = time.Second // a member that lived this long after the answer had time to commit it
	r := newRig(t, nUsers)
	cfg := memberConfig{mode: modeGrain, users: nUsers, workers: 4, startAt: time.Now().Add(6 * time.Second), ports: freePorts(t, 2*nMembers)}
	members := make([]*member, nMembers)
	for i := range members {
		members[i] = r.start(t, cfg, i)
	}
	awaitReady(t, members)
	type kill struct {
		pid string // as the member names itself to the server
		at  time.Time
	}
	var kills []kill
	deadline := time.Now().Add(3 * time.Minute)
	time.Sleep(time.Until(cfg.startAt) + 2*time.Second)
	for r.srv.Refreshes() < rotations {
		if time.Now().After(deadline) {
			t.Fatalf("%d refreshes after 3 minutes; want %d", r.srv.Refreshes(), rotations)
		}
		time.Sleep(time.Duration(200+rand.IntN(1000)) * time.Millisecond)
		i := rand.IntN(nMembers)
		victim := members[i]
		pid := victim.name + "/" + strconv.Itoa(victim.cmd.Process.Pid)
		at := time.Now()
		victim.kill()
		kills = append(kills, kill{pid: pid, at: at})
		members[i] = r.start(t, cfg, i) // on the same ports: the others know them
		awaitReady(t, members[i:i+1])
	}
	// Let the grains settle, then stop every member gracefully.
	time.Sleep(3 * time.Second)
	var requests, failed int64
	for _, m := range members {
		if st := m.finish(30 * time.Second); st != nil {
			requests += st.Requests
			failed += st.Failed
		}
	}
	killedAt := map[string]time.Time{}
	for _, k := range kills {
		killedAt[k.pid] = k.at
	}
	var lost, outside []string
	for i, seed := range r.seeds {
		f, _ := r.srv.Family(seed)
		stored := r.stored(t, i)
		if !f.Revoked && stored == f.Newest {
			continue
		}
		k, killed := killedAt[f.IssuedTo]
		gap := k.Sub(f.IssuedAt)
		what := fmt.Sprintf("%s (revoked %v, stored the newest %v): newest token issued to %s %v before its kill (negative: after)",
			identity(i), f.Revoked, stored == f.Newest, f.IssuedTo, gap.Round(time.Microsecond))
		// A negative gap is an answer to a request the member sent
		// before it was killed: it never read it.
		if !killed || stored == f.Newest || gap > window {
			outside = append(outside, what)
			continue
		}
		lost = append(lost, what)
	}
	t.Logf("%d refreshes, %d kills (SIGKILL); members alive at the end: %d requests, %d failed; %d of %d users lost a rotation inside the window",
		r.srv.Refreshes(), len(kills), requests, failed, len(lost), nUsers)
	for _, l := range lost {
		t.Log("  lost inside the window:", l)
	}
	if len(kills) == 0 {
		t.Fatal("no member was killed")
	}
	if len(outside) > 0 {
		t.Fatalf("%d users lost a refresh token outside the window:\n%s", len(outside), strings.Join(outside, "\n"))
	}
}
