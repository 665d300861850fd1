package tests

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// untilDone returns a condition for advanceUntil that holds once a result
// arrives on ch, storing it in *r.
func untilDone(ch <-chan result, r *result) func() bool {
	done := false
	return func() bool {
		if !done {
			select {
			case *r = <-ch:
				done = true
			default:
			}
		}
		return done
	}
}

func TestFaults_providerPanics(t *testing.T) {
	mock := clock.NewMock()
	p := &testutil.Provider{ExpiresIn: 3600}
	p.PanicN.Store(2)
	rt := testutil.NewRT(t, tokenmanager.Settings{
		GetCredentials: p.Get,
		Clock:          mock,
		RetryBaseDelay: time.Second,
		RetryMaxDelay:  2 * time.Second,
	}, &testutil.Backend{})
	rec := testutil.Record(t, rt)

	// Each panic fails the request at once; the next request after the
	// backoff fetches again.
	for i := range 2 {
		var pe *tokenmanager.PanicError
		if r := send(context.Background(), rt, ""); !errors.As(r.err, &pe) {
			t.Fatalf("request %d: err %v; want a *tokenmanager.PanicError", i+1, r.err)
		}
		mock.Add(2 * time.Second) // past the backoff
	}
	if r := mustOK(t, rt); r.auth != "Bearer tok-3" {
		t.Fatalf("request after two panics carried %q; want tok-3", r.auth)
	}
	for _, e := range testutil.WaitEvents[messages.TokenRequestFailed](t, rec, 2) {
		if e.Err == nil {
			t.Error("TokenRequestFailed for a panic has no Err")
		}
	}
	// The actor kept its state: the token stays cached.
	for range 10 {
		if got := mustOK(t, rt).auth; got != "Bearer tok-3" {
			t.Errorf("request carried %q; want the cached tok-3", got)
		}
	}
	if got := p.Calls.Load(); got != 3 {
		t.Errorf("provider calls = %d; want 3", got)
	}
}

type syncBuffer = testutil.SyncBuffer

// sendNow sends a request and returns what came back, failing the test if
// it does not come back promptly in real time (the mock clock stands
// still, so nothing else can release it).
func sendNow(t *testing.T, rt http.RoundTripper) result {
	t.Helper()
	ch := make(chan result, 1)
	go func() { ch <- send(context.Background(), rt, "") }()
	select {
	case r := <-ch:
		return r
	case <-time.After(testutil.Patience):
		t.Fatalf("the request still waits after %v; want it failed at once", testutil.Patience)
		return result{}
	}
}

// A panicking provider is a bug that retrying will not mend: requests
// fail at once with a *PanicError (not after WaitTimeout), and the stack
// trace reaches the log and the event.
func TestFaults_providerPanicFailsRequestsAtOnce(t *testing.T) {
	mock := clock.NewMock()
	p := &testutil.Provider{ExpiresIn: 3600}
	p.PanicN.Store(1 << 30)
	var logs syncBuffer
	rt := testutil.NewRT(t, tokenmanager.Settings{
		GetCredentials: p.Get,
		Clock:          mock,
		WaitTimeout:    time.Hour,
		Logger:         slog.New(slog.NewTextHandler(&logs, nil)),
	}, &testutil.Backend{})
	rec := testutil.Record(t, rt)

	began := mock.Now()
	r := sendNow(t, rt)
	var pe *tokenmanager.PanicError
	if !errors.As(r.err, &pe) {
		t.Fatalf("err %v; want a *tokenmanager.PanicError", r.err)
	}
	if !tokenmanager.IsPermanent(r.err) || errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("err %v: permanent %v; want a permanent failure, not a wait that timed out", r.err, tokenmanager.IsPermanent(r.err))
	}
	if pe.Value != "token provider exploded" {
		t.Errorf("PanicError.Value = %v; want the provider's panic value", pe.Value)
	}
	const frame = "testutil.(*Provider).Get"
	if !strings.Contains(string(pe.Stack), frame) {
		t.Errorf("PanicError.Stack does not show %s:\n%s", frame, pe.Stack)
	}
	if strings.Contains(pe.Error(), "goroutine") || len(pe.Error()) > 300 {
		t.Errorf("PanicError.Error() = %q; want a short message without the stack", pe.Error())
	}
	if !mock.Now().Equal(began) {
		t.Fatalf("mock clock moved")
	}
	ev := testutil.WaitEvents[messages.TokenRequestFailed](t, rec, 1)[0]
	if !ev.Permanent || !errors.As(ev.Err, &pe) || !strings.Contains(string(pe.Stack), frame) {
		t.Errorf("TokenRequestFailed = %+v; want a permanent failure carrying the *PanicError with its stack", ev)
	}
	testutil.Eventually(t, "the panic logged", func() bool { return strings.Contains(logs.String(), "token provider panicked") })
	if out := logs.String(); !strings.Contains(out, frame) {
		t.Errorf("log does not show the stack (%s):\n%s", frame, out)
	}
	// Within the backoff, later requests hear the same failure at once,
	// without calling the provider.
	if r := sendNow(t, rt); !errors.As(r.err, &pe) {
		t.Errorf("second request: err %v; want the *PanicError", r.err)
	}
	if got := p.Calls.Load(); got != 1 {
		t.Errorf("provider calls = %d; want 1", got)
	}
}

// A token the manager cannot use (empty, or holding CR/LF) fails requests
// at once with ErrInvalidToken, as a permanent failure.
func TestFaults_invalidTokenFailsRequestsAtOnce(t *testing.T) {
	for name, tok := range map[string]string{"empty": "", "CRLF": "t\r\nX-Evil: 1"} {
		t.Run(name, func(t *testing.T) {
			mock := clock.NewMock()
			var calls atomic.Int64
			rt := testutil.NewRT(t, tokenmanager.Settings{
				GetCredentials: func(context.Context) (tokenmanager.Token, error) {
					calls.Add(1)
					return tokenmanager.Token{AccessToken: tok, ExpiresIn: 3600}, nil
				},
				Clock:       mock,
				WaitTimeout: time.Hour,
			}, &testutil.Backend{})
			rec := testutil.Record(t, rt)
			r := sendNow(t, rt)
			if !errors.Is(r.err, tokenmanager.ErrInvalidToken) || !tokenmanager.IsPermanent(r.err) {
				t.Fatalf("err %v; want a permanent failure wrapping ErrInvalidToken", r.err)
			}
			if ev := testutil.WaitEvents[messages.TokenRequestFailed](t, rec, 1)[0]; !ev.Permanent {
				t.Errorf("TokenRequestFailed.Permanent = false; want true")
			}
			if got := calls.Load(); got != 1 {
				t.Errorf("provider calls = %d; want 1", got)
			}
		})
	}
}

func TestFaults_panickingCallbacksAndSubscribers(t *testing.T) {
	mock := clock.NewMock()
	p := &testutil.Provider{ExpiresIn: 3600}
	b := &testutil.Backend{}
	var calls sync.Map // callback name -> *atomic.Int64
	boom := func(name string) {
		n, _ := calls.LoadOrStore(name, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		panic(name + " exploded")
	}
	called := func(name string) int64 {
		if n, ok := calls.Load(name); ok {
			return n.(*atomic.Int64).Load()
		}
		return 0
	}
	rt := testutil.NewRT(t, tokenmanager.Settings{
		GetCredentials:      p.Get,
		Clock:               mock,
		MaxRecoveryTries:    1,
		TokenTryThreshold:   1,
		RetryBaseDelay:      time.Second,
		RetryMaxDelay:       time.Second,
		OnTokenRefresh:      func(string) { boom("OnTokenRefresh") },
		OnAuthFail:          func(string) { boom("OnAuthFail") },
		OnTokenRequestFail:  func(error) { boom("OnTokenRequestFail") },
		OnRecoveryTry:       func(string) { boom("OnRecoveryTry") },
		OnTokenTryThreshold: func(int) { boom("OnTokenTryThreshold") },
		OnRecoveryAbort:     func(string) { boom("OnRecoveryAbort") },
	}, b)
	t.Cleanup(rt.Subscribe(func(messages.Event) { boom("subscriber") }))
	rec := testutil.Record(t, rt)

	// A failed fetch, then a token.
	p.FailN.Store(1)
	ch := make(chan result, 1)
	go func() { ch <- send(context.Background(), rt, "") }()
	var r result
	testutil.AdvanceUntil(t, mock, time.Second, 0, "the first request returns", untilDone(ch, &r))
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("first request: status %d, err %v; want 200", r.status, r.err)
	}
	// A revoked token, recovered.
	b.Revoke("tok-2")
	if got := mustOK(t, rt).auth; got != "Bearer tok-3" {
		t.Errorf("recovered request carried %q; want tok-3", got)
	}
	// A rejection with recovery used up.
	b.SetStatus(http.StatusUnauthorized)
	if r := send(context.Background(), rt, ""); r.status != http.StatusUnauthorized {
		t.Errorf("status %d, err %v; want 401", r.status, r.err)
	}
	b.SetStatus(0)
	testutil.Eventually(t, "a fresh token after the aborted request", func() bool { return mustOK(t, rt).auth == "Bearer tok-5" })
	for range 10 {
		mustOK(t, rt)
	}

	testutil.WaitEvents[messages.RecoveryAborted](t, rec, 1)
	for _, name := range []string{"OnTokenRefresh", "OnAuthFail", "OnTokenRequestFail", "OnRecoveryTry", "OnTokenTryThreshold", "OnRecoveryAbort"} {
		testutil.Eventually(t, name+" to be called", func() bool { return called(name) >= 1 })
	}
	testutil.Eventually(t, "OnTokenRefresh to be called after panicking", func() bool { return called("OnTokenRefresh") >= 3 })
	testutil.Eventually(t, "the panicking subscriber to keep being called", func() bool {
		return called("subscriber") == int64(len(rec.All()))
	})
	// Nothing restarted the actor: its cached token survived all of it.
	// Calls: a failure, tok-2, tok-3 after the revocation, tok-4 for the
	// one recovery try, tok-5 after that was rejected too.
	if got := p.Calls.Load(); got != 5 {
		t.Errorf("provider calls = %d; want 5", got)
	}
}

func TestFaults_stuckSubscriberStallsNothing(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	b := &testutil.Backend{}
	unblock := make(chan struct{})
	rt := testutil.NewRT(t, tokenmanager.Settings{
		GetCredentials: p.Get,
		Clock:          clock.NewMock(),
		EventBuffer:    4,
		OnAuthFail:     func(string) { <-unblock },
	}, b)
	stuck := make(chan struct{}, 1)
	t.Cleanup(rt.Subscribe(func(messages.Event) {
		select {
		case stuck <- struct{}{}:
		default:
		}
		<-unblock
	}))
	t.Cleanup(func() { close(unblock) }) // runs before Close

	rounds := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			tok := mustOK(t, rt).auth
			b.Revoke(strings.TrimPrefix(tok, "Bearer "))
		}
	}
	began := time.Now()
	rounds(0, 15)
	<-stuck
	dropped := rt.DroppedEvents()
	if dropped == 0 {
		t.Errorf("DroppedEvents = 0 after 15 rounds of events with a stuck subscriber and EventBuffer 4")
	}
	rounds(15, 30)
	if got := rt.DroppedEvents(); got <= dropped {
		t.Errorf("DroppedEvents = %d after 15 more rounds; want more than %d", got, dropped)
	}
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("30 rounds took %v; a stuck subscriber must not slow requests", took)
	}
}

func TestFaults_stuckEventStreamSubscriberStallsNothing(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	b := &testutil.Backend{}
	system := testutil.NewSystem(t)
	pid := spawn(t, system, tokenmanager.Settings{GetCredentials: p.Get, Clock: clock.NewMock(), EventBuffer: 4})
	unblock := make(chan struct{})
	isEvent := func(m any) bool { _, ok := m.(messages.Event); return ok }
	stuck := system.EventStream.SubscribeWithPredicate(func(any) { <-unblock }, isEvent)
	panicky := system.EventStream.SubscribeWithPredicate(func(any) { panic("EventStream subscriber exploded") }, isEvent)
	t.Cleanup(func() {
		close(unblock)
		system.EventStream.Unsubscribe(stuck)
		system.EventStream.Unsubscribe(panicky)
	})
	rt, err := transport.NewFromActor(system, pid, tokenmanager.Settings{EventBuffer: 4}, transport.WithBase(b))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()

	began := time.Now()
	for range 30 {
		tok := mustOK(t, rt).auth
		b.Revoke(strings.TrimPrefix(tok, "Bearer "))
	}
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("30 rounds took %v; a stuck EventStream subscriber must not slow requests", took)
	}
	// Round i used tok-i; the actor still answers with the last one.
	if res := ask(t, system, pid); res.Err != nil || res.Token.AccessToken != "tok-30" {
		t.Errorf("Get = {%q, %v}; want tok-30", res.Token.AccessToken, res.Err)
	}
}

func TestFaults_tryThresholdEvents(t *testing.T) {
	for _, threshold := range []int{0, 4} {
		want := threshold
		if want == 0 {
			want = 10 // the default
		}
		t.Run(fmt.Sprint("threshold=", want), func(t *testing.T) {
			mock := clock.NewMock()
			p := &testutil.Provider{}
			p.Always.Store(true)
			var mu sync.Mutex
			var fromCallback []int
			var requestFails atomic.Int64
			rt := testutil.NewRT(t, tokenmanager.Settings{
				GetCredentials:    p.Get,
				Clock:             mock,
				TokenTryThreshold: threshold,
				RetryBaseDelay:    time.Millisecond,
				RetryMaxDelay:     2 * time.Millisecond,
				OnTokenTryThreshold: func(n int) {
					mu.Lock()
					fromCallback = append(fromCallback, n)
					mu.Unlock()
				},
				OnTokenRequestFail: func(error) { requestFails.Add(1) },
			}, &testutil.Backend{})
			rec := testutil.Record(t, rt)

			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan result, 1)
			go func() { done <- send(ctx, rt, "waits") }()
			failures := int64(2*want + 1)
			testutil.AdvanceUntil(t, mock, 2*time.Millisecond, 0, "enough failed fetches", func() bool { return p.Calls.Load() >= failures })
			cancel()
			<-done
			time.Sleep(20 * time.Millisecond) // let the last fetch end
			n := int(p.Calls.Load())

			var wantTries []int
			for i := want; i <= n; i += want {
				wantTries = append(wantTries, i)
			}
			failed := testutil.WaitEvents[messages.TokenRequestFailed](t, rec, n)
			for i, e := range failed {
				if e.ConsecutiveFailures != i+1 {
					t.Errorf("TokenRequestFailed #%d has ConsecutiveFailures %d", i+1, e.ConsecutiveFailures)
				}
			}
			reached := testutil.WaitEvents[messages.TokenTryThresholdReached](t, rec, len(wantTries))
			var got []int
			for _, e := range reached {
				got = append(got, e.FailedTries)
			}
			if !reflect.DeepEqual(got, wantTries) {
				t.Errorf("TokenTryThresholdReached at %v; want %v (after %d failures)", got, wantTries, n)
			}
			testutil.Eventually(t, "the callbacks", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(fromCallback) == len(wantTries) && requestFails.Load() == int64(n)
			})
			mu.Lock()
			if !reflect.DeepEqual(fromCallback, wantTries) {
				t.Errorf("OnTokenTryThreshold called with %v; want %v", fromCallback, wantTries)
			}
			mu.Unlock()
		})
	}
}

func TestFaults_hangingProviderDoesNotBlockActor(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	p.Hang.Store(true) // until the actor stops
	system := testutil.NewSystem(t)
	pid := spawn(t, system, tokenmanager.Settings{GetCredentials: p.Get, Clock: clock.NewMock()})
	rt, err := transport.NewFromActor(system, pid, tokenmanager.Settings{}, transport.WithBase(&testutil.Backend{}))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()

	waiter := make(chan result, 1)
	go func() { waiter <- send(context.Background(), rt, "") }()
	testutil.Eventually(t, "the hanging fetch", func() bool { return p.Calls.Load() == 1 })

	// The actor still takes messages: a pushed token reaches the waiter.
	system.Root.Send(pid, messages.Refreshed{Token: tokenmanager.Token{AccessToken: "pushed", ExpiresIn: 3600}})
	select {
	case r := <-waiter:
		if r.err != nil || r.auth != "Bearer pushed" {
			t.Errorf("waiter: auth %q, err %v; want the pushed token", r.auth, r.err)
		}
	case <-time.After(testutil.Patience):
		t.Fatal("the waiter was not answered while the provider hung")
	}
	if res := ask(t, system, pid); res.Token.AccessToken != "pushed" {
		t.Errorf("Get = {%q, %v}; want pushed", res.Token.AccessToken, res.Err)
	}
}
