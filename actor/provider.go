package actor

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
)

// The provider call, run on a goroutine of its own, and the backoff
// between failed calls.

// maxProviderCalls bounds provider calls running at once: the current
// one and one abandoned after FetchTimeout that has not returned yet.
const maxProviderCalls = 2

// errProviderStuck fails a fetch while earlier provider calls, abandoned
// after FetchTimeout, still have not returned; the usual backoff follows.
var errProviderStuck = errors.New("tokenmanager: earlier provider calls ignored their context and have not returned")

// callProvider calls p on the calling goroutine, containing a panic, and
// hands its outcome to report, once: when p returns, or when ctx ends
// first, even if p does not return, so that a provider that ignores its
// context cannot stall the host (the goroutine is abandoned and ends when
// p returns; report is then called from another goroutine). calls counts
// the calls running at once, abandoned ones included.
func callProvider(ctx context.Context, calls *atomic.Int32, p tokenmanager.TokenProvider, report func(tokenmanager.Token, error)) {
	if calls.Add(1) > maxProviderCalls {
		calls.Add(-1)
		report(tokenmanager.Token{}, errProviderStuck)
		return
	}
	c := &providerCall{report: report}
	var stop func() bool
	if deadline, ok := ctx.Deadline(); ok {
		// Cheaper than context.AfterFunc. Only the host cancels the
		// context otherwise, as it stops, when no outcome matters: it
		// is reported when the call returns, or at the deadline.
		t := time.AfterFunc(time.Until(deadline), func() { c.abandon(ctx) })
		stop = t.Stop
	} else {
		stop = context.AfterFunc(ctx, func() { c.abandon(ctx) })
	}
	tok, err := safeCall(ctx, p)
	calls.Add(-1)
	stop()
	c.returned(tok, err)
}

// providerCall is a provider call whose outcome is reported once: by the
// call returning, or by its context ending first.
type providerCall struct {
	report func(tokenmanager.Token, error)

	mu       sync.Mutex
	reported bool
	back     chan struct{} // made while abandon waits for the call; closed when it returns
}

// returned reports the provider's outcome, unless the call was abandoned.
func (c *providerCall) returned(tok tokenmanager.Token, err error) {
	c.mu.Lock()
	if c.reported {
		c.mu.Unlock()
		return
	}
	c.reported = true
	if c.back != nil {
		close(c.back)
	}
	c.mu.Unlock()
	c.report(tok, err)
}

// abandon runs when ctx ends before the provider returns: it reports that
// the provider did not return. A provider that honours its context
// returns its own error right after the timeout: it is given a moment, so
// that error (not "did not return") is what everyone sees.
func (c *providerCall) abandon(ctx context.Context) {
	<-ctx.Done() // at once, or as the context's own timer fires
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		c.mu.Lock()
		if c.reported {
			c.mu.Unlock()
			return
		}
		c.back = make(chan struct{})
		back := c.back
		c.mu.Unlock()
		grace := time.NewTimer(providerGrace)
		defer grace.Stop()
		select {
		case <-back: // it returned and reported
			return
		case <-grace.C:
		}
	}
	c.mu.Lock()
	if c.reported {
		c.mu.Unlock()
		return
	}
	c.reported = true
	c.mu.Unlock()
	c.report(tokenmanager.Token{}, fmt.Errorf("tokenmanager: provider did not return within FetchTimeout: %w", ctx.Err()))
}

// providerGrace is how long, in real time, a provider whose fetch timed
// out may take to return its own error before it is abandoned.
const providerGrace = 100 * time.Millisecond

// safeCall calls p, turning a panic into a *tokenmanager.PanicError that
// carries the stack trace.
func safeCall(ctx context.Context, p tokenmanager.TokenProvider) (tok tokenmanager.Token, err error) {
	defer func() {
		if r := recover(); r != nil {
			tok, err = tokenmanager.Token{}, &tokenmanager.PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return p(ctx)
}

// retryAfter returns the provider's hint for the next fetch, or zero. The
// hint is user code: a panic in it counts as no hint.
func retryAfter(err error) (d time.Duration) {
	defer func() {
		if recover() != nil {
			d = 0
		}
	}()
	var hint interface{ RetryAfter() time.Duration }
	if errors.As(err, &hint) {
		return hint.RetryAfter()
	}
	return 0
}
