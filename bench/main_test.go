package bench

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain checks that no benchmark or test leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestScenarios runs every benchmark's setup at a tiny size, so `go test`
// proves the harness works and the comparisons measure what they claim.
func TestScenarios(t *testing.T) {
	t.Run("cached_token", func(t *testing.T) {
		for _, row := range cachedRows {
			t.Run(row.name, func(t *testing.T) {
				base := &checkingBase{want: benchValue, resp: okResponse()}
				rt, cleanup := row.setup(t, base)
				defer cleanup()
				var wg sync.WaitGroup
				for range 4 {
					wg.Go(func() {
						req := newRequest(t, benchURL)
						for range 25 {
							if err := roundTrip(rt, req); err != nil {
								t.Error(err)
								return
							}
						}
						if req.Header.Get(benchHeader) != "" {
							t.Errorf("%s modified the caller's request", row.name)
						}
					})
				}
				wg.Wait()
			})
		}
	})

	t.Run("loopback", func(t *testing.T) {
		srv := newLoopbackServer()
		defer srv.Close()
		clients := newLoopbackClients(t, 4)
		defer func() {
			for _, c := range clients {
				c.close()
			}
		}()
		for _, c := range clients {
			n, _, err := hammer(c.client, srv.URL, 4, 20*time.Millisecond)
			if err != nil || n == 0 {
				t.Errorf("%s: %d requests, err %v", c.name, n, err)
			}
		}
		// Each client sends the token, or none for plain.
		seen := make(chan string, 1)
		hdrSrv := newHeaderServer(seen)
		defer hdrSrv.Close()
		for _, c := range clients {
			if err := get(c.client, hdrSrv.URL); err != nil {
				t.Fatal(err)
			}
			want := benchValue
			if c.name == "plain" {
				want = ""
			}
			if got := <-seen; got != want {
				t.Errorf("%s: %s = %q; want %q", c.name, benchHeader, got, want)
			}
		}
	})

	t.Run("loopback_interleaved", func(t *testing.T) {
		srv := newLoopbackServer()
		defer srv.Close()
		rate, _, err := runInterleaved(t, srv, 4, 2, 10*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range rate {
			if r <= 0 {
				t.Errorf("client %d: %v req/s; want > 0", i, r)
			}
		}
	})

	t.Run("rollover", func(t *testing.T) {
		cfg := rolloverConfig{
			callers:    2,
			window:     50 * time.Millisecond,
			fetchDelay: 2 * time.Millisecond,
			lifetime:   2,
			early:      time.Second,
			pace:       time.Millisecond,
		}
		for _, side := range []string{"oauth2", "tokenmanager"} {
			r := runRollover(t, side, cfg)
			if r.requests == 0 || r.errors != 0 {
				t.Errorf("%s: %d requests, %d errors", side, r.requests, r.errors)
			}
		}
	})

	t.Run("stampede", func(t *testing.T) {
		cfg := stampedeConfig{n: 200, fetchDelay: 5 * time.Millisecond}
		if testing.Short() {
			cfg.n = 50
		}
		for _, side := range []string{"oauth2_cold", "tokenmanager_cold", "tokenmanager_revoked"} {
			r := runStampede(t, side, cfg)
			if r.calls != 1 || r.failures != 0 {
				t.Errorf("%s: %d provider calls, %d failed requests; want 1 call, 0 failed", side, r.calls, r.failures)
			}
			if len(r.latency) != cfg.n {
				t.Errorf("%s: %d latencies; want %d", side, len(r.latency), cfg.n)
			}
		}
	})
}

// newHeaderServer reports the token header of each request on seen.
func newHeaderServer(seen chan<- string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case seen <- r.Header.Get(benchHeader):
		default:
		}
	}))
}
