package core_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/core"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// A fresh snapshot answers at once; a missing, expired or rejected one
// sends the actor one Wait.
func TestToken_snapshot(t *testing.T) {
	tests := []struct {
		name     string
		cached   string
		age      time.Duration // how long ago the cached token was published
		rejected string
		want     string
		wantWait bool
	}{
		{name: "fresh", cached: "tok-0", want: "tok-0"},
		{name: "fresh, another token rejected", cached: "tok-0", rejected: "old", want: "tok-0"},
		{name: "none cached", want: "tok-1", wantWait: true},
		{name: "expired", cached: "tok-0", age: tokenTTL, want: "tok-1", wantWait: true},
		{name: "the cached token is the rejected one", cached: "tok-0", rejected: "tok-0", want: "tok-1", wantWait: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tokenmanager.Settings{}, true)
			if tt.cached != "" {
				f.cache(tt.cached)
			}
			f.clk.Add(tt.age)
			ch := f.waitToken(context.Background(), tt.rejected)
			if tt.wantWait {
				f.a.answer(t, "tok-1")
			}
			r := get(t, ch)
			if r.err != nil || r.token != tt.want {
				t.Errorf("Token = %q, %v; want %q", r.token, r.err, tt.want)
			}
			f.sync()
			if n := len(f.a.waits); n != 0 {
				t.Errorf("%d more Waits sent; want none", n)
			}
			if got := f.b.H.LastUse(); got.IsZero() != tt.wantWait {
				t.Errorf("LastUse = %v; want it set only when the snapshot served", got)
			}
		})
	}
}

// Requests that miss the snapshot at once share one flight: one Wait in
// the actor. A request whose context ends leaves the flight; the last to
// leave ends it, which ends the Wait's context, and the next request
// starts a new flight.
func TestToken_flight(t *testing.T) {
	tests := []struct {
		name    string
		waiters int
		leave   int // how many of them give up before the answer
	}{
		{name: "one waiter", waiters: 1},
		{name: "many waiters share one flight", waiters: 8},
		{name: "some leave", waiters: 4, leave: 3},
		{name: "all leave", waiters: 3, leave: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tokenmanager.Settings{}, true)
			cancels := make([]context.CancelFunc, tt.waiters)
			results := make([]<-chan result, tt.waiters)
			for i := range tt.waiters {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				cancels[i], results[i] = cancel, f.waitToken(ctx, "")
			}
			w := f.a.nextWait(t)
			testutil.Eventually(t, "every request to join the flight", func() bool { return f.waiters() == tt.waiters })

			for i := range tt.leave {
				cancels[i]()
				r := get(t, results[i])
				if !errors.Is(r.err, context.Canceled) || r.token != "" {
					t.Errorf("waiter %d: Token = %q, %v; want context.Canceled", i, r.token, r.err)
				}
				if got, want := f.waiters(), tt.waiters-i-1; want > 0 && got != want {
					t.Errorf("after %d left, %d wait on the flight; want %d", i+1, got, want)
				}
				if ended := w.Ctx.Err() != nil; ended != (i+1 == tt.waiters) {
					t.Errorf("after %d of %d left, the Wait's context ended: %v", i+1, tt.waiters, ended)
				}
			}

			if tt.leave == tt.waiters {
				if got := f.waiters(); got != -1 {
					t.Errorf("the flight has %d waiters after all left; want it gone", got)
				}
				// The next request starts a flight of its own.
				ch := f.waitToken(context.Background(), "")
				if w2 := f.a.answer(t, "tok-2"); w2 == w {
					t.Error("the next request reused the ended Wait")
				}
				if r := get(t, ch); r.err != nil || r.token != "tok-2" {
					t.Errorf("next request: Token = %q, %v; want tok-2", r.token, r.err)
				}
				return
			}
			w.Reply <- &messages.TokenResult{Token: tokenmanager.Token{AccessToken: "tok-1"}, ExpiresAt: f.clk.Now().Add(tokenTTL)}
			for i := tt.leave; i < tt.waiters; i++ {
				if r := get(t, results[i]); r.err != nil || r.token != "tok-1" {
					t.Errorf("waiter %d: Token = %q, %v; want tok-1", i, r.token, r.err)
				}
			}
			f.sync()
			if n := len(f.a.waits); n != 0 {
				t.Errorf("%d more Waits sent for %d requests; want one in all", n, tt.waiters)
			}
			if got := f.waiters(); got != -1 {
				t.Errorf("the flight has %d waiters after its answer; want it gone", got)
			}
		})
	}
}

// A request whose context ends while it waits gets an error that wraps
// both the context's error and the last fetch's.
func TestToken_waitErrorWrapsLastFetch(t *testing.T) {
	f := newFixture(t, tokenmanager.Settings{}, true)
	fetchErr := &tokenmanager.FetchError{Err: testutil.ErrEndpointDown}
	f.b.H.SetLastError(fetchErr)
	ctx, cancel := context.WithCancel(context.Background())
	ch := f.waitToken(ctx, "")
	f.a.nextWait(t)
	cancel()
	r := get(t, ch)
	if !errors.Is(r.err, context.Canceled) || !errors.Is(r.err, testutil.ErrEndpointDown) {
		t.Errorf("Token = %v; want it to wrap context.Canceled and the last fetch's error", r.err)
	}
}

// TokenOrFailure does not wait through failed fetches: it fails at once
// when the last fetch failed, or as soon as the fetch it waits for
// fails, and keeps its place in the flight so the actor keeps retrying.
func TestTokenOrFailure(t *testing.T) {
	tests := []struct {
		name        string
		failedFirst bool // the last fetch had failed before the request
	}{
		{name: "the last fetch failed", failedFirst: true},
		{name: "the fetch it waits for fails"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tokenmanager.Settings{}, true)
			fetchErr := &tokenmanager.FetchError{Err: testutil.ErrEndpointDown}
			if tt.failedFirst {
				f.b.H.SetLastError(fetchErr)
			}
			ch := make(chan result, 1)
			go func() {
				b := f.b
				iss, err := f.c.TokenOrFailure(context.Background(), &b)
				ch <- result{iss.Token.AccessToken, err}
			}()
			w := f.a.nextWait(t)
			if !tt.failedFirst {
				select {
				case r := <-ch:
					t.Fatalf("TokenOrFailure = %q, %v before any fetch failed", r.token, r.err)
				default:
				}
				// The actor's fetch fails: it records the error and
				// publishes the event that wakes fail-fast waiters.
				f.b.H.SetLastError(fetchErr)
				f.b.H.Bus.Publish(messages.TokenRequestFailed{Identity: "tenant", Err: fetchErr})
			}
			r := get(t, ch)
			var fe *tokenmanager.FetchError
			if !errors.As(r.err, &fe) || !errors.Is(r.err, testutil.ErrEndpointDown) {
				t.Errorf("TokenOrFailure = %q, %v; want the fetch's error", r.token, r.err)
			}
			if got := f.waiters(); got != 1 {
				t.Errorf("%d wait on the flight after the failure; want 1 (its place kept for WaitTimeout)", got)
			}
			if w.Ctx.Err() != nil {
				t.Error("the Wait's context ended; the actor would stop retrying")
			}
		})
	}
}

// A waiter whose token actor was passivated resolves the identity again
// and waits on the new actor.
func TestToken_passivatedIdentityResolvedAgain(t *testing.T) {
	f := newFixture(t, tokenmanager.Settings{}, true)
	next, _ := f.spawn(f.c.Root.ActorSystem(), tokenmanager.Settings{WaitTimeout: time.Minute}, false)
	var resolved []string
	f.c.Resolve = func(_ context.Context, identity string) (core.Binding, error) {
		resolved = append(resolved, identity)
		return next, nil
	}
	f.b.H.SetPassivated()
	f.c.Root.StopFuture(f.b.PID).Wait() // its handle's Done closes

	b := f.b
	iss, err := f.c.Token(context.Background(), &b, "")
	if err != nil || iss.Token.AccessToken != "tok-1" {
		t.Fatalf("Token = %q, %v; want tok-1 from the new actor", iss.Token.AccessToken, err)
	}
	if len(resolved) != 1 || resolved[0] != "tenant" {
		t.Errorf("resolved %q; want [tenant]", resolved)
	}
	if b.H != next.H {
		t.Error("the binding was not replaced by the new actor's")
	}
}
