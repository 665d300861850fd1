package tests

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

func TestContext_cancelWhileWaiting(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	release := p.Hold()
	defer release()
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, &testutil.Backend{})

	patient := burst(rt, 10)
	testutil.Eventually(t, "the fetch to start", func() bool { return p.Calls.Load() == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	viaRoundTrip := make(chan error, 1)
	go func() { viaRoundTrip <- send(ctx, rt, "impatient").err }()
	viaToken := make(chan error, 1)
	go func() {
		_, err := rt.Token(ctx)
		viaToken <- err
	}()
	time.Sleep(20 * time.Millisecond) // let both start waiting on the held fetch
	cancel()
	for name, ch := range map[string]chan error{"RoundTrip": viaRoundTrip, "Token": viaToken} {
		select {
		case err := <-ch:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s: err = %v; want one wrapping context.Canceled", name, err)
			}
		case <-time.After(time.Second):
			t.Fatalf("%s did not return promptly after its context was cancelled", name)
		}
	}

	// The others keep waiting and get the token once it comes.
	release()
	allCarried(t, gather(t, patient, 10), "Bearer tok-1")
	if got := p.Calls.Load(); got != 1 {
		t.Errorf("provider calls = %d; want 1", got)
	}
}

func TestContext_waitsThroughFailedFetches(t *testing.T) {
	mock := clock.NewMock()
	p := &testutil.Provider{ExpiresIn: 3600}
	p.FailN.Store(3)
	const maxDelay = 2 * time.Second
	rt := testutil.NewRT(t, tokenmanager.Settings{
		GetCredentials: p.Get,
		Clock:          mock,
		RetryBaseDelay: time.Second,
		RetryMaxDelay:  maxDelay,
	}, &testutil.Backend{})
	rec := testutil.Record(t, rt)

	done := make(chan result, 1)
	go func() { done <- send(context.Background(), rt, "persistent") }()
	var r result
	returned := false
	testutil.AdvanceUntil(t, mock, maxDelay, 0, "the request returns", func() bool {
		if returned {
			return true
		}
		select {
		case r = <-done:
			returned = true
		default:
		}
		return returned
	})
	if r.err != nil || r.status != http.StatusOK || r.auth != "Bearer tok-4" {
		t.Errorf("status %d, auth %q, err %v; want 200 with tok-4 after three failed fetches", r.status, r.auth, r.err)
	}
	if got := p.Calls.Load(); got != 4 {
		t.Errorf("provider calls = %d; want 4", got)
	}
	failed := testutil.WaitEvents[messages.TokenRequestFailed](t, rec, 3)
	for i, e := range failed {
		if e.ConsecutiveFailures != i+1 || !errors.Is(e.Err, testutil.ErrEndpointDown) {
			t.Errorf("TokenRequestFailed #%d = {ConsecutiveFailures: %d, Err: %v}; want {%d, wrapping %v}",
				i+1, e.ConsecutiveFailures, e.Err, i+1, testutil.ErrEndpointDown)
		}
	}
}

func TestContext_actorAskerGetsFetchErrorAtOnce(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	p.Always.Store(true)
	system := testutil.NewSystem(t)
	pid := spawn(t, system, tokenmanager.Settings{GetCredentials: p.Get, Clock: clock.NewMock()})

	for i := range 2 {
		began := time.Now()
		res := ask(t, system, pid)
		if took := time.Since(began); took > time.Second {
			t.Errorf("ask %d took %v; want the failure at once", i+1, took)
		}
		var fe *tokenmanager.FetchError
		if !errors.As(res.Err, &fe) || !errors.Is(res.Err, testutil.ErrEndpointDown) {
			t.Errorf("ask %d: Err = %v; want a *tokenmanager.FetchError wrapping %v", i+1, res.Err, testutil.ErrEndpointDown)
		}
		if res.Token.AccessToken != "" {
			t.Errorf("ask %d: a failed reply carries token %q", i+1, res.Token.AccessToken)
		}
	}
	// The second ask came during the backoff (the mock clock stood still):
	// it hears the last failure and starts no fetch.
	if got := p.Calls.Load(); got != 1 {
		t.Errorf("provider calls = %d; want 1", got)
	}
}

func TestContext_idleManagerDoesNotPoll(t *testing.T) {
	const maxDelay = 2 * time.Second
	settings := func(p *testutil.Provider, mock *clock.Mock) tokenmanager.Settings {
		return tokenmanager.Settings{GetCredentials: p.Get, Clock: mock, RetryBaseDelay: time.Second, RetryMaxDelay: maxDelay}
	}
	stillIdle := func(t *testing.T, p *testutil.Provider, mock *clock.Mock) {
		t.Helper()
		time.Sleep(20 * time.Millisecond) // let the last failure settle
		before := p.Calls.Load()
		for range 48 {
			mock.Add(time.Hour)
		}
		testutil.Stays(t, "no fetch with nobody waiting", func() bool { return p.Calls.Load() == before })
	}

	t.Run("request gave up", func(t *testing.T) {
		mock := clock.NewMock()
		p := &testutil.Provider{}
		p.Always.Store(true)
		rt := testutil.NewRT(t, settings(p, mock), &testutil.Backend{})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan result, 1)
		go func() { done <- send(ctx, rt, "gives-up") }()
		// While it waits, the failures are retried.
		testutil.AdvanceUntil(t, mock, maxDelay, 0, "a retried fetch", func() bool { return p.Calls.Load() >= 2 })
		cancel()
		if r := <-done; !errors.Is(r.err, context.Canceled) {
			t.Fatalf("err = %v; want one wrapping context.Canceled", r.err)
		}
		stillIdle(t, p, mock)
	})

	t.Run("actor asker answered", func(t *testing.T) {
		mock := clock.NewMock()
		p := &testutil.Provider{}
		p.Always.Store(true)
		system := testutil.NewSystem(t)
		pid := spawn(t, system, settings(p, mock))
		if res := ask(t, system, pid); res.Err == nil {
			t.Fatal("Get succeeded; want the fetch error")
		}
		stillIdle(t, p, mock)
	})
}

// When every request waiting for a fetch has given up, the fetch is not
// cancelled: it runs on (bounded by FetchTimeout) and its token serves the
// next request. Cancelling it would leave callers whose deadline is
// shorter than the token endpoint's latency with a new fetch per request
// and never a token.
func TestContext_fetchOutlivesWaitersWhoGaveUp(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	release := p.Hold()
	defer release()
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, &testutil.Backend{})
	rec := testutil.Record(t, rt)

	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		r := send(ctx, rt, "impatient")
		cancel()
		if !errors.Is(r.err, context.DeadlineExceeded) {
			t.Fatalf("impatient request %d: err %v; want its deadline", i, r.err)
		}
	}
	if got := p.Calls.Load(); got != 1 {
		t.Fatalf("provider calls while requests gave up = %d; want the one fetch they all joined", got)
	}
	release()
	testutil.WaitEvents[messages.TokenRefreshed](t, rec, 1)
	if r := mustOK(t, rt); r.auth != "Bearer tok-1" {
		t.Errorf("next request carried %q; want tok-1 from the fetch nobody waited for", r.auth)
	}
	if errs, _ := p.GaveUp(); len(errs) != 0 {
		t.Errorf("the provider saw its context end (%v); want the fetch left to finish", errs)
	}
	if got := p.Calls.Load(); got != 1 {
		t.Errorf("provider calls = %d; want 1", got)
	}
}

func TestContext_waitTimeoutWithoutDeadline(t *testing.T) {
	const wait = 200 * time.Millisecond
	tests := []struct {
		name  string
		fault func(*testutil.Provider)
	}{
		{"provider fails", func(p *testutil.Provider) { p.Always.Store(true) }},
		{"provider hangs", func(p *testutil.Provider) { p.Hang.Store(true) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &testutil.Provider{ExpiresIn: 3600}
			tt.fault(p)
			rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get, WaitTimeout: wait}, &testutil.Backend{})
			for name, call := range map[string]func() error{
				"RoundTrip": func() error { return send(context.Background(), rt, "").err },
				"Token": func() error {
					_, err := rt.Token(context.Background())
					return err
				},
			} {
				began := time.Now()
				err := call()
				took := time.Since(began)
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("%s: err = %v; want one wrapping context.DeadlineExceeded", name, err)
				}
				if took < wait/2 || took > 10*wait {
					t.Errorf("%s returned after %v; want about WaitTimeout (%v)", name, took, wait)
				}
			}
		})
	}
}

func TestContext_fetchTimeoutCancelsProvider(t *testing.T) {
	const fetchTimeout = 100 * time.Millisecond
	mock := clock.NewMock()
	p := &testutil.Provider{ExpiresIn: 3600}
	p.Hang.Store(true)
	rt := testutil.NewRT(t, tokenmanager.Settings{
		GetCredentials: p.Get,
		Clock:          mock,
		FetchTimeout:   fetchTimeout,
		RetryBaseDelay: time.Second,
		RetryMaxDelay:  time.Second,
	}, &testutil.Backend{})

	done := make(chan error, 1)
	go func() {
		_, err := rt.Token(context.Background())
		done <- err
	}()
	testutil.Eventually(t, "the hanging fetch to be cancelled", func() bool {
		errs, _ := p.GaveUp()
		return len(errs) > 0
	})
	errs, ended := p.GaveUp()
	if !errors.Is(errs[0], context.DeadlineExceeded) {
		t.Errorf("provider ctx ended with %v; want context.DeadlineExceeded", errs[0])
	}
	if ended[0] < fetchTimeout/2 || ended[0] > 10*fetchTimeout {
		t.Errorf("provider ctx ended after %v; want about FetchTimeout (%v)", ended[0], fetchTimeout)
	}

	// The waiter keeps waiting; once the provider answers, it gets a token.
	p.Hang.Store(false)
	var err error
	returned := false
	testutil.AdvanceUntil(t, mock, time.Second, 0, "the waiter gets a token", func() bool {
		if !returned {
			select {
			case err = <-done:
				returned = true
			default:
			}
		}
		return returned
	})
	if err != nil {
		t.Errorf("Token after the provider recovered: %v", err)
	}
}

func TestContext_lifetimeCountsFromFetchStart(t *testing.T) {
	mock := clock.NewMock()
	p := &testutil.Provider{ExpiresIn: 60}
	release := p.Hold()
	defer release()
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, Clock: mock}, &testutil.Backend{})
	rec := testutil.Record(t, rt)

	done := make(chan error, 1)
	go func() {
		_, err := rt.Token(context.Background())
		done <- err
	}()
	testutil.Eventually(t, "the fetch to start", func() bool { return p.Calls.Load() == 1 })
	started := mock.Now()
	mock.Add(30 * time.Second) // the token endpoint is slow
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := testutil.WaitEvents[messages.TokenRefreshed](t, rec, 1)[0].ExpiresAt
	if want := started.Add(60 * time.Second); !got.Equal(want) {
		t.Errorf("TokenRefreshed.ExpiresAt = fetch start + %v; want + 60s", got.Sub(started))
	}
}

// WaitTimeout applies only when the context has no deadline: a request
// with a longer deadline of its own waits until that deadline.
func TestContext_ownDeadlineOverridesWaitTimeout(t *testing.T) {
	const wait, deadline = 50 * time.Millisecond, 400 * time.Millisecond
	p := &testutil.Provider{}
	p.Always.Store(true)
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get, WaitTimeout: wait}, &testutil.Backend{})
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	began := time.Now()
	r := send(ctx, rt, "")
	took := time.Since(began)
	if !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("err = %v; want one wrapping context.DeadlineExceeded", r.err)
	}
	if took < deadline*3/4 {
		t.Errorf("returned after %v; want to wait until the context's own deadline (%v), not WaitTimeout (%v)", took, deadline, wait)
	}
}
