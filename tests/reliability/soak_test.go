package reliability

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

const (
	soakDuration = 30 * time.Second
	soakWorkers  = 64
	// soakStartHeader carries the mock time at which a request started,
	// in Unix nanoseconds.
	soakStartHeader = "X-Soak-Start"
)

// soakProvider issues tokens with random lifetimes on the mock clock,
// fails a share of its calls, and checks that it never runs twice at
// once.
type soakProvider struct {
	mock *monotonicMock

	inFlight    atomic.Int64
	maxInFlight atomic.Int64
	calls       atomic.Int64
	failures    atomic.Int64 // failures injected
	issued      atomic.Int64

	expiry sync.Map     // access token -> time.Time its lifetime ends (mock clock)
	latest atomic.Value // string: the last token issued
}

func (p *soakProvider) get(ctx context.Context) (tokenmanager.Token, error) {
	n := p.inFlight.Add(1)
	defer p.inFlight.Add(-1)
	for {
		m := p.maxInFlight.Load()
		if n <= m || p.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	id := p.calls.Add(1)
	// Lifetimes count from the moment the fetch started; the manager takes
	// that moment a little before the provider runs, so its idea of the
	// expiry is never later than this one.
	start := p.mock.Now()
	rng := rand.New(rand.NewPCG(uint64(id), 7))
	if d := time.Duration(rng.IntN(2000)) * time.Microsecond; d > 0 {
		select {
		case <-time.After(d): // a token endpoint's latency, in real time
		case <-ctx.Done():
			return tokenmanager.Token{}, ctx.Err()
		}
	}
	if rng.IntN(10) == 0 {
		p.failures.Add(1)
		return tokenmanager.Token{}, errors.New("injected token endpoint failure")
	}
	life := 5 + rng.Int64N(56) // 5..60s
	tok := fmt.Sprintf("soak-%d", id)
	p.expiry.Store(tok, start.Add(time.Duration(life)*time.Second))
	p.latest.Store(tok)
	p.issued.Add(1)
	return tokenmanager.Token{AccessToken: tok, ExpiresIn: life}, nil
}

// soakBase is the in-memory API: it checks every token against the
// provider's records and answers 401 to revoked ones.
type soakBase struct {
	p       *soakProvider
	revoked sync.Map

	served           atomic.Int64
	rejected         atomic.Int64
	expiredOnArrival atomic.Int64 // valid when attached, expired by arrival (reported only)

	mu         sync.Mutex
	violations []string
}

func (b *soakBase) violate(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.violations) < 10 {
		b.violations = append(b.violations, fmt.Sprintf(format, args...))
	}
}

func (b *soakBase) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	if want := req.Header.Get(bodyHashHeader); want != "" {
		if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != want {
			b.violate("body of %d bytes arrived damaged", len(body))
		}
	}
	tok := testutil.Bearer(req)
	exp, ok := b.p.expiry.Load(tok)
	if !ok {
		b.violate("unknown token %q sent", tok)
		return testutil.TextResponse(req, http.StatusUnauthorized, "unknown"), nil
	}
	startNs, _ := strconv.ParseInt(req.Header.Get(soakStartHeader), 10, 64)
	started := time.Unix(0, startNs)
	expiry := exp.(time.Time)
	// The token was attached at some moment between the request's start
	// and now; it must have been valid then, so it must outlive the start.
	if !expiry.After(started) {
		b.violate("token %s expired at %v, before the request started at %v", tok, expiry, started)
	}
	if !b.p.mock.Now().Before(expiry) {
		b.expiredOnArrival.Add(1)
	}
	if _, bad := b.revoked.Load(tok); bad {
		b.rejected.Add(1)
		return testutil.TextResponse(req, http.StatusUnauthorized, "revoked"), nil
	}
	b.served.Add(1)
	return testutil.TextResponse(req, http.StatusOK, "ok"), nil
}

// TestSoak: 64 workers send requests for soakDuration while a driver
// advances the mock clock in random steps and revokes tokens at random,
// and the provider fails one call in ten. Checked throughout: no token
// sent after its expiry, at most one fetch in flight, no goroutine
// growth, no request lost, and every failure one of the expected kinds.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test: skipped with -short")
	}
	mock := &monotonicMock{Mock: clock.NewMock()}
	p := &soakProvider{mock: mock}
	base := &soakBase{p: p}
	rt := testutil.NewRT(t, tokenmanager.Settings{
		GetCredentials: p.get,
		Clock:          mock,
		RefreshBuffer:  2 * time.Second,
		RetryBaseDelay: 100 * time.Millisecond,
		RetryMaxDelay:  2 * time.Second,
		FetchTimeout:   time.Second,
		EventBuffer:    4096,
	}, base)
	ev := &soakEvents{}
	unsub := rt.Subscribe(ev.record)
	defer unsub()

	baseline := runtime.NumGoroutine()
	stop := make(chan struct{})
	var (
		wg                        sync.WaitGroup
		started, finished         atomic.Int64
		ok, aborted401, deadlines atomic.Int64
		unexpected                atomic.Int64
		unexpectedMu              sync.Mutex
		unexpectedFirst           []string
		revocations               atomic.Int64
		clockSteps                atomic.Int64
		maxGoroutines             atomic.Int64
	)
	for w := range soakWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			for {
				select {
				case <-stop:
					return
				default:
				}
				started.Add(1)
				status, err := soakRequest(rt, mock, rng)
				finished.Add(1)
				switch {
				case err == nil && status == http.StatusOK:
					ok.Add(1)
				case err == nil && status == http.StatusUnauthorized:
					aborted401.Add(1) // revoked faster than this request's recovery tries
				case errors.Is(err, context.DeadlineExceeded):
					deadlines.Add(1) // waited through failed fetches until its deadline
				default:
					unexpected.Add(1)
					unexpectedMu.Lock()
					if len(unexpectedFirst) < 5 {
						unexpectedFirst = append(unexpectedFirst, fmt.Sprintf("status %d, err %v", status, err))
					}
					unexpectedMu.Unlock()
				}
			}
		}()
	}

	// The driver: random clock jumps and revocations.
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stop:
				return
			default:
			}
			switch r := rng.IntN(100); {
			case r < 5:
				if tok, _ := p.latest.Load().(string); tok != "" {
					base.revoked.Store(tok, true)
					revocations.Add(1)
				}
				time.Sleep(time.Millisecond) // pacing
			case r < 7:
				p.expiry.Range(func(k, _ any) bool { base.revoked.Store(k, true); return true })
				revocations.Add(1)
				time.Sleep(time.Millisecond) // pacing
			case r < 10:
				// A jump past most lifetimes: tokens expire unrefreshed.
				mock.Add(time.Duration(10+rng.IntN(80)) * time.Second)
				clockSteps.Add(1)
			default:
				mock.Add(time.Duration(rng.IntN(1500)) * time.Millisecond)
				clockSteps.Add(1)
			}
		}
	}()

	// The sampler: goroutines and fetches in flight.
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				n := int64(runtime.NumGoroutine())
				if n > maxGoroutines.Load() {
					maxGoroutines.Store(n)
				}
			}
		}
	}()

	began := time.Now()
	time.Sleep(soakDuration) // the run itself, in real time
	close(stop)
	<-sampleDone
	// Watchdog: every request returns within its own deadline and a margin.
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	select {
	case <-all:
	case <-time.After(15 * time.Second):
		var buf bytes.Buffer
		pprof.Lookup("goroutine").WriteTo(&buf, 1)
		t.Fatalf("requests lost: %d started, %d finished 15s after the run ended\n%s", started.Load(), finished.Load(), buf.String())
	}
	elapsed := time.Since(began)
	rt.Close()

	if s, f := started.Load(), finished.Load(); s != f {
		t.Errorf("requests started %d, finished %d", s, f)
	}
	if m := p.maxInFlight.Load(); m > 1 {
		t.Errorf("fetches in flight at once: %d; want at most 1", m)
	}
	if limit := int64(baseline + soakWorkers + 64); maxGoroutines.Load() > limit {
		t.Errorf("goroutines peaked at %d; want at most %d (baseline %d + %d workers + 64)", maxGoroutines.Load(), limit, baseline, soakWorkers)
	}
	base.mu.Lock()
	for _, v := range base.violations {
		t.Errorf("invariant broken: %s", v)
	}
	base.mu.Unlock()
	if n := unexpected.Load(); n != 0 {
		t.Errorf("%d requests failed unexpectedly; first: %q", n, unexpectedFirst)
	}
	if ok.Load() < 1000 {
		t.Errorf("only %d requests succeeded; the soak proved little", ok.Load())
	}
	t.Logf("race detector: %v; %v real, mock clock advanced %v in %d steps",
		raceEnabled, elapsed.Round(time.Millisecond), mock.Now().Sub(time.Unix(0, 0)).Round(time.Second), clockSteps.Load())
	t.Logf("requests=%d ok=%d 401-after-recovery=%d deadline-exceeded=%d unexpected=%d served=%d rejected-401=%d expired-on-arrival(after attach)=%d",
		started.Load(), ok.Load(), aborted401.Load(), deadlines.Load(), unexpected.Load(), base.served.Load(), base.rejected.Load(), base.expiredOnArrival.Load())
	t.Logf("provider calls=%d tokens-issued=%d failures-injected=%d revocations=%d max-fetches-in-flight=%d goroutines baseline=%d peak=%d events=%v dropped-events=%d",
		p.calls.Load(), p.issued.Load(), p.failures.Load(), revocations.Load(), p.maxInFlight.Load(), baseline, maxGoroutines.Load(), ev.counts(), rt.DroppedEvents())
}

// soakRequest sends one GET or POST stamped with its mock start time.
func soakRequest(rt http.RoundTripper, mock *monotonicMock, rng *rand.Rand) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var req *http.Request
	if rng.IntN(4) == 0 {
		body := []byte(strings.Repeat("p", rng.IntN(512)))
		sum := sha256.Sum256(body)
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, "https://api.test/soak", bytes.NewReader(body))
		req.Header.Set(bodyHashHeader, hex.EncodeToString(sum[:]))
	} else {
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, "https://api.test/soak", nil)
	}
	req.Header.Set(soakStartHeader, strconv.FormatInt(mock.Now().UnixNano(), 10))
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// soakEvents counts events by name.
type soakEvents struct {
	mu sync.Mutex
	n  map[string]int
}

func (e *soakEvents) record(ev messages.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = map[string]int{}
	}
	e.n[ev.Name()]++
}

func (e *soakEvents) counts() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.n))
	for k, v := range e.n {
		out[k] = v
	}
	return out
}

// monotonicMock is a mock clock whose Now never goes backwards. The mock's
// Add can move time back: a timer scheduled while Add finishes is left
// behind the new time, and the next Add rewinds the clock to it. With
// several goroutines reading the clock, as here, that would make a token
// look expired "before" a request that started earlier on a later reading.
type monotonicMock struct {
	*clock.Mock
	mu   sync.Mutex // guards last
	last time.Time
}

func (m *monotonicMock) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	if now := m.Mock.Now(); now.After(m.last) {
		m.last = now
	}
	return m.last
}
