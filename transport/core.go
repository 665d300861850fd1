package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"

	proto "github.com/asynkron/protoactor-go/actor"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/eventbus"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/internal/secure"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// core is the request side shared by every facade: it attaches a token,
// waits for one on a miss, and recovers from rejected tokens. One core
// serves one identity (RoundTripper) or many (MultiRoundTripper); what it
// knows of each identity comes in a binding. This is the only copy of
// the recovery logic.
type core struct {
	base   http.RoundTripper
	root   *proto.RootContext
	bus    *eventbus.Bus // the request side's events
	closed atomic.Bool
	done   chan struct{} // closed by Close

	// resolve finds an identity's binding again once its token actor was
	// passivated; nil when the core serves a token actor of its own.
	resolve func(ctx context.Context, identity string) (binding, error)
}

// binding is what the core needs of one identity: its token actor's
// handle and address, its request settings, and its request state.
type binding struct {
	h   *link.Handle
	pid *proto.PID
	req *link.Request
	st  *link.RequestState
}

// errPassivated ends a wait whose token actor was stopped for being idle;
// the core asks the owner again.
var errPassivated = errors.New("tokenmanager: identity passivated")

// roundTrip sends req with b's token: see RoundTripper.RoundTrip.
func (c *core) roundTrip(b binding, req *http.Request) (*http.Response, error) {
	if c.closed.Load() {
		closeBody(req)
		return nil, tokenmanager.ErrClosed
	}
	if !sameSite(req) {
		return c.base.RoundTrip(req)
	}
	if !b.req.Insecure && !secure.Allowed(req.URL) {
		closeBody(req)
		return nil, fmt.Errorf("%w to %s: use https, or set Settings.AllowInsecureHTTP where something else protects the traffic",
			tokenmanager.ErrInsecureTransport, req.URL.Host)
	}
	var access, value string
	if snap := b.h.Snapshot(); c.fresh(b, snap) {
		// The fast path: no message, no lock; under an owner, the header
		// value comes made.
		access = snap.Token.AccessToken
		if b.req == b.h.Request {
			value = snap.Header
		}
	} else {
		tok, err := c.token(req.Context(), &b, "")
		if err != nil {
			closeBody(req)
			return nil, err
		}
		access = tok.AccessToken
	}
	if value == "" {
		var err error
		if value, err = c.headerValue(b, access); err != nil {
			closeBody(req)
			return nil, err
		}
	}
	resp, err := c.base.RoundTrip(withHeader(req, b.req.Header, value, req.Body))
	if err != nil || !b.req.Rejects(resp.StatusCode) {
		c.served(b, err)
		return resp, err
	}
	return c.recover(b, req, resp, access)
}

// fresh reports whether snap holds a valid token, and if so counts it as
// used: it records the use (for passivation) and, past the snapshot's
// refresh time, asks an actor that refreshes on use for the refresh.
func (c *core) fresh(b binding, snap *link.Snapshot) bool {
	now := b.h.Clock.Now()
	if !snap.FreshAt(now) {
		return false
	}
	b.h.Touch(now)
	if snap.AskRefresh(now) {
		c.root.Send(b.pid, &link.RefreshNow{Gen: snap.Gen})
	}
	return true
}

// served tells the actor a token was accepted, when it is counting
// rejected new tokens (see link.Served); otherwise it costs one atomic
// load.
func (c *core) served(b binding, err error) {
	if err == nil && b.h.Streak() {
		c.root.Send(b.pid, &link.Served{})
	}
}

// token returns a valid token: the snapshot's when it is fresh and not
// rejected, else the actor's answer. When the identity's actor was
// passivated meanwhile, b is resolved again.
func (c *core) token(ctx context.Context, b *binding, rejected string) (tokenmanager.Token, error) {
	if snap := b.h.Snapshot(); snap != nil && snap.Token.AccessToken != rejected && c.fresh(*b, snap) {
		return snap.Token, nil
	}
	if err := ctx.Err(); err != nil {
		return tokenmanager.Token{}, fmt.Errorf("tokenmanager: waiting for a token: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.req.Wait)
		defer cancel()
	}
	for {
		f := c.join(*b)
		select {
		case <-f.Done:
		case <-ctx.Done():
			c.leave(*b, f)
			return tokenmanager.Token{}, waitErr(ctx, b.h)
		}
		var tok tokenmanager.Token
		var err error
		switch {
		case f.Res == nil: // the flight ended without an answer
			if ctx.Err() != nil {
				return tokenmanager.Token{}, waitErr(ctx, b.h)
			}
			continue
		case f.Res.Err != nil:
			err = f.Res.Err
		case f.Res.Token.AccessToken == rejected && rejected != "":
			// The flight was answered before the actor saw this request's
			// invalidation: ask on its own, behind the invalidation.
			tok, err = c.waitAlone(ctx, *b)
		case !f.Res.ExpiresAt.IsZero() && !b.h.Clock.Now().Before(f.Res.ExpiresAt):
			// This request joined a flight answered before the token
			// expired: ask again.
			continue
		default:
			tok = f.Res.Token
		}
		if errors.Is(err, errPassivated) {
			if err = c.rebind(ctx, b); err == nil {
				continue
			}
		}
		return tok, err
	}
}

// rebind resolves b's identity again after its actor was passivated.
func (c *core) rebind(ctx context.Context, b *binding) error {
	if c.resolve == nil {
		return tokenmanager.ErrClosed
	}
	nb, err := c.resolve(ctx, b.h.Identity)
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
func (c *core) join(b binding) *link.Flight {
	b.st.Mu.Lock()
	defer b.st.Mu.Unlock()
	f := b.st.Flight
	if f == nil {
		// A flight lasts while someone waits on it: every waiter has a
		// deadline (its own or WaitTimeout), and the last to leave ends it.
		ctx, cancel := context.WithCancel(context.Background())
		f = &link.Flight{Done: make(chan struct{}), Cancel: cancel}
		b.st.Flight = f
		go c.fly(ctx, b, f)
	}
	f.Waiters++
	return f
}

// leave is called by a waiter that gives up; the last one out ends the
// flight, so the actor stops fetching for nobody.
func (c *core) leave(b binding, f *link.Flight) {
	b.st.Mu.Lock()
	defer b.st.Mu.Unlock()
	f.Waiters--
	if f.Waiters == 0 {
		if b.st.Flight == f {
			b.st.Flight = nil
		}
		f.Cancel()
	}
}

func (c *core) fly(ctx context.Context, b binding, f *link.Flight) {
	defer f.Cancel()
	res := c.ask(ctx, b)
	b.st.Mu.Lock()
	if b.st.Flight == f {
		b.st.Flight = nil
	}
	b.st.Mu.Unlock()
	f.Res = res
	close(f.Done)
}

// ask sends b's actor a wait and returns its answer; nil when ctx ended
// first.
func (c *core) ask(ctx context.Context, b binding) *messages.TokenResult {
	select {
	case <-b.h.Done:
		return c.stopped(b)
	default:
	}
	w := &link.Wait{Ctx: ctx, Reply: make(chan *messages.TokenResult, 1)}
	c.root.Send(b.pid, w)
	select {
	case res := <-w.Reply:
		return res
	case <-ctx.Done():
		return nil
	case <-b.h.Done:
		return c.stopped(b)
	case <-c.done:
		return &messages.TokenResult{Err: tokenmanager.ErrClosed}
	}
}

// stopped is the answer when b's actor has stopped: passivated, so ask
// the owner again, or closed.
func (c *core) stopped(b binding) *messages.TokenResult {
	if b.h.Passivated() {
		return &messages.TokenResult{Err: errPassivated}
	}
	return &messages.TokenResult{Err: tokenmanager.ErrClosed}
}

// waitAlone asks the actor for a token on behalf of this request only.
func (c *core) waitAlone(ctx context.Context, b binding) (tokenmanager.Token, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the actor forgets the wait once its context ends
	res := c.ask(ctx, b)
	switch {
	case res == nil:
		return tokenmanager.Token{}, waitErr(ctx, b.h)
	case res.Err != nil:
		return tokenmanager.Token{}, res.Err
	}
	return res.Token, nil
}

// headerValue formats token, reusing the last result when the token is the
// same, so a cached token costs no allocation.
func (c *core) headerValue(b binding, token string) (v string, err error) {
	if hv := b.st.Header.Load(); hv != nil && hv.Token == token {
		return hv.Value, nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = errors.New("tokenmanager: Formatter panicked")
		}
	}()
	v = b.req.Formatter(token)
	b.st.Header.Store(&link.HeaderValue{Token: token, Value: v})
	return v, nil
}

// withHeader returns a clone of req carrying the token's header value and
// body.
func withHeader(req *http.Request, header, value string, body io.ReadCloser) *http.Request {
	r2 := req.Clone(req.Context())
	if r2.Header == nil {
		r2.Header = make(http.Header, 1)
	}
	r2.Header.Set(header, value)
	r2.Body = body
	return r2
}

// recover handles a rejected response: see RoundTripper.RoundTrip.
func (c *core) recover(b binding, req *http.Request, resp *http.Response, used string) (*http.Response, error) {
	ctx := req.Context()
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	id, maxTries := b.h.Identity, b.req.MaxTries
	for attempt := 1; ; attempt++ {
		c.bus.Publish(messages.AuthFailed{
			Identity:    id,
			Status:      resp.StatusCode,
			Host:        req.URL.Host,
			Fingerprint: tokenmanager.Fingerprint(used),
			Message:     withTokenf(b, used, "request to %s got status %d", req.URL.Host, resp.StatusCode),
		})
		if attempt == 1 && b.h.Holding(b.h.Clock.Now()) {
			// New tokens keep being rejected: give the response back and
			// keep the token, so the token endpoint is spared (see
			// actor.holdIfRejectedTooOften).
			c.bus.Publish(messages.RecoveryAborted{
				Identity: id,
				Status:   resp.StatusCode,
				Message:  fmt.Sprintf("recovery aborted for request to %s with status %d: new tokens keep being rejected, so the manager is backing off", req.URL.Host, resp.StatusCode),
			})
			return resp, nil
		}
		// Withdraw the token from the fast path at once, so no request,
		// this one's caller's next included, sends it again; then let the
		// actor drop it (if it is still the cached one).
		b.h.Drop(used)
		if attempt == 1 {
			c.root.Send(b.pid, messages.Invalidate{AccessToken: used})
		} else {
			// A token fetched for this recovery, rejected on first use.
			c.root.Send(b.pid, &link.Rejected{AccessToken: used, MaxTries: maxTries})
		}
		var why string
		switch {
		case !replayable:
			why = "its body cannot be replayed (no GetBody)"
		case attempt > maxTries && maxTries == 0:
			why = "no recovery tries are allowed"
		case attempt > maxTries:
			why = fmt.Sprintf("all %d recovery tries were used", maxTries)
		}
		var value string
		var body io.ReadCloser
		if why == "" {
			tok, err := c.token(ctx, &b, used)
			if err == nil {
				value, err = c.headerValue(b, tok.AccessToken)
			}
			if err == nil && req.Body != nil && req.Body != http.NoBody {
				body, err = req.GetBody()
			}
			if err != nil {
				// Keep the response we have rather than trading it for
				// an error: RoundTrip obtained a response.
				why = fmt.Sprintf("no fresh token or body: %v", err)
			} else {
				used = tok.AccessToken
			}
		}
		if why != "" {
			c.bus.Publish(messages.RecoveryAborted{
				Identity: id,
				Attempts: attempt - 1,
				Status:   resp.StatusCode,
				Message:  fmt.Sprintf("recovery aborted for request to %s with status %d: %s", req.URL.Host, resp.StatusCode, why),
			})
			return resp, nil
		}
		drainClose(resp.Body)
		c.bus.Publish(messages.RecoveryTried{
			Identity:    id,
			Attempt:     attempt,
			Fingerprint: tokenmanager.Fingerprint(used),
			Message:     withTokenf(b, used, "resending request to %s with a fresh token (recovery try %d of %d)", req.URL.Host, attempt, maxTries),
		})
		var err error
		resp, err = c.base.RoundTrip(withHeader(req, b.req.Header, value, body))
		if err != nil || !b.req.Rejects(resp.StatusCode) {
			c.served(b, err)
			return resp, err
		}
	}
}

// withTokenf formats a message and appends token when AddTokenToLogs is set.
func withTokenf(b binding, token, format string, args ...any) string {
	msg := fmt.Sprintf(format, args...)
	if b.req.WithToken {
		msg += ": " + token
	}
	return msg
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// drainClose reads a little of body so its connection can be reused, then
// closes it.
func drainClose(body io.ReadCloser) {
	if body == nil {
		return
	}
	io.Copy(io.Discard, io.LimitReader(body, maxDrain))
	body.Close()
}
