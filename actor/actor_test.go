package actor_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/benbjohnson/clock"
	"go.uber.org/goleak"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/actor"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// provider hands out tok-1, tok-2, ... and counts calls. When gated, each
// call waits for a value on gate.
type provider struct {
	calls     atomic.Int64
	expiresIn int64
	gate      chan struct{}
	err       atomic.Pointer[error] // when set, calls fail with it
	ctxs      chan context.Context  // when non-nil, receives each call's ctx
}

func (p *provider) get(ctx context.Context) (tokenmanager.Token, error) {
	n := p.calls.Add(1)
	if p.ctxs != nil {
		p.ctxs <- ctx
	}
	if p.gate != nil {
		select {
		case <-p.gate:
		case <-ctx.Done():
			return tokenmanager.Token{}, ctx.Err()
		}
	}
	if e := p.err.Load(); e != nil {
		return tokenmanager.Token{}, *e
	}
	return tokenmanager.Token{AccessToken: fmt.Sprintf("tok-%d", n), ExpiresIn: p.expiresIn}, nil
}

func (p *provider) failWith(err error) {
	if err == nil {
		p.err.Store(nil)
		return
	}
	p.err.Store(&err)
}

type env struct {
	t     *testing.T
	sys   *proto.ActorSystem
	pid   *proto.PID
	clock *clock.Mock
	p     *provider
}

func start(t *testing.T, p *provider, s tokenmanager.Settings) *env {
	t.Helper()
	mock := clock.NewMock()
	s.GetCredentials = p.get
	s.Clock = mock
	props, err := actor.NewProps(s)
	if err != nil {
		t.Fatalf("NewProps: %v", err)
	}
	sys := proto.NewActorSystem(
		proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }),
		proto.WithDeadLetterThrottleInterval(time.Millisecond),
	)
	pid := sys.Root.Spawn(props)
	t.Cleanup(func() {
		if p.gate != nil {
			// Let a gated provider return so its goroutine ends.
			select {
			case <-p.gate:
			default:
				close(p.gate)
			}
		}
		sys.Root.StopFuture(pid).Wait()
		sys.Shutdown()
	})
	return &env{t: t, sys: sys, pid: pid, clock: mock, p: p}
}

func (e *env) ask() *messages.TokenResult {
	e.t.Helper()
	res, err := e.sys.Root.RequestFuture(e.pid, messages.Get{}, 5*time.Second).Result()
	if err != nil {
		e.t.Fatalf("Get: %v", err)
	}
	r, ok := res.(*messages.TokenResult)
	if !ok {
		e.t.Fatalf("reply is %T; want *messages.TokenResult", res)
	}
	return r
}

func (e *env) token() string {
	e.t.Helper()
	r := e.ask()
	if r.Err != nil {
		e.t.Fatalf("Get: %v", r.Err)
	}
	return r.Token.AccessToken
}

// calls waits until the provider has been called want times, and checks it
// is not called more often right after.
func (e *env) calls(want int64) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.p.calls.Load() < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	e.barrier()
	if got := e.p.calls.Load(); got != want {
		e.t.Fatalf("provider calls = %d; want %d", got, want)
	}
}

// barrier returns once the actor has handled everything sent before it.
func (e *env) barrier() {
	if _, err := e.sys.Root.RequestFuture(e.pid, &protocol.Attach{}, 5*time.Second).Result(); err != nil {
		e.t.Fatalf("actor did not answer: %v", err)
	}
}

func TestGet_cachesToken(t *testing.T) {
	e := start(t, &provider{expiresIn: 3600}, tokenmanager.Settings{})
	for range 3 {
		if got := e.token(); got != "tok-1" {
			t.Fatalf("token = %q; want tok-1", got)
		}
	}
	e.calls(1)
	r := e.ask()
	if want := e.clock.Now().Add(time.Hour); !r.ExpiresAt.Equal(want) {
		t.Errorf("ExpiresAt = %v; want %v (lifetime counts from the fetch start)", r.ExpiresAt, want)
	}
}

func TestGet_singleFetchForConcurrentAskers(t *testing.T) {
	p := &provider{expiresIn: 3600, gate: make(chan struct{})}
	e := start(t, p, tokenmanager.Settings{})
	var wg sync.WaitGroup
	var got sync.Map
	for i := range 200 {
		wg.Go(func() { got.Store(i, e.token()) })
	}
	e.calls(1)
	close(p.gate)
	wg.Wait()
	e.calls(1)
	got.Range(func(_, v any) bool {
		if v != "tok-1" {
			t.Errorf("asker got %v; want tok-1", v)
		}
		return true
	})
}

func TestEarlyRefresh(t *testing.T) {
	tests := []struct {
		name      string
		expiresIn int64
		buffer    time.Duration
		notYet    time.Duration // no refresh by then
		due       time.Duration // refresh by then
	}{
		{"at expiry minus buffer", 60, 10 * time.Second, 49 * time.Second, 50 * time.Second},
		{"at half a lifetime shorter than the buffer", 4, 10 * time.Second, 1900 * time.Millisecond, 2 * time.Second},
		{"default buffer", 3600, 0, 3589 * time.Second, 3590 * time.Second},
		{"lifetime a little over the buffer: half of it", 12, 10 * time.Second, 5900 * time.Millisecond, 6 * time.Second},
		{"buffer over half the lifetime: half of it", 60, 50 * time.Second, 29900 * time.Millisecond, 30 * time.Second},
		{"lifetime equal to the buffer", 10, 10 * time.Second, 4900 * time.Millisecond, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, &provider{expiresIn: tt.expiresIn}, tokenmanager.Settings{RefreshBuffer: tt.buffer})
			e.token()
			e.clock.Add(tt.notYet)
			e.calls(1)
			e.clock.Add(tt.due - tt.notYet)
			e.calls(2)
			if got := e.token(); got != "tok-2" {
				t.Errorf("token after refresh = %q; want tok-2", got)
			}
		})
	}
}

func TestEarlyRefresh_oldTokenServedWhileFetching(t *testing.T) {
	p := &provider{expiresIn: 60, gate: make(chan struct{}, 1)}
	p.gate <- struct{}{} // let the first fetch through
	e := start(t, p, tokenmanager.Settings{})
	e.token()
	e.clock.Add(50 * time.Second)
	e.calls(2) // the refresh is in flight, held at the gate
	if got := e.token(); got != "tok-1" {
		t.Errorf("token during refresh = %q; want the still-valid tok-1", got)
	}
	p.gate <- struct{}{}
	deadline := time.Now().Add(5 * time.Second)
	for e.token() != "tok-2" && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := e.token(); got != "tok-2" {
		t.Errorf("token after refresh = %q; want tok-2", got)
	}
}

func TestNoExpiry_cachedUntilInvalidated(t *testing.T) {
	for _, exp := range []int64{0, -10} {
		t.Run(fmt.Sprint(exp), func(t *testing.T) {
			e := start(t, &provider{expiresIn: exp}, tokenmanager.Settings{})
			r := e.ask()
			if !r.ExpiresAt.IsZero() {
				t.Errorf("ExpiresAt = %v; want zero for no expiry", r.ExpiresAt)
			}
			e.clock.Add(10000 * time.Hour)
			e.calls(1)
			e.sys.Root.Send(e.pid, messages.Invalidate{AccessToken: "tok-1"})
			if got := e.token(); got != "tok-2" {
				t.Errorf("token after invalidation = %q; want tok-2", got)
			}
		})
	}
}

func TestInvalidate_onlyTheNamedToken(t *testing.T) {
	e := start(t, &provider{expiresIn: 3600}, tokenmanager.Settings{})
	e.token()
	e.sys.Root.Send(e.pid, messages.Invalidate{AccessToken: "tok-0"}) // an older token
	if got := e.token(); got != "tok-1" {
		t.Fatalf("a stale invalidation dropped the cached token: got %q", got)
	}
	e.sys.Root.Send(e.pid, &messages.Invalidate{AccessToken: "tok-1"})
	if got := e.token(); got != "tok-2" {
		t.Fatalf("token after invalidating tok-1 = %q; want tok-2", got)
	}
	e.sys.Root.Send(e.pid, messages.Invalidate{}) // empty: whatever is cached
	if got := e.token(); got != "tok-3" {
		t.Fatalf("token after invalidating everything = %q; want tok-3", got)
	}
}

func TestInvalidate_duringFetchCannotResurrect(t *testing.T) {
	// The endpoint keeps returning the same token until it is revoked.
	var calls atomic.Int64
	gate := make(chan struct{})
	e := start(t, &provider{}, tokenmanager.Settings{})
	mock := clock.NewMock()
	props, err := actor.NewProps(tokenmanager.Settings{
		Clock: mock,
		GetCredentials: func(ctx context.Context) (tokenmanager.Token, error) {
			n := calls.Add(1)
			if n == 2 {
				<-gate // the early refresh, in flight while the token is revoked
				return tokenmanager.Token{AccessToken: "same", ExpiresIn: 60}, nil
			}
			if n == 1 {
				return tokenmanager.Token{AccessToken: "same", ExpiresIn: 60}, nil
			}
			return tokenmanager.Token{AccessToken: "fresh", ExpiresIn: 60}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	pid := e.sys.Root.Spawn(props)
	defer func() { e.sys.Root.StopFuture(pid).Wait() }()
	get := func() string {
		res, err := e.sys.Root.RequestFuture(pid, messages.Get{}, 5*time.Second).Result()
		if err != nil {
			t.Fatal(err)
		}
		return res.(*messages.TokenResult).Token.AccessToken
	}
	if got := get(); got != "same" {
		t.Fatalf("first token = %q", got)
	}
	mock.Add(50 * time.Second) // early refresh starts, held at the gate
	for calls.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	e.sys.Root.Send(pid, messages.Invalidate{AccessToken: "same"})
	// Ask while the fetch is held, so the Get waits on it.
	f := e.sys.Root.RequestFuture(pid, messages.Get{}, 5*time.Second)
	reply := make(chan string, 1)
	go func() {
		res, _ := f.Result()
		r, _ := res.(*messages.TokenResult)
		if r == nil {
			reply <- "no reply"
			return
		}
		reply <- r.Token.AccessToken
	}()
	close(gate)
	if got := <-reply; got != "fresh" {
		t.Errorf("token after revocation = %q; want fresh (the in-flight fetch must not bring back the revoked token)", got)
	}
	if got := calls.Load(); got != 3 {
		t.Errorf("provider calls = %d; want 3", got)
	}
}

func TestFailedFetch_answeredAtOnceThenBackoff(t *testing.T) {
	p := &provider{expiresIn: 3600}
	p.failWith(errors.New("endpoint down"))
	e := start(t, p, tokenmanager.Settings{RetryBaseDelay: time.Second, RetryMaxDelay: 4 * time.Second})
	r := e.ask()
	var fe *tokenmanager.FetchError
	if !errors.As(r.Err, &fe) || fe.Attempt != 1 || !strings.Contains(r.Err.Error(), "endpoint down") {
		t.Fatalf("Err = %v; want a FetchError (attempt 1) wrapping the provider's error", r.Err)
	}
	// During the backoff, askers hear the last error without a new fetch.
	if r := e.ask(); r.Err == nil {
		t.Fatal("Get during backoff succeeded")
	}
	e.calls(1)
	e.clock.Add(4 * time.Second)
	p.failWith(nil)
	if got := e.token(); got != "tok-2" {
		t.Errorf("token after backoff = %q; want tok-2", got)
	}
}

func TestFailedFetch_idleManagerDoesNotPoll(t *testing.T) {
	p := &provider{expiresIn: 3600}
	p.failWith(errors.New("endpoint down"))
	e := start(t, p, tokenmanager.Settings{})
	e.ask()
	for range 10 {
		e.clock.Add(time.Hour)
	}
	e.calls(1)
}

func TestFailedEarlyRefresh_retriedWhileTokenValid(t *testing.T) {
	p := &provider{expiresIn: 60}
	e := start(t, p, tokenmanager.Settings{RetryBaseDelay: time.Second, RetryMaxDelay: time.Second})
	e.token()
	p.failWith(errors.New("endpoint down"))
	e.clock.Add(50 * time.Second) // refresh fails
	e.calls(2)
	e.clock.Add(time.Second) // retried after the backoff: the token is still valid
	e.calls(3)
	p.failWith(nil)
	e.clock.Add(time.Second)
	e.calls(4)
	if got := e.token(); got != "tok-4" {
		t.Errorf("token = %q; want tok-4", got)
	}
}

func TestThreshold_atMultiplesOnly(t *testing.T) {
	var mu sync.Mutex
	var got []int
	p := &provider{}
	p.failWith(errors.New("down"))
	e := start(t, p, tokenmanager.Settings{
		TokenTryThreshold: 3,
		RetryBaseDelay:    time.Second,
		RetryMaxDelay:     time.Second,
		OnTokenTryThreshold: func(n int) {
			mu.Lock()
			got = append(got, n)
			mu.Unlock()
		},
	})
	for range 7 {
		e.ask()
		e.clock.Add(time.Second)
	}
	e.calls(7)
	want := "[3 6]"
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		s := fmt.Sprint(got)
		mu.Unlock()
		if s == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("thresholds = %s; want %s", s, want)
		}
		time.Sleep(time.Millisecond)
	}
}

type retryAfterErr struct{ d time.Duration }

func (e retryAfterErr) Error() string             { return "slow down" }
func (e retryAfterErr) RetryAfter() time.Duration { return e.d }

func TestFailedFetch_honoursRetryAfter(t *testing.T) {
	p := &provider{expiresIn: 3600}
	p.failWith(fmt.Errorf("status 429: %w", retryAfterErr{2 * time.Minute}))
	e := start(t, p, tokenmanager.Settings{RetryBaseDelay: time.Millisecond, RetryMaxDelay: time.Second})
	e.ask()
	p.failWith(nil)
	e.clock.Add(time.Minute)
	if r := e.ask(); r.Err == nil {
		t.Fatal("fetched before Retry-After passed")
	}
	e.calls(1)
	e.clock.Add(time.Minute)
	if got := e.token(); got != "tok-2" {
		t.Errorf("token after Retry-After = %q; want tok-2", got)
	}
}

func TestProviderPanic_contained(t *testing.T) {
	var calls atomic.Int64
	e := start(t, &provider{}, tokenmanager.Settings{RetryBaseDelay: time.Second, RetryMaxDelay: time.Second})
	mock := clock.NewMock()
	props, _ := actor.NewProps(tokenmanager.Settings{
		Clock: mock, RetryBaseDelay: time.Second, RetryMaxDelay: time.Second,
		GetCredentials: func(context.Context) (tokenmanager.Token, error) {
			if calls.Add(1) == 1 {
				panic("provider bug")
			}
			return tokenmanager.Token{AccessToken: "ok"}, nil
		},
	})
	pid := e.sys.Root.Spawn(props)
	defer func() { e.sys.Root.StopFuture(pid).Wait() }()
	res, _ := e.sys.Root.RequestFuture(pid, messages.Get{}, 5*time.Second).Result()
	if r := res.(*messages.TokenResult); r.Err == nil || !strings.Contains(r.Err.Error(), "panicked") {
		t.Fatalf("Err = %v; want the panic reported as a failed fetch", r.Err)
	}
	mock.Add(time.Second)
	res, _ = e.sys.Root.RequestFuture(pid, messages.Get{}, 5*time.Second).Result()
	if r := res.(*messages.TokenResult); r.Token.AccessToken != "ok" {
		t.Errorf("after the panic: %+v; want token ok", r)
	}
}

func TestInvalidToken_isAFailedFetch(t *testing.T) {
	tests := []struct {
		name string
		tok  tokenmanager.Token
	}{
		{"empty", tokenmanager.Token{ExpiresIn: 60}},
		{"header injection", tokenmanager.Token{AccessToken: "a\r\nX: y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, &provider{}, tokenmanager.Settings{})
			props, _ := actor.NewProps(tokenmanager.Settings{
				Clock:          e.clock,
				GetCredentials: func(context.Context) (tokenmanager.Token, error) { return tt.tok, nil },
			})
			pid := e.sys.Root.Spawn(props)
			defer func() { e.sys.Root.StopFuture(pid).Wait() }()
			res, _ := e.sys.Root.RequestFuture(pid, messages.Get{}, 5*time.Second).Result()
			if r := res.(*messages.TokenResult); !errors.Is(r.Err, tokenmanager.ErrInvalidToken) {
				t.Errorf("Err = %v; want ErrInvalidToken", r.Err)
			}
		})
	}
}

func TestTokenExpiredOnArrival_isAFailedFetch(t *testing.T) {
	e := start(t, &provider{}, tokenmanager.Settings{})
	props, _ := actor.NewProps(tokenmanager.Settings{
		Clock: e.clock,
		GetCredentials: func(context.Context) (tokenmanager.Token, error) {
			e.clock.Add(2 * time.Second) // the fetch outlives the token
			return tokenmanager.Token{AccessToken: "late", ExpiresIn: 1}, nil
		},
	})
	pid := e.sys.Root.Spawn(props)
	defer func() { e.sys.Root.StopFuture(pid).Wait() }()
	res, _ := e.sys.Root.RequestFuture(pid, messages.Get{}, 5*time.Second).Result()
	if r := res.(*messages.TokenResult); !errors.Is(r.Err, tokenmanager.ErrExpiredOnArrival) {
		t.Errorf("Err = %v; want ErrExpiredOnArrival for a token that expired before it arrived", r.Err)
	}
}

func TestRefreshed_pushedToken(t *testing.T) {
	p := &provider{}
	e := start(t, p, tokenmanager.Settings{})
	e.sys.Root.Send(e.pid, messages.Refreshed{Token: tokenmanager.Token{AccessToken: "pushed", ExpiresIn: 60}})
	r := e.ask()
	if r.Token.AccessToken != "pushed" {
		t.Fatalf("token = %q; want pushed", r.Token.AccessToken)
	}
	if want := e.clock.Now().Add(time.Minute); !r.ExpiresAt.Equal(want) {
		t.Errorf("ExpiresAt = %v; want %v (counted from arrival)", r.ExpiresAt, want)
	}
	e.calls(0)
	e.clock.Add(50 * time.Second) // pushed tokens are refreshed early too
	e.calls(1)
}

func TestStop_releasesAskersAndCancelsFetch(t *testing.T) {
	p := &provider{gate: make(chan struct{}), ctxs: make(chan context.Context, 1)}
	e := start(t, p, tokenmanager.Settings{})
	f := e.sys.Root.RequestFuture(e.pid, messages.Get{}, 5*time.Second)
	fetchCtx := <-p.ctxs
	e.sys.Root.StopFuture(e.pid).Wait()
	res, err := f.Result()
	if err != nil {
		t.Fatalf("future: %v", err)
	}
	if r := res.(*messages.TokenResult); !errors.Is(r.Err, tokenmanager.ErrClosed) {
		t.Errorf("Err = %v; want ErrClosed", r.Err)
	}
	select {
	case <-fetchCtx.Done():
	case <-time.After(5 * time.Second):
		t.Error("the in-flight fetch's context was not cancelled")
	}
}

func TestEvents_onSystemEventStream(t *testing.T) {
	e := start(t, &provider{expiresIn: 60}, tokenmanager.Settings{})
	got := make(chan messages.Event, 10)
	sub := e.sys.EventStream.SubscribeWithPredicate(
		func(ev any) { got <- ev.(messages.Event) },
		func(ev any) bool { _, ok := ev.(messages.Event); return ok },
	)
	defer e.sys.EventStream.Unsubscribe(sub)
	e.token()
	select {
	case ev := <-got:
		r, ok := ev.(messages.TokenRefreshed)
		if !ok || r.Reason != messages.ReasonColdStart || r.Fingerprint != tokenmanager.Fingerprint("tok-1") {
			t.Errorf("event = %#v; want TokenRefreshed (cold start) with the token's fingerprint", ev)
		}
		if strings.Contains(r.Message, "tok-1") {
			t.Errorf("Message %q holds the token without AddTokenToLogs", r.Message)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event on the system's EventStream")
	}
}

func TestCallbacks_panicAndSlowDoNotStallActor(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	p := &provider{expiresIn: 0}
	e := start(t, p, tokenmanager.Settings{
		OnTokenRefresh:     func(string) { <-block },
		OnTokenRequestFail: func(error) { panic("callback bug") },
	})
	for i := range 5 {
		if got := e.token(); got != fmt.Sprintf("tok-%d", i+1) {
			t.Fatalf("token = %q", got)
		}
		e.sys.Root.Send(e.pid, messages.Invalidate{})
	}
}

func TestNewProps_validates(t *testing.T) {
	if _, err := actor.NewProps(tokenmanager.Settings{}); err == nil {
		t.Error("NewProps accepted settings without a provider")
	}
}

func TestInvalidate_duringRefreshKeepsTheNewToken(t *testing.T) {
	// A late rejection of the old token while its replacement is being
	// fetched must not throw the replacement away.
	p := &provider{expiresIn: 60, gate: make(chan struct{}, 1)}
	p.gate <- struct{}{}
	e := start(t, p, tokenmanager.Settings{})
	e.token()
	e.clock.Add(50 * time.Second) // early refresh, held at the gate
	e.calls(2)
	e.sys.Root.Send(e.pid, messages.Invalidate{AccessToken: "tok-1"})
	e.barrier()
	p.gate <- struct{}{}
	if got := e.token(); got != "tok-2" {
		t.Errorf("token = %q; want tok-2, fetched while tok-1 was rejected", got)
	}
	e.calls(2)
}

func TestProvider_abandonedCallsAreBounded(t *testing.T) {
	// A provider that ignores its context is abandoned after FetchTimeout;
	// one more call may run beside it, never more.
	var running, most atomic.Int64
	release := make(chan struct{})
	e := start(t, &provider{}, tokenmanager.Settings{})
	props, _ := actor.NewProps(tokenmanager.Settings{
		Clock:          e.clock,
		FetchTimeout:   20 * time.Millisecond,
		RetryBaseDelay: time.Millisecond,
		RetryMaxDelay:  time.Millisecond,
		GetCredentials: func(context.Context) (tokenmanager.Token, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			<-release // ignores ctx
			return tokenmanager.Token{AccessToken: "late"}, nil
		},
	})
	pid := e.sys.Root.Spawn(props)
	defer func() {
		close(release)
		e.sys.Root.StopFuture(pid).Wait()
	}()
	for range 5 {
		res, _ := e.sys.Root.RequestFuture(pid, messages.Get{}, 5*time.Second).Result()
		if r := res.(*messages.TokenResult); r.Err == nil {
			t.Fatal("Get succeeded while the provider hangs")
		}
		e.clock.Add(time.Second) // past the backoff
	}
	if got := most.Load(); got != 2 {
		t.Errorf("provider ran %d calls at once; want 2 (one abandoned, one current)", got)
	}
}

func TestTokenRefreshed_reasons(t *testing.T) {
	p := &provider{expiresIn: 60}
	e := start(t, p, tokenmanager.Settings{RetryBaseDelay: 30 * time.Second, RetryMaxDelay: 30 * time.Second})
	got := make(chan messages.RefreshReason, 10)
	sub := e.sys.EventStream.SubscribeWithPredicate(
		func(ev any) { got <- ev.(messages.TokenRefreshed).Reason },
		func(ev any) bool { _, ok := ev.(messages.TokenRefreshed); return ok },
	)
	defer e.sys.EventStream.Unsubscribe(sub)
	next := func(want messages.RefreshReason) {
		t.Helper()
		select {
		case r := <-got:
			if r != want {
				t.Errorf("Reason = %q; want %q", r, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no TokenRefreshed; want one with reason %q", want)
		}
	}
	e.token()
	next(messages.ReasonColdStart)
	e.clock.Add(50 * time.Second)
	e.calls(2)
	next(messages.ReasonEarlyRefresh)
	e.sys.Root.Send(e.pid, messages.Invalidate{AccessToken: "tok-2"})
	e.token()
	next(messages.ReasonInvalidated)
	e.sys.Root.Send(e.pid, messages.Refreshed{Token: tokenmanager.Token{AccessToken: "pushed", ExpiresIn: 60}})
	e.token()
	next(messages.ReasonPushed)
	// The early refresh fails and its retry comes after the token expired;
	// the next Get fetches because the token had expired.
	p.failWith(errors.New("down"))
	e.clock.Add(50 * time.Second)
	e.calls(4)
	p.failWith(nil)
	e.clock.Add(40 * time.Second)
	e.token()
	next(messages.ReasonExpired)
}

func TestPoison_answersQueuedGets(t *testing.T) {
	p := &provider{gate: make(chan struct{})}
	e := start(t, p, tokenmanager.Settings{})
	var futures []*proto.Future
	for range 50 {
		futures = append(futures, e.sys.Root.RequestFuture(e.pid, messages.Get{}, 5*time.Second))
	}
	e.sys.Root.PoisonFuture(e.pid).Wait()
	for i, f := range futures {
		res, err := f.Result()
		if err != nil {
			t.Fatalf("Get %d: %v; want an answer", i, err)
		}
		if r := res.(*messages.TokenResult); !errors.Is(r.Err, tokenmanager.ErrClosed) {
			t.Errorf("Get %d: Err = %v; want ErrClosed", i, r.Err)
		}
	}
}
