package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"golang.org/x/oauth2"

	"github.com/go-tokenmanager/tokenmanager"
	tmactor "github.com/go-tokenmanager/tokenmanager/actor"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// Every scenario sends this token; the header value is what both
// tokenmanager's default Formatter and x/oauth2 build from it.
const (
	benchToken   = "bench-access-token"
	benchHeader  = "Authorization"
	benchValue   = "Bearer " + benchToken
	benchURL     = "https://api.example.test/things"
	longLifetime = 3600 // seconds: no refresh during a benchmark
)

// quietSystem returns an actor system that logs nothing and lets no
// dead-letter throttle goroutine outlive a benchmark.
func quietSystem() *proto.ActorSystem {
	return proto.NewActorSystem(
		proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }),
		proto.WithDeadLetterThrottleInterval(time.Millisecond),
	)
}

func newRequest(tb testing.TB, url string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return req
}

// okResponse is a canned 200 with an empty body. In-memory bases hand out
// the same one to every caller; nobody modifies it.
func okResponse() *http.Response {
	return &http.Response{
		Status:     "200 OK",
		StatusCode: http.StatusOK,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{},
		Body:       http.NoBody,
	}
}

func unauthorizedResponse() *http.Response {
	r := okResponse()
	r.Status, r.StatusCode = "401 Unauthorized", http.StatusUnauthorized
	return r
}

// memBase is the in-memory base RoundTripper: no network, no allocation.
type memBase struct{ resp *http.Response }

func newMemBase() *memBase { return &memBase{resp: okResponse()} }

func (m *memBase) RoundTrip(*http.Request) (*http.Response, error) { return m.resp, nil }

// checkingBase is like memBase but fails requests that do not carry the
// expected header; the harness test uses it to prove each row really
// attaches the token.
type checkingBase struct {
	want string
	bad  atomic.Int64
	resp *http.Response
}

func (c *checkingBase) RoundTrip(req *http.Request) (*http.Response, error) {
	if got := req.Header.Get(benchHeader); got != c.want {
		c.bad.Add(1)
		return nil, fmt.Errorf("%s = %q; want %q", benchHeader, got, c.want)
	}
	return c.resp, nil
}

// revocableBase answers 401 to requests carrying the revoked header value
// and 200 to all others, like an API that revoked one token.
type revocableBase struct {
	revoked atomic.Pointer[string]
	ok      *http.Response
	denied  *http.Response
}

func newRevocableBase() *revocableBase {
	return &revocableBase{ok: okResponse(), denied: unauthorizedResponse()}
}

func (r *revocableBase) RoundTrip(req *http.Request) (*http.Response, error) {
	if v := r.revoked.Load(); v != nil && req.Header.Get(benchHeader) == *v {
		return r.denied, nil
	}
	return r.ok, nil
}

// floorTransport is the least a correct token RoundTripper can do: clone
// the request (RoundTrip must not modify it) and set one fixed header.
type floorTransport struct {
	base          http.RoundTripper
	header, value string
}

func (f *floorTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r2 := req.Clone(req.Context())
	r2.Header.Set(f.header, f.value)
	return f.base.RoundTrip(r2)
}

// tokenSourceFunc adapts a func to oauth2.TokenSource.
type tokenSourceFunc func() (*oauth2.Token, error)

func (f tokenSourceFunc) Token() (*oauth2.Token, error) { return f() }

// askTransport is the baseline the snapshot replaces: every request asks
// the token actor with messages.Get through a protoactor future. Apart
// from how it gets the token it does what transport.RoundTripper does on a
// cached token, formatted header reuse included.
type askTransport struct {
	root    *proto.RootContext
	pid     *proto.PID
	base    http.RoundTripper
	timeout time.Duration
	last    atomic.Pointer[[2]string] // token, header value
}

func (a *askTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := a.root.RequestFuture(a.pid, messages.Get{}, a.timeout).Result()
	if err != nil {
		return nil, err
	}
	tr, ok := res.(*messages.TokenResult)
	if !ok {
		return nil, fmt.Errorf("unexpected reply %T", res)
	}
	if tr.Err != nil {
		return nil, tr.Err
	}
	var value string
	if l := a.last.Load(); l != nil && l[0] == tr.Token.AccessToken {
		value = l[1]
	} else {
		value = tokenmanager.BearerFormatter(tr.Token.AccessToken)
		a.last.Store(&[2]string{tr.Token.AccessToken, value})
	}
	r2 := req.Clone(req.Context())
	r2.Header.Set(benchHeader, value)
	return a.base.RoundTrip(r2)
}

func staticProvider(context.Context) (tokenmanager.Token, error) {
	return tokenmanager.Token{AccessToken: benchToken, TokenType: "Bearer", ExpiresIn: longLifetime}, nil
}

// cachedRow builds one RoundTripper under comparison over base, with a
// token already cached, and returns it with its cleanup.
type cachedRow struct {
	name  string
	setup func(tb testing.TB, base http.RoundTripper) (http.RoundTripper, func())
}

// cachedRows lists the rows of BenchmarkCachedToken in print order.
var cachedRows = []cachedRow{
	{"oauth2", setupOAuth2},
	{"tokenmanager", setupTokenManager},
	{"floor", setupFloor},
	{"actor_ask", setupActorAsk},
}

func setupOAuth2(tb testing.TB, base http.RoundTripper) (http.RoundTripper, func()) {
	expiry := time.Now().Add(longLifetime * time.Second)
	src := tokenSourceFunc(func() (*oauth2.Token, error) {
		return &oauth2.Token{AccessToken: benchToken, TokenType: "Bearer", Expiry: expiry}, nil
	})
	rt := &oauth2.Transport{Source: oauth2.ReuseTokenSource(nil, src), Base: base}
	warm(tb, rt)
	return rt, func() {}
}

func setupTokenManager(tb testing.TB, base http.RoundTripper) (http.RoundTripper, func()) {
	rt, err := transport.New(tokenmanager.Settings{GetCredentials: staticProvider}, transport.WithBase(base))
	if err != nil {
		tb.Fatal(err)
	}
	warm(tb, rt)
	return rt, func() { rt.Close() }
}

func setupFloor(tb testing.TB, base http.RoundTripper) (http.RoundTripper, func()) {
	return &floorTransport{base: base, header: benchHeader, value: benchValue}, func() {}
}

func setupActorAsk(tb testing.TB, base http.RoundTripper) (http.RoundTripper, func()) {
	props, err := tmactor.NewProps(tokenmanager.Settings{GetCredentials: staticProvider})
	if err != nil {
		tb.Fatal(err)
	}
	system := quietSystem()
	pid := system.Root.Spawn(props)
	rt := &askTransport{root: system.Root, pid: pid, base: base, timeout: 10 * time.Second}
	cleanup := func() {
		system.Root.StopFuture(pid).Wait()
		system.Shutdown()
	}
	if err := roundTrip(rt, newRequest(tb, benchURL)); err != nil {
		cleanup()
		tb.Fatal(err)
	}
	return rt, cleanup
}

// warm sends one request so the token is cached before measuring.
func warm(tb testing.TB, rt http.RoundTripper) {
	if err := roundTrip(rt, newRequest(tb, benchURL)); err != nil {
		tb.Fatal(err)
	}
}

// roundTrip sends req and checks that a 200 came back.
func roundTrip(rt http.RoundTripper, req *http.Request) error {
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// parallelismFor returns a RunParallel parallelism giving at least n goroutines.
func parallelismFor(n int) int {
	p := runtime.GOMAXPROCS(0)
	return max(1, (n+p-1)/p)
}

// Loopback: an httptest server on 127.0.0.1 and clients with identical
// base transports.

var okBody = []byte(`{"ok":true}`)

func newLoopbackServer() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(okBody)
	}))
}

// newLoopbackBase returns a transport that keeps a connection per caller
// alive, so the benchmark measures requests, not dials.
func newLoopbackBase(callers int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.MaxIdleConns = 2 * callers
	t.MaxIdleConnsPerHost = 2 * callers
	return t
}

// loopbackClient is one client under comparison in the loopback
// benchmarks.
type loopbackClient struct {
	name   string
	client *http.Client
	close  func()
}

// newLoopbackClients returns the clients under comparison, each over its
// own, identically configured base transport: plain (no token),
// tokenmanager, and floor (floorTransport: the clone and header every
// token RoundTripper must add, so a gap between plain and tokenmanager can
// be split into what any token RoundTripper costs and what ours adds).
func newLoopbackClients(tb testing.TB, callers int) []loopbackClient {
	plainBase := newLoopbackBase(callers)
	tmBase := newLoopbackBase(callers)
	floorBase := newLoopbackBase(callers)
	rt, err := transport.New(tokenmanager.Settings{GetCredentials: staticProvider}, transport.WithBase(tmBase))
	if err != nil {
		tb.Fatal(err)
	}
	return []loopbackClient{
		{"plain", &http.Client{Transport: plainBase}, plainBase.CloseIdleConnections},
		{"tokenmanager", rt.Client(), func() { rt.Close(); tmBase.CloseIdleConnections() }},
		{"floor", &http.Client{Transport: &floorTransport{base: floorBase, header: benchHeader, value: benchValue}}, floorBase.CloseIdleConnections},
	}
}

// get sends one GET to url and reads the whole response.
func get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return err
}

// hammer sends requests to url from callers goroutines for d and returns
// how many completed and how long the round took.
func hammer(c *http.Client, url string, callers int, d time.Duration) (int64, time.Duration, error) {
	n, took, _, err := hammerCPU(c, url, callers, d)
	return n, took, err
}

// hammerCPU is hammer that also returns the process CPU time the round
// used (client and server: both run in this process).
func hammerCPU(c *http.Client, url string, callers int, d time.Duration) (int64, time.Duration, time.Duration, error) {
	var (
		n    atomic.Int64
		wg   sync.WaitGroup
		errv atomic.Pointer[error]
	)
	cpu0 := cpuTime()
	start := time.Now()
	deadline := start.Add(d)
	for range callers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := get(c, url); err != nil {
					errv.CompareAndSwap(nil, &err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	if e := errv.Load(); e != nil {
		return n.Load(), elapsed, cpu, *e
	}
	return n.Load(), elapsed, cpu, nil
}

// runInterleaved runs the loopback clients in rounds of d, rotating their
// order each round, after one uncounted warm-up round each, so slow phases
// of a noisy machine fall on all of them alike. It returns each client's
// requests per second and CPU time per request, in newLoopbackClients
// order.
func runInterleaved(tb testing.TB, srv *httptest.Server, callers, rounds int, d time.Duration) (reqPerSec []float64, cpuPerReq []time.Duration, err error) {
	clients := newLoopbackClients(tb, callers)
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	for _, c := range clients {
		if _, _, err := hammer(c.client, srv.URL, callers, d/2); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", c.name, err)
		}
	}
	n := make([]int64, len(clients))
	took := make([]time.Duration, len(clients))
	cpu := make([]time.Duration, len(clients))
	for r := range rounds {
		for j := range clients {
			i := (j + r) % len(clients)
			k, e, c, err := hammerCPU(clients[i].client, srv.URL, callers, d)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", clients[i].name, err)
			}
			n[i] += k
			took[i] += e
			cpu[i] += c
		}
	}
	reqPerSec = make([]float64, len(clients))
	cpuPerReq = make([]time.Duration, len(clients))
	for i := range n {
		reqPerSec[i] = float64(n[i]) / took[i].Seconds()
		cpuPerReq[i] = cpu[i] / time.Duration(max(n[i], 1))
	}
	return reqPerSec, cpuPerReq, nil
}

// Rollover: short-lived tokens and a slow token endpoint.
//
// Fairness: both sides get the same token lifetime, counted from the start
// of the fetch, and both consider a token due for replacement the same
// time before it expires: tokenmanager through Settings.RefreshBuffer,
// x/oauth2 through ReuseTokenSourceWithExpiry's earlyExpiry (its default
// expiryDelta of 10s would make every call refetch a 2s token). The only
// difference left is what happens while the replacement is fetched:
// tokenmanager keeps serving the still-valid token and fetches in the
// background; x/oauth2 fetches on the caller's goroutine under its mutex,
// so every caller waits.

type rolloverConfig struct {
	callers    int
	window     time.Duration // measured real time per side
	fetchDelay time.Duration // how long the token endpoint takes
	lifetime   int64         // expires_in, seconds
	early      time.Duration // RefreshBuffer / earlyExpiry
	pace       time.Duration // each caller sends one request per pace
}

type rolloverResult struct {
	requests int64
	stalls   int64 // requests slower than fetchDelay/2
	fetches  int64 // provider calls during the window
	errors   int64
	max      time.Duration
}

// slowFetch is the token endpoint: it takes delay (or until ctx ends) and
// issues a new token each call.
func slowFetch(ctx context.Context, calls *atomic.Int64, delay time.Duration) (string, error) {
	n := calls.Add(1)
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return fmt.Sprintf("token-%d", n), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// slowTokenSource is the x/oauth2 side of a rollover: a token source over
// the slow endpoint, reused until cfg.early before expiry (oauth2's
// default 10s would refetch a 2s token on every call).
func slowTokenSource(cfg rolloverConfig, calls *atomic.Int64) oauth2.TokenSource {
	src := tokenSourceFunc(func() (*oauth2.Token, error) {
		start := time.Now()
		tok, err := slowFetch(context.Background(), calls, cfg.fetchDelay)
		if err != nil {
			return nil, err
		}
		return &oauth2.Token{
			AccessToken: tok,
			TokenType:   "Bearer",
			Expiry:      start.Add(time.Duration(cfg.lifetime) * time.Second),
		}, nil
	})
	return oauth2.ReuseTokenSourceWithExpiry(nil, src, cfg.early)
}

// slowSettings is the tokenmanager side of a rollover: the same slow
// endpoint, refreshed cfg.early before expiry.
func slowSettings(cfg rolloverConfig, calls *atomic.Int64) tokenmanager.Settings {
	return tokenmanager.Settings{
		GetCredentials: func(ctx context.Context) (tokenmanager.Token, error) {
			tok, err := slowFetch(ctx, calls, cfg.fetchDelay)
			return tokenmanager.Token{AccessToken: tok, TokenType: "Bearer", ExpiresIn: cfg.lifetime}, err
		},
		RefreshBuffer: cfg.early,
	}
}

// add accumulates one round into a total.
func (r *rolloverResult) add(o rolloverResult) {
	r.requests += o.requests
	r.stalls += o.stalls
	r.fetches += o.fetches
	r.errors += o.errors
	r.max = max(r.max, o.max)
}

// report reports the total of n rounds; what names the unit counted
// (requests, calls).
func (r rolloverResult) report(b *testing.B, what string) {
	n := float64(b.N)
	b.ReportMetric(float64(r.stalls)/n, "stalls")
	b.ReportMetric(float64(r.stalls)/float64(max(r.requests, 1)), "stalled-frac")
	b.ReportMetric(float64(r.requests)/n, what)
	b.ReportMetric(float64(r.fetches)/n, "fetches")
	b.ReportMetric(ms(r.max), "max-ms")
	b.ReportMetric(float64(r.errors)/n, "errors")
}

// rolloverSide builds one side of the rollover comparison.
func rolloverSide(tb testing.TB, side string, cfg rolloverConfig, calls *atomic.Int64) (http.RoundTripper, func()) {
	base := newMemBase()
	switch side {
	case "oauth2":
		ts := slowTokenSource(cfg, calls)
		return &oauth2.Transport{Source: ts, Base: base}, func() {}
	case "tokenmanager":
		rt, err := transport.New(slowSettings(cfg, calls), transport.WithBase(base))
		if err != nil {
			tb.Fatal(err)
		}
		return rt, func() { rt.Close() }
	}
	tb.Fatalf("unknown side %q", side)
	return nil, nil
}

// runRollover primes a token (the cold fetch is not counted), then lets
// cfg.callers paced callers send requests for cfg.window and counts the
// requests that stalled.
func runRollover(tb testing.TB, side string, cfg rolloverConfig) rolloverResult {
	var calls atomic.Int64
	rt, cleanup := rolloverSide(tb, side, cfg, &calls)
	defer cleanup()
	warm(tb, rt)
	before := calls.Load()

	req := newRequest(tb, benchURL)
	res, _ := measureRollover(cfg, func() error { return roundTrip(rt, req) })
	res.fetches = calls.Load() - before
	return res
}

// measureRollover runs cfg.callers callers of call, each once per
// cfg.pace, for cfg.window, and counts calls slower than half the fetch
// delay (stalls). It returns the first error a call gave, if any.
func measureRollover(cfg rolloverConfig, call func() error) (rolloverResult, error) {
	threshold := cfg.fetchDelay / 2
	var (
		res  rolloverResult
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs atomic.Int64
		errv atomic.Pointer[error]
	)
	deadline := time.Now().Add(cfg.window)
	for range cfg.callers {
		wg.Go(func() {
			tick := time.NewTicker(cfg.pace)
			defer tick.Stop()
			var n, stalls int64
			var worst time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				err := call()
				d := time.Since(t0)
				n++
				if err != nil {
					errs.Add(1)
					errv.CompareAndSwap(nil, &err)
				}
				if d > threshold {
					stalls++
				}
				worst = max(worst, d)
				<-tick.C
			}
			mu.Lock()
			res.requests += n
			res.stalls += stalls
			res.max = max(res.max, worst)
			mu.Unlock()
		})
	}
	wg.Wait()
	res.errors = errs.Load()
	if e := errv.Load(); e != nil {
		return res, *e
	}
	return res, nil
}

// Stampede: n requests released at once against an empty or revoked
// cache. The token endpoint takes stampedeConfig.fetchDelay so the
// requests really overlap the fetch.

type stampedeConfig struct {
	n          int
	fetchDelay time.Duration
}

type stampedeResult struct {
	calls    int64 // provider calls caused by the stampede
	failures int64 // requests that did not end in a 200
	latency  []time.Duration
}

// stampedeSide builds one side; revoke, when not nil, revokes the cached
// token at the API.
func stampedeSide(tb testing.TB, side string, cfg stampedeConfig, calls *atomic.Int64) (rt http.RoundTripper, revoke func(), cleanup func()) {
	switch side {
	case "oauth2_cold":
		src := tokenSourceFunc(func() (*oauth2.Token, error) {
			tok, err := slowFetch(context.Background(), calls, cfg.fetchDelay)
			if err != nil {
				return nil, err
			}
			return &oauth2.Token{AccessToken: tok, TokenType: "Bearer", Expiry: time.Now().Add(longLifetime * time.Second)}, nil
		})
		return &oauth2.Transport{Source: oauth2.ReuseTokenSource(nil, src), Base: newMemBase()}, nil, func() {}
	case "tokenmanager_cold", "tokenmanager_revoked":
		base := newRevocableBase()
		t, err := transport.New(tokenmanager.Settings{
			GetCredentials: func(ctx context.Context) (tokenmanager.Token, error) {
				tok, err := slowFetch(ctx, calls, cfg.fetchDelay)
				return tokenmanager.Token{AccessToken: tok, TokenType: "Bearer", ExpiresIn: longLifetime}, err
			},
		}, transport.WithBase(base))
		if err != nil {
			tb.Fatal(err)
		}
		if side == "tokenmanager_revoked" {
			revoke = func() {
				warm(tb, t)
				tok, err := t.Token(context.Background())
				if err != nil {
					tb.Fatal(err)
				}
				v := tokenmanager.BearerFormatter(tok.AccessToken)
				base.revoked.Store(&v)
			}
		}
		return t, revoke, func() { t.Close() }
	}
	tb.Fatalf("unknown side %q", side)
	return nil, nil, nil
}

// runStampede sets up side, revokes its token if the side says so, then
// releases cfg.n requests at once. Only the release is timed when tb is a
// *testing.B.
func runStampede(tb testing.TB, side string, cfg stampedeConfig) stampedeResult {
	b, _ := tb.(*testing.B)
	var calls atomic.Int64
	rt, revoke, cleanup := stampedeSide(tb, side, cfg, &calls)
	defer cleanup()
	if revoke != nil {
		revoke()
	}
	before := calls.Load()

	var (
		ready, done sync.WaitGroup
		failures    atomic.Int64
	)
	gate := make(chan struct{})
	latency := make([]time.Duration, cfg.n)
	for i := range cfg.n {
		req := newRequest(tb, benchURL)
		ready.Add(1)
		done.Go(func() {
			ready.Done()
			<-gate
			t0 := time.Now()
			err := roundTrip(rt, req)
			latency[i] = time.Since(t0)
			if err != nil {
				failures.Add(1)
			}
		})
	}
	ready.Wait()
	if b != nil {
		b.StartTimer()
	}
	close(gate)
	done.Wait()
	if b != nil {
		b.StopTimer()
	}
	return stampedeResult{calls: calls.Load() - before, failures: failures.Load(), latency: latency}
}

// percentile returns the p-th percentile (0 < p < 100) of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)) * p / 100)
	return sorted[min(i, len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sortDurations sorts d in place and returns it.
func sortDurations(d []time.Duration) []time.Duration {
	slices.Sort(d)
	return d
}

// runCachedInterleaved times rows against each other in alternating
// rounds: in each round every row (in rotating order) sends k requests
// from goroutines goroutines, and the result is each row's median ns per
// request over all rounds. On a noisy machine a slow phase then lands on
// one round of every row instead of on one whole row.
func runCachedInterleaved(tb testing.TB, rows []cachedRow, rounds, k, goroutines int) ([]float64, error) {
	rts := make([]http.RoundTripper, len(rows))
	names := make([]string, len(rows))
	for i, row := range rows {
		rt, cleanup := row.setup(tb, newMemBase())
		defer cleanup()
		rts[i], names[i] = rt, row.name
	}
	reqs := make([]*http.Request, goroutines)
	for g := range reqs {
		reqs[g] = newRequest(tb, benchURL)
	}
	return interleave(rts, names, func(g, _ int) *http.Request { return reqs[g] }, rounds, k, goroutines)
}

// interleave times rts against each other in rounds alternating rounds
// (each starting with the next row), k requests per row and round,
// spread over goroutines; pick(g, i) is goroutine g's i-th request. It
// returns each row's median ns per request.
func interleave(rts []http.RoundTripper, names []string, pick func(g, i int) *http.Request, rounds, k, goroutines int) ([]float64, error) {
	samples := make([][]float64, len(rts))
	per := max(1, k/goroutines)
	for r := range rounds {
		for j := range rts {
			i := (j + r) % len(rts)
			var (
				wg   sync.WaitGroup
				errv atomic.Pointer[error]
			)
			start := time.Now()
			for g := range goroutines {
				wg.Go(func() {
					for n := range per {
						resp, err := rts[i].RoundTrip(pick(g, n))
						if err != nil {
							errv.CompareAndSwap(nil, &err)
							return
						}
						resp.Body.Close()
					}
				})
			}
			wg.Wait()
			if e := errv.Load(); e != nil {
				return nil, fmt.Errorf("%s: %w", names[i], *e)
			}
			samples[i] = append(samples[i], float64(time.Since(start).Nanoseconds())/float64(per*goroutines))
		}
	}
	medians := make([]float64, len(rts))
	for i, s := range samples {
		slices.Sort(s)
		medians[i] = s[len(s)/2]
	}
	return medians, nil
}
