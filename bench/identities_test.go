package bench

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"golang.org/x/oauth2"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// The BenchmarkIdentities benchmarks measure an owner of many identities
// (transport.NewMulti). Each reports its figures with b.ReportMetric, in
// units that read at a glance: heapB/identity, goroutines/identity,
// heapB/passivated, provider-calls/idle-hour, ratio-vs-single and
// overhead-us/p50. The memory and idle benchmarks hold 100,000 identities
// (2,000 with -short).

// identitiesN is how many identities the memory and idle benchmarks hold:
// 100,000, or 2,000 with -short.
func identitiesN() int {
	if testing.Short() {
		return 2000
	}
	return 100_000
}

// TestIdentitiesScenarios runs the BenchmarkIdentities scenarios at a tiny
// size, so `go test` proves their harness: identities fill, passivate to
// zero, and an idle hour costs no fetch.
func TestIdentitiesScenarios(t *testing.T) {
	f := newFleet(t, 300, tokenmanager.OwnerSettings{IdleTimeout: 90 * time.Minute}, newMemBase())
	defer f.m.Close()
	f.fill(t, 200)
	if got := f.m.Live(); got != 200 {
		t.Fatalf("Live() = %d; want 200", got)
	}
	for range 60 {
		f.mock.Add(time.Minute)
	}
	if got := f.calls.Load(); got != 200 {
		t.Errorf("provider calls after an idle hour = %d; want 200 (one per identity, none since)", got)
	}
	for f.m.Live() > 0 {
		f.mock.Add(time.Minute)
		time.Sleep(time.Millisecond)
	}
}

// fleet is a MultiRoundTripper over a mock clock whose identities each get
// a provider issuing tokens of the given lifetime, counted.
type fleet struct {
	m     *transport.MultiRoundTripper
	mock  *clock.Mock
	calls atomic.Int64
}

func newFleet(tb testing.TB, lifetime int64, s tokenmanager.OwnerSettings, base http.RoundTripper) *fleet {
	f := &fleet{mock: clock.NewMock()}
	return f.start(tb, lifetime, s, base, f.mock)
}

// start builds the fleet's MultiRoundTripper on clk.
func (f *fleet) start(tb testing.TB, lifetime int64, s tokenmanager.OwnerSettings, base http.RoundTripper, clk clock.Clock) *fleet {
	provider := func(context.Context) (tokenmanager.Token, error) {
		n := f.calls.Add(1)
		return tokenmanager.Token{AccessToken: "tok-" + strconv.FormatInt(n, 10), ExpiresIn: lifetime}, nil
	}
	s.Clock = clk
	s.SettingsFor = func(string) (tokenmanager.Settings, error) {
		return tokenmanager.Settings{GetCredentials: provider, Clock: clk}, nil
	}
	m, err := transport.NewMulti(s, transport.WithBase(base))
	if err != nil {
		tb.Fatal(err)
	}
	f.m = m
	return f
}

// fill gives n identities a cached token each, several at a time.
//
// A first request may return before the owner hosts its identity (see
// transport.MultiRoundTripper's first requests): each identity is asked
// once more, which returns from the cache once the owner hosts it, or
// from the owner as it does. What is measured next is the owner at rest,
// with no message in flight.
func (f *fleet) fill(tb testing.TB, n int) {
	f.fillRange(tb, 0, n)
	f.fillRange(tb, 0, n)
}

func identity(i int) string { return "tenant-" + strconv.Itoa(i) }

// heap returns the live heap after a full collection.
func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkIdentitiesMemory holds N identities with a cached token each
// and reports the heap and goroutines each costs; then lets them all go
// idle and reports the heap left per identity once every one is
// passivated (0 actors, 0 timers).
func BenchmarkIdentitiesMemory(b *testing.B) {
	n := identitiesN()
	for b.Loop() {
		f := newFleet(b, longLifetime, tokenmanager.OwnerSettings{IdleTimeout: time.Minute}, newMemBase())
		g0 := runtime.NumGoroutine()
		h0 := heap()
		f.fill(b, n)
		h1 := heap()
		g1 := runtime.NumGoroutine()
		if got := f.m.Live(); got != n {
			b.Fatalf("Live() = %d; want %d", got, n)
		}
		for f.m.Live() > 0 {
			f.mock.Add(time.Minute)
			time.Sleep(10 * time.Millisecond)
		}
		h2 := heap()
		b.ReportMetric(float64(int64(h1)-int64(h0))/float64(n), "heapB/identity")
		b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/identity")
		b.ReportMetric(float64(int64(h2)-int64(h0))/float64(n), "heapB/passivated")
		b.ReportMetric(float64(int64(h2)-int64(h0))/float64(max(int64(h1)-int64(h0), 1))*100, "%heap-left")
		f.m.Close()
	}
}

// BenchmarkIdentitiesIdleHour gives N identities a 5-minute token with one
// request each, then lets an hour pass on the mock clock with no request
// (IdleTimeout longer than that, so nothing is passivated): an owner does
// not refresh tokens nobody uses.
func BenchmarkIdentitiesIdleHour(b *testing.B) {
	n := identitiesN()
	for b.Loop() {
		f := newFleet(b, 300, tokenmanager.OwnerSettings{IdleTimeout: 2 * time.Hour}, newMemBase())
		f.fill(b, n)
		before := f.calls.Load()
		for range 60 {
			f.mock.Add(time.Minute)
		}
		time.Sleep(50 * time.Millisecond) // let any stray refresh reach the provider
		b.ReportMetric(float64(f.calls.Load()-before), "provider-calls/idle-hour")
		f.m.Close()
	}
}

// liveIdentities is how many identities are live in the cached-token
// comparison.
const liveIdentities = 10_000

// BenchmarkIdentitiesCachedToken compares a cached-token request through a
// MultiRoundTripper holding 10,000 live identities, the identity resolved
// per request from its context, with the single-identity RoundTripper, in
// the same run, each multi row reporting ratio-vs-single (its ns/op over
// the single row before it). multi spreads requests evenly over all
// 10,000 identities, the worst case: each request finds its identity's
// state cold in the CPU caches. multi_hot sends them to 100 of the
// 10,000.
func BenchmarkIdentitiesCachedToken(b *testing.B) {
	benchCachedPair(b, false)
}

// BenchmarkIdentitiesCachedTokenParallel is BenchmarkIdentitiesCachedToken
// with 64 goroutines per GOMAXPROCS.
func BenchmarkIdentitiesCachedTokenParallel(b *testing.B) {
	benchCachedPair(b, true)
}

// cachedPair returns the single RoundTripper and the MultiRoundTripper of
// the cached-token comparison, the latter holding liveIdentities live
// identities (100 with -short), and a request for each of them.
func cachedPair(b *testing.B) (single, multi http.RoundTripper, reqs []*http.Request, cleanup func()) {
	single, closeSingle := setupTokenManager(b, newMemBase())
	// The real clock, as the single RoundTripper has: a mock's Now takes
	// a lock.
	f := (&fleet{}).start(b, longLifetime, tokenmanager.OwnerSettings{IdleTimeout: time.Hour}, newMemBase(), clock.New())
	n := liveIdentities
	if testing.Short() {
		n = 100
	}
	f.fill(b, n)
	reqs = make([]*http.Request, n)
	for i := range reqs {
		reqs[i] = newRequest(b, benchURL).WithContext(transport.WithIdentity(context.Background(), identity(i)))
	}
	return single, f.m, reqs, func() {
		f.m.Close()
		closeSingle()
	}
}

func benchCachedPair(b *testing.B, parallel bool) {
	single, multi, reqs, cleanup := cachedPair(b)
	defer cleanup()
	n := len(reqs)
	var singleNs float64
	run := func(b *testing.B, rt http.RoundTripper, pick func(i int) *http.Request) {
		b.ReportAllocs()
		if !parallel {
			i := 0
			for b.Loop() {
				i++
				if err := roundTrip(rt, pick(i)); err != nil {
					b.Fatal(err)
				}
			}
			return
		}
		b.SetParallelism(64)
		var seq atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(seq.Add(7919))
			for pb.Next() {
				i++
				if err := roundTrip(rt, pick(i)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	// Both sides cycle through the same n requests, so that the cost of
	// touching n different requests' memory falls on both alike and the
	// ratio shows what n identities add.
	b.Run("single", func(b *testing.B) {
		run(b, single, func(i int) *http.Request { return reqs[i%n] })
		singleNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	b.Run("multi", func(b *testing.B) {
		run(b, multi, func(i int) *http.Request { return reqs[i%n] })
		if singleNs > 0 {
			ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(ns/singleNs, "ratio-vs-single")
		}
	})
	// Traffic is rarely uniform: here all n identities are live, and
	// requests go to a hot hundred of them.
	hot := min(n, 100)
	b.Run("single_hot", func(b *testing.B) {
		run(b, single, func(i int) *http.Request { return reqs[i%hot] })
		singleNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	b.Run("multi_hot", func(b *testing.B) {
		run(b, multi, func(i int) *http.Request { return reqs[i%hot] })
		if singleNs > 0 {
			ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(ns/singleNs, "ratio-vs-single")
		}
	})
}

// BenchmarkIdentitiesCachedTokenInterleaved times the single and multi
// rows of BenchmarkIdentitiesCachedToken (10,000 live identities, uniform
// traffic) against each other in 31 alternating rounds of 20,000
// requests, first from one goroutine (seq) and then from 128 (par), and
// reports each row's median ns per request and ratio-vs-single. On a
// shared machine this ratio is steadier than one of separate rows. The
// x/oauth2 peer runs in the same rounds, one oauth2.Transport over
// ReuseTokenSource (oauth2_single) against one per identity in a
// sync.Map (oauth2_multi), each with its token cached: oauth2-ratio is
// what 10,000 identities cost it, and multi-vs-oauth2 compares the two
// multi rows.
func BenchmarkIdentitiesCachedTokenInterleaved(b *testing.B) {
	single, multi, reqs, cleanup := cachedPair(b)
	defer cleanup()
	n := len(reqs)
	oauth2Single, _ := setupOAuth2(b, newMemBase())
	oauth2Multi := oauth2PerIdentity(b, reqs)
	// Goroutine g starts at its own place in the cycle through all n.
	pick := func(g, i int) *http.Request { return reqs[(g*7919+i)%n] }
	for _, mode := range []struct {
		name       string
		goroutines int
	}{{"seq", 1}, {"par", 128}} {
		b.Run(mode.name, func(b *testing.B) {
			var sum [4]float64
			for range b.N {
				med, err := interleave([]http.RoundTripper{single, multi, oauth2Single, oauth2Multi},
					[]string{"single", "multi", "oauth2_single", "oauth2_multi"}, pick, 31, 20000, mode.goroutines)
				if err != nil {
					b.Fatal(err)
				}
				for i := range sum {
					sum[i] += med[i]
				}
			}
			b.ReportMetric(sum[0]/float64(b.N), "single-ns/req")
			b.ReportMetric(sum[1]/float64(b.N), "multi-ns/req")
			b.ReportMetric(sum[1]/sum[0], "ratio-vs-single")
			b.ReportMetric(sum[3]/sum[2], "oauth2-ratio")
			b.ReportMetric(sum[1]/sum[3], "multi-vs-oauth2")
		})
	}
}

// BenchmarkIdentitiesFirstRequest measures the first request of new
// identities, each row on its own: the latency beyond the provider's own
// measured time (for tokenmanager: SettingsFor, hosting the identity,
// routing, the fetch's messages), reported at p50 and p99 in
// microseconds. The provider takes about 1ms (slow_provider) or returns at
// once (instant_provider). The x/oauth2 peer (oauth2) keeps an
// oauth2.Transport over oauth2.ReuseTokenSource per identity in a
// sync.Map, made on first use, and fetches on the caller's goroutine; the
// tokenmanager row reports its p50 over the oauth2 row's before it
// (ratio-vs-oauth2).
func BenchmarkIdentitiesFirstRequest(b *testing.B) {
	for _, provider := range []struct {
		name  string
		sleep time.Duration
	}{{"slow_provider", time.Millisecond}, {"instant_provider", 0}} {
		b.Run(provider.name, func(b *testing.B) {
			var seq atomic.Int64
			var providerNs atomic.Int64 // the last call's own duration
			fetch := func() tokenmanager.Token {
				began := time.Now()
				if provider.sleep > 0 {
					time.Sleep(provider.sleep)
				}
				tok := tokenmanager.Token{AccessToken: "tok-" + strconv.FormatInt(seq.Add(1), 10), ExpiresIn: longLifetime}
				providerNs.Store(int64(time.Since(began)))
				return tok
			}
			var oauth2P50 float64
			b.Run("oauth2", func(b *testing.B) {
				var rts sync.Map // identity -> *oauth2.Transport
				base := newMemBase()
				rt := roundTripperFunc(func(req *http.Request) (*http.Response, error) {
					id, _ := transport.IdentityFrom(req.Context())
					t, ok := rts.Load(id)
					if !ok {
						src := tokenSourceFunc(func() (*oauth2.Token, error) {
							tok := fetch()
							return &oauth2.Token{AccessToken: tok.AccessToken, TokenType: "Bearer",
								Expiry: time.Now().Add(time.Duration(tok.ExpiresIn) * time.Second)}, nil
						})
						t, _ = rts.LoadOrStore(id, &oauth2.Transport{Source: oauth2.ReuseTokenSource(nil, src), Base: base})
					}
					return t.(*oauth2.Transport).RoundTrip(req)
				})
				oauth2P50 = firstRequests(b, rt, &providerNs)
			})
			b.Run("tokenmanager", func(b *testing.B) {
				m, err := transport.NewMulti(tokenmanager.OwnerSettings{
					SettingsFor: func(string) (tokenmanager.Settings, error) {
						return tokenmanager.Settings{GetCredentials: func(context.Context) (tokenmanager.Token, error) {
							return fetch(), nil
						}}, nil
					},
				}, transport.WithBase(newMemBase()))
				if err != nil {
					b.Fatal(err)
				}
				defer m.Close()
				if p50 := firstRequests(b, m, &providerNs); oauth2P50 > 0 {
					b.ReportMetric(p50/oauth2P50, "ratio-vs-oauth2")
				}
			})
		})
	}
}

// firstRequests sends each request of the benchmark loop through rt for
// a new identity, reports the latency beyond the provider's own time
// (providerNs, the last call's) at p50 and p99, and returns the p50 in
// microseconds.
func firstRequests(b *testing.B, rt http.RoundTripper, providerNs *atomic.Int64) float64 {
	b.ReportAllocs()
	var over []time.Duration
	i := 0
	for b.Loop() {
		i++
		req := newRequest(b, benchURL).WithContext(transport.WithIdentity(context.Background(), fmt.Sprintf("new-%d", i)))
		began := time.Now()
		if err := roundTrip(rt, req); err != nil {
			b.Fatal(err)
		}
		over = append(over, time.Since(began)-time.Duration(providerNs.Load()))
	}
	slices.Sort(over)
	p50 := float64(over[len(over)/2].Nanoseconds()) / 1e3
	b.ReportMetric(p50, "overhead-us/p50")
	b.ReportMetric(float64(over[len(over)*99/100].Nanoseconds())/1e3, "overhead-us/p99")
	return p50
}

// BenchmarkIdentitiesChurn sends one request each to 1,000,000 distinct
// identities (20,000 with -short) through an owner capped at
// MaxIdentities 1,000, and reports the heap growth over the start (with
// the first thousand live) after 100k, 500k and 1M of them: an owner
// that forgets identities it evicted stays flat however many it has
// seen.
func BenchmarkIdentitiesChurn(b *testing.B) {
	marks := []int{100_000, 500_000, 1_000_000}
	if testing.Short() {
		marks = []int{5_000, 10_000, 20_000}
	}
	const capacity = 1000
	for b.Loop() {
		f := newFleet(b, longLifetime, tokenmanager.OwnerSettings{IdleTimeout: time.Hour, MaxIdentities: capacity}, newMemBase())
		f.fillRange(b, 0, capacity)
		h0 := heap()
		done := capacity
		for _, mark := range marks {
			f.fillRange(b, done, mark)
			done = mark
			growth := float64(int64(heap())-int64(h0)) / 1e6
			b.ReportMetric(growth, fmt.Sprintf("heapMB-growth/%dk", mark/1000))
		}
		// The last first requests may return before the owner has
		// hosted their identities, and evicted others: at most 64 of
		// them (see actor.maxEarly).
		for end := time.Now().Add(10 * time.Second); f.m.Live() > capacity && time.Now().Before(end); {
			time.Sleep(time.Millisecond)
		}
		if live := f.m.Live(); live > capacity {
			b.Errorf("Live() = %d; want at most %d", live, capacity)
		}
		f.m.Close()
	}
}

// fillRange gives identities from to to-1 a cached token each, several
// at a time.
func (f *fleet) fillRange(tb testing.TB, from, to int) {
	var wg sync.WaitGroup
	var next atomic.Int64
	next.Store(int64(from))
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= to {
					return
				}
				if _, err := f.m.Token(context.Background(), identity(i)); err != nil {
					tb.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// roundTripperFunc adapts a func to http.RoundTripper.
type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// oauth2PerIdentity is the x/oauth2 peer of a MultiRoundTripper with a
// cached token for each identity of reqs: an oauth2.Transport over
// ReuseTokenSource per identity, in a sync.Map, each warmed.
func oauth2PerIdentity(b *testing.B, reqs []*http.Request) http.RoundTripper {
	var rts sync.Map // identity -> *oauth2.Transport
	base := newMemBase()
	for _, req := range reqs {
		id, _ := transport.IdentityFrom(req.Context())
		rt, _ := setupOAuth2(b, base)
		rts.Store(id, rt)
	}
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		id, _ := transport.IdentityFrom(req.Context())
		rt, ok := rts.Load(id)
		if !ok {
			return nil, fmt.Errorf("no transport for %q", id)
		}
		return rt.(http.RoundTripper).RoundTrip(req)
	})
}
