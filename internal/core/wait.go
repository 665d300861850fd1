package core

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/internal/request"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// Token returns a valid token of b: its First, once, when it is still
// valid and not rejected; the snapshot's when it is fresh and
// not rejected, else the actor's answer, waiting at most until ctx ends
// (or b's WaitTimeout when ctx has no deadline). When b's actor was
// passivated meanwhile, b is resolved again.
func (c *Core) Token(ctx context.Context, b *Binding, rejected string) (Issued, error) {
	return c.token(ctx, b, rejected, false)
}

// TokenOrFailure is Token, except that it does not wait through failed
// fetches: once a fetch has failed (and until one succeeds) it returns
// that fetch's *tokenmanager.FetchError at once, also when the fetch it
// waits for fails. Its wait is kept for b's WaitTimeout all the same, so
// the actor keeps retrying with backoff while such calls come.
//
// A failed fetch wakes it through the actor's events: were the
// TokenRequestFailed event dropped, it would wait as Token does.
func (c *Core) TokenOrFailure(ctx context.Context, b *Binding) (Issued, error) {
	return c.token(ctx, b, "", true)
}

// AttachOrFailure is Attach over TokenOrFailure.
func (c *Core) AttachOrFailure(ctx context.Context, b *Binding) (access, value string, err error) {
	return c.attach(ctx, b, true)
}

func (c *Core) token(ctx context.Context, b *Binding, rejected string, failFast bool) (Issued, error) {
	if f := b.First; f != nil {
		b.First = nil
		if f.Token.AccessToken != rejected && (f.ExpiresAt.IsZero() || b.H.Clock.Now().Before(f.ExpiresAt)) {
			return *f, nil
		}
	}
	if snap := b.H.Snapshot(); snap != nil && snap.Token.AccessToken != rejected && c.Fresh(*b, snap) {
		return Issued{snap.Token, snap.ExpiresAt}, nil
	}
	if err := ctx.Err(); err != nil {
		return Issued{}, fmt.Errorf("tokenmanager: waiting for a token: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.Req.Wait)
		defer cancel()
	}
	for {
		f := c.join(*b)
		if failFast {
			if err := c.awaitOrFailure(ctx, *b, f); err != nil {
				return Issued{}, err
			}
		} else {
			select {
			case <-f.Done:
			case <-ctx.Done():
				c.leave(*b, f)
				return Issued{}, waitErr(ctx, b.H)
			}
		}
		var res *messages.TokenResult
		var err error
		switch {
		case f.Res == nil: // the flight ended without an answer
			if ctx.Err() != nil {
				return Issued{}, waitErr(ctx, b.H)
			}
			continue
		case f.Res.Err != nil:
			err = f.Res.Err
		case f.Res.Token.AccessToken == rejected && rejected != "":
			// The flight was answered before the actor saw this request's
			// invalidation: ask on its own, behind the invalidation.
			res, err = c.waitAlone(ctx, *b)
		case !f.Res.ExpiresAt.IsZero() && !b.H.Clock.Now().Before(f.Res.ExpiresAt):
			// This request joined a flight answered before the token
			// expired: ask again.
			continue
		default:
			res = f.Res
		}
		if errors.Is(err, ErrPassivated) {
			if err = c.rebind(ctx, b); err == nil {
				continue
			}
		}
		if err != nil {
			return Issued{}, err
		}
		return Issued{res.Token, res.ExpiresAt}, nil
	}
}

// awaitOrFailure waits for f, which the caller joined, until it is done
// (nil), ctx ends, or b's last fetch has failed: then it hands its place
// in f to a timer (see keep), so the actor keeps retrying, and returns
// the failure.
func (c *Core) awaitOrFailure(ctx context.Context, b Binding, f *request.Flight) error {
	for {
		failed := *c.failed.Load() // before LastError: no failure is missed
		if last := b.H.LastError(); last != nil {
			c.keep(b, f)
			return fmt.Errorf("tokenmanager: the last fetch failed and is being retried with backoff: %w", last)
		}
		select {
		case <-f.Done:
			return nil
		case <-failed:
		case <-ctx.Done():
			c.leave(b, f)
			return waitErr(ctx, b.H)
		}
	}
}

// keep hands the caller's place in f to a timer of b's WaitTimeout, so
// that the actor keeps retrying a failed fetch while fail-fast callers come
// and go. The first caller's place is kept; the others leave at once: one
// timer per flight, however many calls fail meanwhile. When it fires the
// flight ends, and the next caller starts a new one with a timer of its
// own, so retries go on while calls come and stop at most WaitTimeout
// after the last one.
func (c *Core) keep(b Binding, f *request.Flight) {
	b.St.Mu.Lock()
	first := !f.Kept
	f.Kept = true
	b.St.Mu.Unlock()
	if first {
		time.AfterFunc(b.Req.Wait, func() { c.leave(b, f) })
		return
	}
	c.leave(b, f)
}

// rebind resolves b's identity again after its actor was passivated.
func (c *Core) rebind(ctx context.Context, b *Binding) error {
	if c.Resolve == nil {
		return tokenmanager.ErrClosed
	}
	nb, err := c.Resolve(ctx, b.H.Identity)
	if err != nil {
		return err
	}
	*b = nb
	return nil
}

// waitErr is the error of a request whose context ended while it waited.
// It wraps both ctx.Err() and the last fetch's error, if any, so
// errors.Is and errors.As find either.
func waitErr(ctx context.Context, h *link.Handle) error {
	if last := h.LastError(); last != nil {
		return fmt.Errorf("tokenmanager: waiting for a token (last fetch: %w): %w", last, ctx.Err())
	}
	return fmt.Errorf("tokenmanager: waiting for a token: %w", ctx.Err())
}

// join returns b's flight in progress, starting one if there is none.
func (c *Core) join(b Binding) *request.Flight {
	b.St.Mu.Lock()
	defer b.St.Mu.Unlock()
	f := b.St.Flight
	if f == nil {
		// A flight lasts while someone waits on it: every waiter has a
		// deadline (its own or WaitTimeout), and the last to leave ends it.
		ctx, cancel := context.WithCancel(context.Background())
		f = &request.Flight{Done: make(chan struct{}), Cancel: cancel}
		b.St.Flight = f
		go c.fly(ctx, b, f)
	}
	f.Waiters++
	return f
}

// leave is called by a waiter that gives up; the last one out ends the
// flight: its wait's context ends, so the actor forgets the wait, and
// once the fetch in progress ends it retries a failure only if someone
// else still needs a token. That fetch itself is not cancelled: it runs
// on, bounded by FetchTimeout, and a token it brings is cached for the
// next request. (Cancelling it would give callers whose deadline is
// shorter than the token endpoint's latency a new fetch per request and
// never a token.)
func (c *Core) leave(b Binding, f *request.Flight) {
	b.St.Mu.Lock()
	defer b.St.Mu.Unlock()
	f.Waiters--
	if f.Waiters == 0 {
		if b.St.Flight == f {
			b.St.Flight = nil
		}
		f.Cancel()
	}
}

func (c *Core) fly(ctx context.Context, b Binding, f *request.Flight) {
	defer f.Cancel()
	res := c.ask(ctx, b)
	b.St.Mu.Lock()
	if b.St.Flight == f {
		b.St.Flight = nil
	}
	b.St.Mu.Unlock()
	f.Res = res
	close(f.Done)
}

// ask sends b's actor a wait and returns its answer; nil when ctx ended
// first.
func (c *Core) ask(ctx context.Context, b Binding) *messages.TokenResult {
	select {
	case <-b.H.Done:
		return stopped(b)
	default:
	}
	w := &protocol.Wait{H: b.H, Ctx: ctx, Reply: make(chan *messages.TokenResult, 1)}
	c.Root.Send(b.PID, w)
	select {
	case res := <-w.Reply:
		return res
	case <-ctx.Done():
		return nil
	case <-b.H.Done:
		return stopped(b)
	case <-c.done:
		return &messages.TokenResult{Err: tokenmanager.ErrClosed}
	}
}

// stopped is the answer when b's actor has stopped: passivated, so ask
// the owner again, or closed.
func stopped(b Binding) *messages.TokenResult {
	if b.H.Passivated() {
		return &messages.TokenResult{Err: ErrPassivated}
	}
	return &messages.TokenResult{Err: tokenmanager.ErrClosed}
}

// waitAlone asks the actor for a token on behalf of this request only.
func (c *Core) waitAlone(ctx context.Context, b Binding) (*messages.TokenResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the actor forgets the wait once its context ends
	res := c.ask(ctx, b)
	switch {
	case res == nil:
		return nil, waitErr(ctx, b.H)
	case res.Err != nil:
		return nil, res.Err
	}
	return res, nil
}
