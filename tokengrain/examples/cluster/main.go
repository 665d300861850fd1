// Command cluster shows package tokengrain at work across processes: it
// runs itself again as 3 member processes that join a protoactor cluster
// on 127.0.0.1 and call one loopback API with tokens from one loopback
// token endpoint (2s tokens, so they roll over every second). One token
// grain owns the identity's token for the whole cluster, so each rollover
// costs one fetch, not one per member.
//
// It first runs a baseline of 10s, the same load with members fetching
// on their own, then the cluster for as long, printing each second the
// requests, the token endpoint's fetches and the rollovers so far;
// halfway through it kills (SIGKILL) the member hosting the grain, and
// the others carry on: the grain is activated again on a surviving
// member. It ends with one summary line,
//
//	cluster: members=3 requests=N failed=F fetches=K rollovers=R baseline_fetches=B
//
// where N and F are summed over the members that finished, K counts the
// token endpoint's calls during the cluster run, R the distinct tokens the
// API accepted in it (the shared token's rollovers), and B the token
// endpoint's calls during the baseline. It takes about 30 seconds and
// exits with status 1 if any request failed.
//
//	cd tokengrain && go run ./examples/cluster
//
// Flags: -etcd http://127.0.0.1:2379 makes the members use protoactor's
// etcd provider with that etcd (comma-separate several endpoints)
// instead of automanaged; -tls puts the members' remote on mutual TLS
// (tokengrain.MutualTLS), with a CA and a certificate made for the run.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-tokenmanager/tokenmanager/tokengrain/internal/clusterdemo"
)

const (
	members  = 3
	lifetime = 2 * time.Second // tokens roll over every second (1s refresh buffer)

	clusterStartup = 4 * time.Second // process start, StartMember's 1s, joining
	clusterRun     = 10 * time.Second
	killAt         = 5 * time.Second // into the cluster run

	baselineStartup = 2 * time.Second // process start, no cluster to join
	baselineRun     = clusterRun      // so that its fetches compare with the cluster's
)

func main() {
	// A member process: this very executable, run again by clusterdemo.Start.
	if code, ok := clusterdemo.RunMemberIfChild(); ok {
		os.Exit(code)
	}
	os.Exit(run())
}

// cluster is the flags' configuration of the cluster run.
var cluster clusterdemo.Config

func run() int {
	etcd := flag.String("etcd", "", "etcd endpoints (comma-separated): use protoactor's etcd provider")
	mtls := flag.Bool("tls", false, "mutual TLS between members")
	flag.Parse()
	if *etcd != "" {
		cluster.Etcd = strings.Split(*etcd, ",")
		cluster.EtcdKey = fmt.Sprintf("/tokenmanager-example-%d", time.Now().UnixNano())
	}
	if *mtls {
		dir, err := os.MkdirTemp("", "tokengrain-example-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if err := clusterdemo.WriteCredentials(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cluster.TLSDir = dir
	}
	fmt.Printf("%d member processes on 127.0.0.1, one identity (%s), %v tokens\n", members, clusterdemo.Identity, lifetime)

	fmt.Printf("\nbaseline: every member fetches on its own, for %v\n", baselineRun)
	base := clusterdemo.NewAuthority(lifetime)
	defer base.Close()
	baseline, err := runPhase(base, clusterdemo.Direct, baselineStartup, baselineRun, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		return 1
	}
	baselineFetches, _ := base.Counts()
	fmt.Printf("baseline: requests=%d failed=%d fetches=%d\n", baseline.requests, baseline.failed, baselineFetches)

	fmt.Printf("\ncluster: members share the token through its grain, for %v; the member hosting the grain is killed at %v\n", clusterRun, killAt)
	a := clusterdemo.NewAuthority(lifetime)
	defer a.Close()
	res, err := runPhase(a, clusterdemo.Cluster, clusterStartup, clusterRun, killAt)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		return 1
	}
	fetches, rollovers := a.Counts()

	fmt.Printf("cluster: members=%d requests=%d failed=%d fetches=%d rollovers=%d baseline_fetches=%d\n",
		members, res.requests, res.failed, fetches, rollovers, baselineFetches)
	if res.failed > 0 {
		return 1
	}
	return 0
}

// result sums the stats of the members that finished.
type result struct {
	requests, failed int64
}

// runPhase runs the members in mode against a for run, after startup,
// printing progress each second; with kill > 0, it kills the member
// hosting the grain that far into the run.
func runPhase(a *clusterdemo.Authority, mode clusterdemo.Mode, startup, run, kill time.Duration) (result, error) {
	start := time.Now().Add(startup)
	cfg := clusterdemo.Config{Members: members, Mode: mode, StartAt: start, Run: run, Progress: true}
	if mode == clusterdemo.Cluster {
		cfg.Etcd, cfg.EtcdKey, cfg.TLSDir = cluster.Etcd, cluster.EtcdKey, cluster.TLSDir
	}
	ms, err := clusterdemo.Start(a, cfg)
	if err != nil {
		return result{}, err
	}
	defer func() {
		for _, m := range ms {
			m.Stop()
		}
	}()

	time.Sleep(time.Until(start))
	ready := 0
	var pids []string
	for _, m := range ms {
		if r, _, _ := m.Snapshot(); r {
			ready++
		}
		pids = append(pids, fmt.Sprint(m.Pid()))
	}
	fmt.Printf("  %d/%d members ready (pids %s), sending requests\n", ready, members, strings.Join(pids, ", "))

	// Distinct tokens the API accepted: in the cluster, the shared token's
	// rollovers; in the baseline, every member's own.
	tokens := "rollovers"
	if mode == clusterdemo.Direct {
		tokens = "tokens"
	}
	var victim *clusterdemo.Member
	victimIndex := -1
	var hostedAtKill []int // HOSTED lines per member when the victim died
	moved := false
	var prevTotal int64
	prev := make([]int64, len(ms))
	for sec := time.Second; sec <= run; sec += time.Second {
		// Members report each second from the start; look just after.
		time.Sleep(time.Until(start.Add(sec + 200*time.Millisecond)))
		// A surviving member activated the grain since the kill.
		if victim != nil && !moved {
			for i, m := range ms {
				if m != victim && m.Hosted() > hostedAtKill[i] {
					fmt.Printf("  the grain of %s is now hosted by member %d\n", clusterdemo.Identity, i+1)
					moved = true
				}
			}
		}
		var total int64
		per := make([]string, len(ms))
		for i, m := range ms {
			n := requestsOf(m)
			total += n
			if m == victim {
				per[i] = "killed"
			} else {
				per[i] = fmt.Sprint(n - prev[i])
			}
			prev[i] = n
		}
		fetches, accepted := a.Counts()
		fmt.Printf("  [%4.1fs] requests=%6d (+%5d)  fetches=%2d  %s=%2d  requests/s per member: %s\n",
			sec.Seconds(), total, total-prevTotal, fetches, tokens, accepted, strings.Join(per, " "))
		prevTotal = total
		if kill > 0 && victim == nil && sec+time.Second >= kill {
			time.Sleep(time.Until(start.Add(kill)))
			// The member that says it hosts the grain (the last, should
			// the grain have moved while the cluster formed).
			for i, m := range ms {
				if _, hosts, _ := m.Snapshot(); hosts {
					victim, victimIndex = m, i
				}
				hostedAtKill = append(hostedAtKill, m.Hosted())
			}
			if victim == nil {
				return result{}, fmt.Errorf("no member says it hosts the grain")
			}
			fmt.Printf("  [%4.1fs] killing member %d (pid %d), which hosts the grain of %s\n",
				kill.Seconds(), victimIndex+1, victim.Pid(), clusterdemo.Identity)
			if err := victim.Kill(); err != nil {
				return result{}, err
			}
		}
	}

	stats, err := clusterdemo.Wait(ms, 30*time.Second)
	if err != nil {
		return result{}, err
	}
	var res result
	for i, st := range stats {
		switch {
		case ms[i] == victim:
			fmt.Printf("  member %d: killed at %v\n", i+1, kill)
		case st == nil:
			return res, fmt.Errorf("member %d printed no stats: %q", i+1, ms[i].Lines())
		default:
			fmt.Printf("  member %d: requests=%d failed=%d slow=%d max_ms=%d fallbacks=%d\n",
				i+1, st.Requests, st.Failed, st.Slow, st.MaxMs, st.Fallbacks)
			if st.Failed > 0 {
				fmt.Printf("  member %d: first failure: %s\n", i+1, st.FirstErr)
			}
			res.requests += st.Requests
			res.failed += st.Failed
		}
	}
	return res, nil
}

// requestsOf returns the requests m sent so far: its final figure once it
// has printed it, else its latest progress report.
func requestsOf(m *clusterdemo.Member) int64 {
	if _, _, st := m.Snapshot(); st != nil {
		return st.Requests
	}
	return m.Progress().Requests
}
