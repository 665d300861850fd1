package tests

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"go.uber.org/goleak"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/actor"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

func TestClose_releasesWaitersAndCancelsFetch(t *testing.T) {
	baseline := goleak.IgnoreCurrent()
	mock := clock.NewMock()
	p := &testutil.Provider{ExpiresIn: 3600}
	release := p.Hold()
	defer release()
	rt, err := transport.New(tokenmanager.Settings{GetCredentials: p.Get, Clock: mock}, transport.WithBase(&testutil.Backend{}))
	if err != nil {
		t.Fatal(err)
	}
	var heard atomic.Int64
	rt.Subscribe(func(messages.Event) { heard.Add(1) })

	const each = 5
	waiters := make(chan error, 2*each)
	for range each {
		go func() { waiters <- send(context.Background(), rt, "").err }()
		go func() {
			_, err := rt.Token(context.Background())
			waiters <- err
		}()
	}
	testutil.Eventually(t, "the fetch to start", func() bool { return p.Calls.Load() == 1 })
	time.Sleep(20 * time.Millisecond) // let the waiters queue on the held fetch

	if err := rt.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	timeout := time.After(time.Second)
	for range 2 * each {
		select {
		case err := <-waiters:
			if !errors.Is(err, tokenmanager.ErrClosed) {
				t.Errorf("waiter got %v; want tokenmanager.ErrClosed", err)
			}
		case <-timeout:
			t.Fatal("Close did not release every waiter promptly")
		}
	}
	testutil.Eventually(t, "the in-flight fetch to be cancelled", func() bool {
		errs, _ := p.GaveUp()
		return len(errs) == 1
	})
	if errs, _ := p.GaveUp(); !errors.Is(errs[0], context.Canceled) {
		t.Errorf("the provider's ctx ended with %v; want context.Canceled", errs[0])
	}

	// Every call after Close fails with ErrClosed.
	body := testutil.NewTrackedBody("payload")
	req, _ := http.NewRequest(http.MethodPost, apiURL, body)
	if _, err := rt.RoundTrip(req); !errors.Is(err, tokenmanager.ErrClosed) {
		t.Errorf("RoundTrip after Close: %v; want ErrClosed", err)
	}
	if n := body.Closes(); n != 1 {
		t.Errorf("RoundTrip after Close closed the request body %d times; want 1", n)
	}
	if _, err := rt.Token(context.Background()); !errors.Is(err, tokenmanager.ErrClosed) {
		t.Errorf("Token after Close: %v; want ErrClosed", err)
	}
	if _, err := rt.Client().Get(apiURL); !errors.Is(err, tokenmanager.ErrClosed) {
		t.Errorf("Client().Get after Close: %v; want an error wrapping ErrClosed", err)
	}
	rt.Subscribe(func(messages.Event) { t.Error("a subscriber added after Close was called") })()
	if err := rt.Close(); err != nil {
		t.Errorf("second Close = %v; want nil", err)
	}

	// Timers are gone: time passing fetches nothing.
	release()
	for range 24 {
		mock.Add(time.Hour)
	}
	testutil.Stays(t, "no fetch after Close", func() bool { return p.Calls.Load() == 1 })
	goleak.VerifyNone(t, baseline)
}

func TestClose_stopsTimers(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, p *testutil.Provider, rt *transport.RoundTripper, mock *clock.Mock)
	}{
		{"refresh timer armed", func(t *testing.T, p *testutil.Provider, rt *transport.RoundTripper, _ *clock.Mock) {
			mustOK(t, rt) // expires in 60s: the early refresh is armed
		}},
		{"retry timer armed", func(t *testing.T, p *testutil.Provider, rt *transport.RoundTripper, _ *clock.Mock) {
			p.Always.Store(true)
			armed := make(chan struct{}, 1)
			unsubscribe := rt.Subscribe(func(ev messages.Event) {
				if f, ok := ev.(messages.TokenRequestFailed); ok && f.RetryIn > 0 {
					select {
					case armed <- struct{}{}:
					default:
					}
				}
			})
			defer unsubscribe()
			go send(context.Background(), rt, "") // waits: a retry is armed
			select {
			case <-armed: // published after the retry timer was armed
			case <-time.After(5 * time.Second):
				t.Fatal("no failed fetch with a retry armed")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			baseline := goleak.IgnoreCurrent()
			mock := clock.NewMock()
			p := &testutil.Provider{ExpiresIn: 60}
			rt, err := transport.New(tokenmanager.Settings{
				GetCredentials: p.Get, Clock: mock, RetryBaseDelay: time.Second, RetryMaxDelay: time.Second,
			}, transport.WithBase(&testutil.Backend{}))
			if err != nil {
				t.Fatal(err)
			}
			tt.setup(t, p, rt, mock)
			before := p.Calls.Load()
			if err := rt.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			for range 48 {
				mock.Add(time.Hour)
			}
			testutil.Stays(t, "no fetch after Close", func() bool { return p.Calls.Load() == before })
			goleak.VerifyNone(t, baseline)
		})
	}
}

func TestClose_newFromActorLeavesActorRunning(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	system := testutil.NewSystem(t)
	pid := spawn(t, system, tokenmanager.Settings{GetCredentials: p.Get, Clock: clock.NewMock()})
	rt, err := transport.NewFromActor(system, pid, tokenmanager.Settings{}, transport.WithBase(&testutil.Backend{}))
	if err != nil {
		t.Fatal(err)
	}

	// A request waiting on a held fetch is released by Close...
	release := p.Hold()
	defer release()
	waiter := make(chan error, 1)
	go func() { waiter <- send(context.Background(), rt, "").err }()
	testutil.Eventually(t, "the fetch to start", func() bool { return p.Calls.Load() == 1 })
	if err := rt.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-waiter:
		if !errors.Is(err, tokenmanager.ErrClosed) {
			t.Errorf("waiter got %v; want ErrClosed", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not release the waiter")
	}
	if err := rt.Close(); err != nil {
		t.Errorf("second Close = %v; want nil", err)
	}
	if _, err := rt.Token(context.Background()); !errors.Is(err, tokenmanager.ErrClosed) {
		t.Errorf("Token after Close: %v; want ErrClosed", err)
	}

	// ...but the caller's actor keeps running, its fetch included.
	release()
	if res := ask(t, system, pid); res.Err != nil || res.Token.AccessToken != "tok-1" {
		t.Errorf("Get after Close = {%q, %v}; want tok-1", res.Token.AccessToken, res.Err)
	}
	if got := p.Calls.Load(); got != 1 {
		t.Errorf("provider calls = %d; want 1", got)
	}
}

// captureOutput runs fn with os.Stdout, os.Stderr and the standard logger
// redirected to pipes and returns what was written.
func captureOutput(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan string, 1)
	go func() {
		data, _ := io.ReadAll(r)
		r.Close()
		out <- string(data)
	}()
	stdout, stderr, logOut := os.Stdout, os.Stderr, log.Writer()
	os.Stdout, os.Stderr = w, w
	log.SetOutput(w)
	defer func() {
		os.Stdout, os.Stderr = stdout, stderr
		log.SetOutput(logOut)
	}()
	fn()
	os.Stdout, os.Stderr = stdout, stderr
	log.SetOutput(logOut)
	w.Close()
	return <-out
}

func TestNothingPrinted(t *testing.T) {
	printed := captureOutput(t, func() {
		p := &testutil.Provider{ExpiresIn: 3600}
		p.FailN.Store(2)
		b := &testutil.Backend{}
		rt, err := transport.New(tokenmanager.Settings{
			GetCredentials: p.Get,
			RetryBaseDelay: time.Millisecond,
			RetryMaxDelay:  5 * time.Millisecond,
			WaitTimeout:    testutil.Patience,
		}, transport.WithBase(b))
		if err != nil {
			t.Error(err)
			return
		}
		defer rt.Close()
		// Failed fetches, retried; a token; a revocation; a rejection
		// with recovery used up.
		mustOK(t, rt)
		b.Revoke("tok-3")
		mustOK(t, rt)
		b.SetStatus(http.StatusUnauthorized)
		send(context.Background(), rt, "")
		b.SetStatus(0)
		// Close while a request waits on a hanging fetch.
		p.Hang.Store(true)
		b.SetStatus(http.StatusUnauthorized)
		before := p.Calls.Load()
		done := make(chan struct{})
		go func() {
			send(context.Background(), rt, "")
			close(done)
		}()
		testutil.Eventually(t, "a hanging fetch", func() bool { return p.Calls.Load() > before })
		time.Sleep(20 * time.Millisecond)
		if err := rt.Close(); err != nil {
			t.Error(err)
		}
		<-done
		rt.Token(context.Background())
	})
	if printed != "" {
		t.Errorf("the library printed:\n%s", printed)
	}
}

func TestClose_publishesClosedOnceAndLast(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	rt, err := transport.New(tokenmanager.Settings{GetCredentials: p.Get, Clock: clock.NewMock()}, transport.WithBase(&testutil.Backend{}))
	if err != nil {
		t.Fatal(err)
	}
	rec := testutil.Record(t, rt)
	mustOK(t, rt)
	testutil.WaitEvents[messages.TokenRefreshed](t, rec, 1)
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	evs := rec.All()
	if n := len(testutil.EventsOf[messages.Closed](rec)); n != 1 {
		t.Fatalf("saw %d Closed events; want exactly 1 (events %v)", n, evs)
	}
	if _, ok := evs[len(evs)-1].(messages.Closed); !ok {
		t.Errorf("last event %T; want messages.Closed", evs[len(evs)-1])
	}
}

func TestClose_actorStopPublishesClosedToAttachedRoundTripper(t *testing.T) {
	system := testutil.NewSystem(t)
	p := &testutil.Provider{ExpiresIn: 3600}
	s := tokenmanager.Settings{GetCredentials: p.Get, Clock: clock.NewMock()}
	props, err := actor.NewProps(s)
	if err != nil {
		t.Fatal(err)
	}
	pid := system.Root.Spawn(props)
	rt, err := transport.NewFromActor(system, pid, s, transport.WithBase(&testutil.Backend{}))
	if err != nil {
		t.Fatal(err)
	}
	rec := testutil.Record(t, rt)
	system.Root.StopFuture(pid).Wait()
	testutil.WaitEvents[messages.Closed](t, rec, 1)
	rt.Close()
	if n := len(testutil.EventsOf[messages.Closed](rec)); n != 1 {
		t.Errorf("saw %d Closed events; want 1 although both the actor and Close said so", n)
	}
}
