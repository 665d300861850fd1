package tests

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/actor"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// apiURL is the address the in-memory backend answers; nothing is dialled.
const apiURL = "https://api.test/resource"

// patience bounds every wait for something that should happen promptly.
const patience = 5 * time.Second

// errEndpointDown is what a failing provider returns.
var errEndpointDown = errors.New("token endpoint down")

// provider is a TokenProvider that hands out prefix1, prefix2, ... and
// counts its calls. Its faults are switched on per test.
type provider struct {
	prefix    string // default "tok-"
	expiresIn int64

	calls  atomic.Int64
	failN  atomic.Int64 // the next failN calls return errEndpointDown
	panicN atomic.Int64 // the next panicN calls panic
	always atomic.Bool  // every call fails
	hang   atomic.Bool  // calls block until their ctx ends

	mu     sync.Mutex
	gate   chan struct{}   // while non-nil, calls wait for it to close
	ctxErr []error         // ctx.Err() seen by hanging or gated calls that gave up
	ended  []time.Duration // how long those calls waited for their ctx
}

func (p *provider) get(ctx context.Context) (tokenmanager.Token, error) {
	n := p.calls.Add(1)
	p.mu.Lock()
	g := p.gate
	p.mu.Unlock()
	began := time.Now()
	if p.hang.Load() {
		g = nil
		<-ctx.Done()
	}
	if g != nil {
		select {
		case <-g:
		case <-ctx.Done():
		}
	}
	if err := ctx.Err(); err != nil {
		p.mu.Lock()
		p.ctxErr = append(p.ctxErr, err)
		p.ended = append(p.ended, time.Since(began))
		p.mu.Unlock()
		return tokenmanager.Token{}, err
	}
	if take(&p.panicN) {
		panic("token provider exploded")
	}
	if p.always.Load() || take(&p.failN) {
		return tokenmanager.Token{}, errEndpointDown
	}
	prefix := p.prefix
	if prefix == "" {
		prefix = "tok-"
	}
	return tokenmanager.Token{AccessToken: fmt.Sprintf("%s%d", prefix, n), ExpiresIn: p.expiresIn}, nil
}

// take decrements *n if it is positive and reports whether it did.
func take(n *atomic.Int64) bool {
	for {
		v := n.Load()
		if v <= 0 {
			return false
		}
		if n.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

// hold makes every provider call from now on wait until release is called.
// release is idempotent.
func (p *provider) hold() (release func()) {
	g := make(chan struct{})
	p.mu.Lock()
	p.gate = g
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			if p.gate == g {
				p.gate = nil
			}
			p.mu.Unlock()
			close(g)
		})
	}
}

func (p *provider) gaveUp() ([]error, []time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]error(nil), p.ctxErr...), append([]time.Duration(nil), p.ended...)
}

// backend is an in-memory base RoundTripper standing in for an API. It
// reads the token from the Authorization header (after the scheme), answers
// 401 to a missing or revoked token (or always, with status set),
// and records every request and every response body it hands out.
type backend struct {
	mu      sync.Mutex
	revoked map[string]bool
	status  int // when non-zero, every response has it
	reject  int // the status for a missing or revoked token; 0 means 401
	sent    []sentRequest
	bodies  []*trackedBody
}

type sentRequest struct {
	id, auth, body string
}

func (b *backend) RoundTrip(req *http.Request) (*http.Response, error) {
	auth := req.Header.Get("Authorization")
	var body string
	if req.Body != nil {
		data, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = string(data)
	}
	id := req.Header.Get("X-Request-Id")
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sent = append(b.sent, sentRequest{id: id, auth: auth, body: body})
	status := http.StatusOK
	switch {
	case b.status != 0:
		status = b.status
	case auth == "" || b.revoked[auth[strings.LastIndex(auth, " ")+1:]]:
		status = http.StatusUnauthorized
		if b.reject != 0 {
			status = b.reject
		}
	}
	rb := &trackedBody{r: strings.NewReader(fmt.Sprintf("status %d for %q", status, id))}
	b.bodies = append(b.bodies, rb)
	return &http.Response{
		StatusCode: status,
		Body:       rb,
		Header:     http.Header{},
		Request:    req,
	}, nil
}

func (b *backend) revoke(tokens ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.revoked == nil {
		b.revoked = map[string]bool{}
	}
	for _, tok := range tokens {
		b.revoked[tok] = true
	}
}

func (b *backend) setStatus(status int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.status = status
}

func (b *backend) requests() []sentRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]sentRequest(nil), b.sent...)
}

func (b *backend) responseBodies() []*trackedBody {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*trackedBody(nil), b.bodies...)
}

// trackedBody is a response body that records whether it was read to the
// end and how often it was closed.
type trackedBody struct {
	r      *strings.Reader
	eof    atomic.Bool
	closes atomic.Int32
}

func (tb *trackedBody) Read(p []byte) (int, error) {
	n, err := tb.r.Read(p)
	if err == io.EOF {
		tb.eof.Store(true)
	}
	return n, err
}

func (tb *trackedBody) Close() error {
	tb.closes.Add(1)
	return nil
}

// newRT builds a RoundTripper with transport.New and closes it when the
// test ends.
func newRT(t *testing.T, s tokenmanager.Settings, base http.RoundTripper) *transport.RoundTripper {
	t.Helper()
	rt, err := transport.New(s, transport.WithBase(base))
	if err != nil {
		t.Fatalf("transport.New: %v", err)
	}
	t.Cleanup(func() {
		if err := rt.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return rt
}

// result is what one request came back with.
type result struct {
	status int
	auth   string // the Authorization header the backend saw last for it
	body   string
	err    error
}

// send sends a GET to the in-memory backend with ctx, tagged with id, and
// reads and closes the response.
func send(ctx context.Context, rt http.RoundTripper, id string) result {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL, nil)
	if err != nil {
		return result{err: err}
	}
	if id != "" {
		req.Header.Set("X-Request-Id", id)
	}
	return finish(rt.RoundTrip(req))
}

func finish(resp *http.Response, err error) result {
	if err != nil {
		return result{err: err}
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	auth := ""
	if resp.Request != nil {
		auth = resp.Request.Header.Get("Authorization")
	}
	return result{status: resp.StatusCode, auth: auth, body: string(data), err: err}
}

// mustOK sends a request and fails the test unless it gets a 200.
func mustOK(t *testing.T, rt http.RoundTripper) result {
	t.Helper()
	r := send(context.Background(), rt, "")
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("request: status %d, err %v; want 200", r.status, r.err)
	}
	return r
}

// eventually polls cond until it holds or patience runs out.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// stays checks that cond keeps holding for a short while: used to see that
// something does not happen (a fetch that must not start).
func stays(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(100 * time.Millisecond)
	for time.Now().Before(deadline) {
		if !cond() {
			t.Fatalf("%s no longer holds", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// advanceUntil advances the mock clock by step, again and again, until
// cond holds, waiting briefly after each step for the timers' effects.
func advanceUntil(t *testing.T, mock *clock.Mock, step time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out advancing the clock until %s", what)
		}
		mock.Add(step)
		for wait := time.Now().Add(20 * time.Millisecond); time.Now().Before(wait) && !cond(); {
			time.Sleep(time.Millisecond)
		}
	}
}

// recorder keeps every event a subscriber saw.
type recorder struct {
	mu     sync.Mutex
	events []messages.Event
}

func record(t *testing.T, rt *transport.RoundTripper) *recorder {
	r := &recorder{}
	t.Cleanup(rt.Subscribe(r.add))
	return r
}

func (r *recorder) add(ev messages.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *recorder) all() []messages.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]messages.Event(nil), r.events...)
}

// eventsOf returns the events of type E r has seen.
func eventsOf[E messages.Event](r *recorder) []E {
	var out []E
	for _, ev := range r.all() {
		if e, ok := ev.(E); ok {
			out = append(out, e)
		}
	}
	return out
}

// waitEvents waits until r has seen at least n events of type E.
func waitEvents[E messages.Event](t *testing.T, r *recorder, n int) []E {
	t.Helper()
	eventually(t, fmt.Sprintf("%d %T events", n, *new(E)), func() bool { return len(eventsOf[E](r)) >= n })
	return eventsOf[E](r)
}

// newSystem returns an actor system that prints nothing and is shut down
// when the test ends (after the actors spawned by spawn are stopped).
func newSystem(t *testing.T) *proto.ActorSystem {
	t.Helper()
	system := proto.NewActorSystem(
		proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }),
		proto.WithDeadLetterThrottleInterval(time.Millisecond),
	)
	t.Cleanup(system.Shutdown)
	return system
}

// spawn spawns a token actor in system and stops it when the test ends.
func spawn(t *testing.T, system *proto.ActorSystem, s tokenmanager.Settings) *proto.PID {
	t.Helper()
	props, err := actor.NewProps(s)
	if err != nil {
		t.Fatalf("actor.NewProps: %v", err)
	}
	pid := system.Root.Spawn(props)
	t.Cleanup(func() {
		if err := system.Root.StopFuture(pid).Wait(); err != nil {
			t.Errorf("stopping the token actor: %v", err)
		}
	})
	return pid
}

// ask sends messages.Get to pid and returns the reply.
func ask(t *testing.T, system *proto.ActorSystem, pid *proto.PID) *messages.TokenResult {
	t.Helper()
	reply, err := system.Root.RequestFuture(pid, messages.Get{}, patience).Result()
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	res, ok := reply.(*messages.TokenResult)
	if !ok {
		t.Fatalf("Get replied %T; want *messages.TokenResult", reply)
	}
	return res
}

// concurrently runs n copies of fn at once and returns their results.
func concurrently(n int, fn func(i int) result) []result {
	out := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			out[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return out
}
