package actor

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
)

// The provider call, run on a goroutine of its own, and the backoff
// between failed calls.

type fetched struct {
	tok tokenmanager.Token
	err error
}

// maxProviderCalls bounds provider calls running at once: the current
// one and one abandoned after FetchTimeout that has not returned yet.
const maxProviderCalls = 2

// errProviderStuck fails a fetch while earlier provider calls, abandoned
// after FetchTimeout, still have not returned; the usual backoff follows.
var errProviderStuck = errors.New("tokenmanager: earlier provider calls ignored their context and have not returned")

// callProvider calls p, containing a panic, and gives up when ctx ends
// even if p does not return: a provider that ignores its context cannot
// stall the actor (its goroutine is abandoned and ends when p returns).
// calls counts the calls running at once, abandoned ones included.
func callProvider(ctx context.Context, calls *atomic.Int32, p tokenmanager.TokenProvider) (tokenmanager.Token, error) {
	if calls.Add(1) > maxProviderCalls {
		calls.Add(-1)
		return tokenmanager.Token{}, errProviderStuck
	}
	out := make(chan fetched, 1)
	go func() {
		defer calls.Add(-1)
		tok, err := safeCall(ctx, p)
		out <- fetched{tok, err}
	}()
	select {
	case f := <-out:
		return f.tok, f.err
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// A provider that honours its context returns its own error
			// right after the timeout: give it a moment, so that error
			// (not "did not return") is what everyone sees.
			grace := time.NewTimer(providerGrace)
			defer grace.Stop()
			select {
			case f := <-out:
				return f.tok, f.err
			case <-grace.C:
			}
		}
		select {
		case f := <-out: // it returned just in time
			return f.tok, f.err
		default:
		}
		return tokenmanager.Token{}, fmt.Errorf("tokenmanager: provider did not return within FetchTimeout: %w", ctx.Err())
	}
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
