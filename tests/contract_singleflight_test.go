package tests

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
)

// crowd is how many requests race for one token.
const crowd = 500

// burst starts n requests at once, each in a goroutine of its own, and
// returns the channel their results arrive on.
func burst(rt http.RoundTripper, n int) <-chan result {
	out := make(chan result, n)
	for i := range n {
		go func() { out <- send(context.Background(), rt, fmt.Sprint("r", i)) }()
	}
	return out
}

// gather waits for n results.
func gather(t *testing.T, ch <-chan result, n int) []result {
	t.Helper()
	out := make([]result, 0, n)
	timeout := time.After(testutil.Patience)
	for len(out) < n {
		select {
		case r := <-ch:
			out = append(out, r)
		case <-timeout:
			t.Fatalf("%d of %d requests returned", len(out), n)
		}
	}
	return out
}

// allCarried fails the test unless every result is a 200 sent with auth.
func allCarried(t *testing.T, results []result, auth string) {
	t.Helper()
	bad := 0
	for _, r := range results {
		if r.err != nil || r.status != http.StatusOK || r.auth != auth {
			if bad == 0 {
				t.Errorf("request: status %d, auth %q, err %v; want 200 with %q", r.status, r.auth, r.err, auth)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d requests failed", bad, len(results))
	}
}

// stormWhileFetching sends crowd requests while the provider is held, lets
// them queue on the one fetch, releases it and checks that all of them got
// through with want and that the provider was called exactly wantCalls
// times in all.
func stormWhileFetching(t *testing.T, p *testutil.Provider, rt http.RoundTripper, release func(), wantCalls int64, want string) {
	t.Helper()
	ch := burst(rt, crowd)
	testutil.Eventually(t, "the fetch to start", func() bool { return p.Calls.Load() >= wantCalls })
	// Give the crowd time to pile up on the held fetch; the provider is
	// gated, not timed, so this only widens the race window.
	time.Sleep(50 * time.Millisecond)
	release()
	results := gather(t, ch, crowd)
	allCarried(t, results, want)
	if got := p.Calls.Load(); got != wantCalls {
		t.Errorf("provider calls = %d; want %d", got, wantCalls)
	}
}

func TestSingleFlight_coldStart(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	release := p.Hold()
	defer release()
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, &testutil.Backend{})
	stormWhileFetching(t, p, rt, release, 1, "Bearer tok-1")
}

func TestSingleFlight_atExpiry(t *testing.T) {
	mock := clock.NewMock()
	p := &testutil.Provider{ExpiresIn: 60}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, Clock: mock}, &testutil.Backend{})
	mustOK(t, rt)

	release := p.Hold()
	defer release()
	// Past expiry: the early-refresh timer (at 50s) may start the one fetch
	// itself; either way the crowd must share it.
	mock.Add(61 * time.Second)
	stormWhileFetching(t, p, rt, release, 2, "Bearer tok-2")
}

func TestSingleFlight_afterRevocation(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	b := &testutil.Backend{}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, b)
	mustOK(t, rt)

	release := p.Hold()
	defer release()
	b.Revoke("tok-1")
	stormWhileFetching(t, p, rt, release, 2, "Bearer tok-2")
}
