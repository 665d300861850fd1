package tokengrain_test

import (
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/go-tokenmanager/tokenmanager/tokengrain/internal/clusterdemo"
)

// A member is this test binary run again by clusterdemo.Start: it joins
// the cluster (or, with clusterdemo.Direct, fetches on its own, for a
// baseline), sends requests for its run, and prints its figures as one
// JSON line. The member itself, the authority and the process handling
// live in internal/clusterdemo, shared with examples/cluster; what
// follows wraps them for tests.
func TestMain(m *testing.M) {
	if code, ok := clusterdemo.RunMemberIfChild(); ok {
		os.Exit(code)
	}
	goleak.VerifyTestMain(m)
}

// newAuthority starts the loopback token endpoint and API, closed when
// the test ends.
func newAuthority(t *testing.T, lifetime time.Duration) *clusterdemo.Authority {
	a := clusterdemo.NewAuthority(lifetime)
	t.Cleanup(a.Close)
	return a
}

// startMembers runs n member processes that send requests for run, from
// startAt on; direct ones fetch on their own (the baseline).
func startMembers(t *testing.T, a *clusterdemo.Authority, n int, direct bool, startAt time.Time, run time.Duration) []*clusterdemo.Member {
	mode := clusterdemo.Cluster
	if direct {
		mode = clusterdemo.Direct
	}
	return startMembersWith(t, a, n, mode, startAt, run)
}

// startMembersWith is startMembers with a mode for every member; they
// are killed when the test ends.
func startMembersWith(t *testing.T, a *clusterdemo.Authority, n int, mode clusterdemo.Mode, startAt time.Time, run time.Duration) []*clusterdemo.Member {
	return startMembersCfg(t, a, clusterdemo.Config{Members: n, Mode: mode, StartAt: startAt, Run: run})
}

// startMembersCfg is startMembersWith with a whole configuration; 8
// workers and progress reports unless cfg says otherwise.
func startMembersCfg(t *testing.T, a *clusterdemo.Authority, cfg clusterdemo.Config) []*clusterdemo.Member {
	if cfg.Workers == 0 {
		cfg.Workers = 8
	}
	cfg.Progress = true
	cfg.Args = []string{"-test.run=^$"}
	members, err := clusterdemo.Start(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		t.Cleanup(m.Stop)
	}
	return members
}

// wait waits for every member to finish and returns their stats; a
// killed member has none.
func wait(t *testing.T, members []*clusterdemo.Member, limit time.Duration) []*clusterdemo.Stats {
	stats, err := clusterdemo.Wait(members, limit)
	if err != nil {
		t.Fatal(err)
	}
	return stats
}
