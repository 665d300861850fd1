package bench

import (
	"net/http"
	"testing"
	"time"
)

// BenchmarkCachedToken measures what a cached token adds to one request,
// one goroutine at a time, over an in-memory base (no network): oauth2 is
// oauth2.Transport over oauth2.ReuseTokenSource, tokenmanager is
// transport.RoundTripper, floor is req.Clone plus one header, actor_ask
// asks the token actor per request instead of reading its snapshot.
func BenchmarkCachedToken(b *testing.B) { benchRows(b, cachedRows) }

// benchRows runs each row as a sub-benchmark: one request at a time with
// a cached token, over an in-memory base.
func benchRows(b *testing.B, rows []cachedRow) {
	for _, row := range rows {
		b.Run(row.name, func(b *testing.B) {
			rt, cleanup := row.setup(b, newMemBase())
			defer cleanup()
			req := newRequest(b, benchURL)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
			}
		})
	}
}

// BenchmarkCachedTokenParallel is BenchmarkCachedToken with 64 goroutines
// per GOMAXPROCS sharing one RoundTripper.
func BenchmarkCachedTokenParallel(b *testing.B) {
	for _, row := range cachedRows {
		b.Run(row.name, func(b *testing.B) {
			rt, cleanup := row.setup(b, newMemBase())
			defer cleanup()
			b.ReportAllocs()
			b.SetParallelism(64)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req, err := http.NewRequest(http.MethodGet, benchURL, nil)
				if err != nil {
					b.Error(err)
					return
				}
				for pb.Next() {
					resp, err := rt.RoundTrip(req)
					if err != nil {
						b.Error(err)
						return
					}
					resp.Body.Close()
				}
			})
		})
	}
}

// loopbackCallers is how many goroutines send requests at once in the
// loopback benchmarks.
const loopbackCallers = 64

// BenchmarkLoopback measures requests per second from 64 concurrent
// callers to one httptest server on 127.0.0.1, through a plain
// http.Client, through tokenmanager's, and through floorTransport, each
// over an identically configured transport.
func BenchmarkLoopback(b *testing.B) {
	srv := newLoopbackServer()
	defer srv.Close()
	for i, name := range []string{"plain", "tokenmanager", "floor"} {
		b.Run(name, func(b *testing.B) {
			clients := newLoopbackClients(b, loopbackCallers)
			defer func() {
				for _, c := range clients {
					c.close()
				}
			}()
			client := clients[i].client
			if err := get(client, srv.URL); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetParallelism(parallelismFor(loopbackCallers))
			b.ResetTimer()
			cpu0 := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := get(client, srv.URL); err != nil {
						b.Error(err)
						return
					}
				}
			})
			cpu := cpuTime() - cpu0
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/req")
		})
	}
}

// BenchmarkLoopbackInterleaved measures the same as BenchmarkLoopback in
// 10 rounds of 200ms per client, rotating the order, so noise from other
// work on the machine falls on all clients alike. It reports each rate and
// each client's process CPU time per request (client and server side),
// which other processes on the machine cannot inflate, and tokenmanager's
// ratios to plain and to floor for both.
func BenchmarkLoopbackInterleaved(b *testing.B) {
	srv := newLoopbackServer()
	defer srv.Close()
	names := []string{"plain", "tokenmanager", "floor"}
	rate := make([]float64, len(names))
	cpu := make([]float64, len(names))
	for range b.N {
		r, c, err := runInterleaved(b, srv, loopbackCallers, 10, 200*time.Millisecond)
		if err != nil {
			b.Fatal(err)
		}
		for i := range rate {
			rate[i] += r[i]
			cpu[i] += float64(c[i].Nanoseconds()) / 1e3
		}
	}
	for i, name := range names {
		b.ReportMetric(rate[i]/float64(b.N), name+"-req/s")
		b.ReportMetric(cpu[i]/float64(b.N), name+"-cpu-us/req")
	}
	b.ReportMetric(rate[1]/rate[0], "tm/plain-req/s")
	b.ReportMetric(rate[1]/rate[2], "tm/floor-req/s")
	b.ReportMetric(cpu[1]/cpu[0], "tm/plain-cpu")
	b.ReportMetric(cpu[1]/cpu[2], "tm/floor-cpu")
}

// rolloverBench is the rollover scenario: 2s tokens replaced 1s before
// expiry by a token endpoint that takes 300ms, 8 callers each sending a
// request per millisecond for 4s of real time per side.
var rolloverBench = rolloverConfig{
	callers:    8,
	window:     4 * time.Second,
	fetchDelay: 300 * time.Millisecond,
	lifetime:   2,
	early:      time.Second,
	pace:       time.Millisecond,
}

// BenchmarkRollover counts requests that took longer than half the token
// endpoint's delay while tokens were replaced (stalls), x/oauth2 first.
// See rolloverConfig for why the comparison is fair.
func BenchmarkRollover(b *testing.B) {
	for _, side := range []string{"oauth2", "tokenmanager"} {
		b.Run(side, func(b *testing.B) {
			var total rolloverResult
			for range b.N {
				r := runRollover(b, side, rolloverBench)
				total.add(r)
			}
			total.report(b, "requests")
		})
	}
}

// stampedeBench is the stampede scenario: 10,000 requests released at
// once while a 20ms fetch runs.
var stampedeBench = stampedeConfig{n: 10000, fetchDelay: 20 * time.Millisecond}

// BenchmarkStampede releases 10,000 concurrent requests at cold start
// (x/oauth2 and tokenmanager) and after the cached token was revoked
// (tokenmanager: every request gets a 401, recovers, and is resent). It
// reports provider calls per stampede (the worst stampede and the mean)
// and latency percentiles over all requests. ns/op is one whole stampede.
func BenchmarkStampede(b *testing.B) {
	for _, side := range []string{"oauth2_cold", "tokenmanager_cold", "tokenmanager_revoked"} {
		b.Run(side, func(b *testing.B) {
			var (
				calls, worst, failures int64
				latency                []time.Duration
			)
			b.StopTimer()
			for range b.N {
				r := runStampede(b, side, stampedeBench)
				calls += r.calls
				worst = max(worst, r.calls)
				failures += r.failures
				latency = append(latency, r.latency...)
			}
			sortDurations(latency)
			b.ReportMetric(float64(calls)/float64(b.N), "calls/stampede")
			b.ReportMetric(float64(worst), "max-calls")
			b.ReportMetric(ms(percentile(latency, 50)), "p50-ms")
			b.ReportMetric(ms(percentile(latency, 99)), "p99-ms")
			b.ReportMetric(float64(failures), "failed")
		})
	}
}

// BenchmarkCachedTokenInterleaved times the oauth2, tokenmanager and
// floor rows of BenchmarkCachedToken against each other in 31 alternating
// rounds of 20,000 requests, first from one goroutine (seq) and then from
// 128 (par), and reports each row's median ns per request and the ratios
// the targets are stated in. On a shared machine these ratios are steadier
// than ratios of separate rows.
func BenchmarkCachedTokenInterleaved(b *testing.B) {
	rows := cachedRows[:3] // oauth2, tokenmanager, floor
	for _, mode := range []struct {
		name       string
		goroutines int
	}{{"seq", 1}, {"par", 128}} {
		b.Run(mode.name, func(b *testing.B) {
			var sum [3]float64
			for range b.N {
				med, err := runCachedInterleaved(b, rows, 31, 20000, mode.goroutines)
				if err != nil {
					b.Fatal(err)
				}
				for i := range sum {
					sum[i] += med[i]
				}
			}
			for i, row := range rows {
				b.ReportMetric(sum[i]/float64(b.N), row.name+"-ns/req")
			}
			b.ReportMetric(sum[1]/sum[0], "tm/oauth2")
			b.ReportMetric(sum[1]/sum[2], "tm/floor")
		})
	}
}
