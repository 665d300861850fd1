// Package transport holds the http.RoundTripper that attaches the token
// actor's token to requests.
//
// [New] builds everything: an actor system of its own, the token actor,
// and the RoundTripper. [NewFromActor] attaches a RoundTripper to a token
// actor you spawned in your own system from actor.NewProps.
//
// On a cached token a request costs one atomic load: the actor publishes
// an immutable snapshot after each change and the RoundTripper reads it.
// Only when no valid token is cached does a request message the actor, and
// then it waits, with hundreds of others, for the single fetch the actor
// runs.
//
// Resending a request after a status in Settings.RefreshOnStatus goes
// beyond what a plain http.RoundTripper does; see [RoundTripper.RoundTrip].
package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/actor"
	"github.com/go-tokenmanager/tokenmanager/internal/eventbus"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/internal/secure"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// attachTimeout bounds how long NewFromActor waits for the actor to answer;
// a live token actor answers in microseconds.
const attachTimeout = 5 * time.Second

// closeGrace bounds how long Close lets subscribers work through the
// events already queued for them.
const closeGrace = time.Second

// maxDrain bounds how much of a discarded response is read so its
// connection can be reused; beyond it the connection is closed instead.
const maxDrain = 256 << 10

// Option modifies how a RoundTripper is built.
type Option interface {
	apply(*options)
}

type options struct {
	base http.RoundTripper
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithBase sets the RoundTripper that sends requests. If nil or not given,
// http.DefaultTransport is used.
func WithBase(rt http.RoundTripper) Option {
	return optionFunc(func(o *options) { o.base = rt })
}

// RoundTripper is an http.RoundTripper that carries a token from the
// token actor on every request. It is safe for concurrent use by multiple
// goroutines.
type RoundTripper struct {
	base      http.RoundTripper
	header    string
	formatter tokenmanager.Formatter
	reject    [10]uint64 // bitset of statuses in RefreshOnStatus
	maxTries  int
	withToken bool // AddTokenToLogs
	insecure  bool // AllowInsecureHTTP
	wait      time.Duration

	h      *link.Handle
	root   *proto.RootContext
	pid    *proto.PID
	system *proto.ActorSystem
	owned  bool

	header0 atomic.Pointer[headerValue] // the last formatted token
	mu      sync.Mutex                  // guards flight
	flight  *flight                     // the shared wait in progress, if any
	bus     *eventbus.Bus
	unsubs  []func()
	closed  atomic.Bool
	ended   atomic.Bool // messages.Closed was published
	done    chan struct{}
}

type headerValue struct {
	token, value string
}

// New validates settings and builds a RoundTripper with an actor system
// and token actor of its own, both stopped by Close. Nothing is fetched
// until the first request (or [RoundTripper.Token]) needs a token.
func New(settings tokenmanager.Settings, opts ...Option) (*RoundTripper, error) {
	if err := settings.Validate(); err != nil {
		return nil, err
	}
	// The RoundTripper calls all six callbacks from one goroutine, so they
	// never run concurrently with each other.
	props, err := actor.NewProps(link.WithoutActorCallbacks(settings))
	if err != nil {
		return nil, err
	}
	logger := settings.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	system := proto.NewActorSystem(
		proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger { return logger }),
		proto.WithDeadLetterThrottleInterval(10*time.Millisecond),
	)
	pid := system.Root.Spawn(props)
	t, err := attach(system, pid, settings, true, opts)
	if err != nil {
		system.Root.StopFuture(pid).Wait()
		system.Shutdown()
		return nil, err
	}
	return t, nil
}

// NewFromActor builds a RoundTripper for a token actor spawned in system
// from actor.NewProps. The actor's own settings govern fetching, expiry
// and the actor-side callbacks; settings here govern the request side.
// Passing the very settings the actor was built from is fine (the common
// case).
//
// Used from settings: Header, Formatter, RefreshOnStatus,
// MaxRecoveryTries, AddTokenToLogs, AllowInsecureHTTP, WaitTimeout,
// EventBuffer, OnAuthFail, OnRecoveryTry and OnRecoveryAbort. Ignored
// (the actor's own settings apply): GetCredentials (may be nil here),
// RefreshBuffer, TokenTryThreshold, Clock, RetryBaseDelay, RetryMaxDelay,
// FetchTimeout, Logger, OnTokenRefresh, OnTokenRequestFail and
// OnTokenTryThreshold. The ignored fields are still validated.
//
// Close leaves the system and the actor running. The RoundTripper's own
// events (AuthFailed, RecoveryTried, RecoveryAborted) are also published
// on system.EventStream.
func NewFromActor(system *proto.ActorSystem, pid *proto.PID, settings tokenmanager.Settings, opts ...Option) (*RoundTripper, error) {
	if system == nil || pid == nil {
		return nil, errors.New("tokenmanager: NewFromActor needs an actor system and the token actor's PID")
	}
	check := settings
	if check.GetCredentials == nil {
		check.GetCredentials = func(context.Context) (tokenmanager.Token, error) {
			return tokenmanager.Token{}, nil
		}
	}
	if err := check.Validate(); err != nil {
		return nil, err
	}
	return attach(system, pid, settings, false, opts)
}

func attach(system *proto.ActorSystem, pid *proto.PID, settings tokenmanager.Settings, owned bool, opts []Option) (*RoundTripper, error) {
	s := settings.WithDefaults()
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	if o.base == nil {
		o.base = http.DefaultTransport
	}
	res, err := system.Root.RequestFuture(pid, &link.Attach{}, attachTimeout).Result()
	if err != nil {
		return nil, fmt.Errorf("tokenmanager: actor %v did not answer (%w); is it alive and spawned from actor.NewProps?", pid, err)
	}
	h, ok := res.(*link.Handle)
	if !ok {
		return nil, fmt.Errorf("tokenmanager: actor %v answered %T; was it spawned from actor.NewProps?", pid, res)
	}
	t := &RoundTripper{
		base:      o.base,
		header:    http.CanonicalHeaderKey(s.Header),
		formatter: s.Formatter,
		maxTries:  max(s.MaxRecoveryTries, 0),
		withToken: s.AddTokenToLogs,
		insecure:  s.AllowInsecureHTTP,
		wait:      s.WaitTimeout,
		h:         h,
		root:      system.Root,
		pid:       pid,
		system:    system,
		owned:     owned,
		bus:       eventbus.New(s.EventBuffer),
		done:      make(chan struct{}),
	}
	for _, code := range s.RefreshOnStatus {
		t.reject[code/64] |= 1 << (code % 64)
	}
	t.unsubs = append(t.unsubs, h.Bus.Subscribe(func(ev messages.Event) {
		if _, ok := ev.(messages.Closed); ok {
			t.publishClosed() // once, whether the actor or Close says it first
			return
		}
		t.bus.Publish(ev)
	}))
	side := link.RequestSide
	if owned {
		side = link.BothSides
	}
	if cb := link.Callbacks(s, side); cb != nil {
		t.bus.Subscribe(cb)
	}
	if !owned {
		es := system.EventStream
		t.bus.Subscribe(func(ev messages.Event) {
			if link.IsRequestSide(ev) {
				es.Publish(ev)
			}
		})
	}
	return t, nil
}

// Client returns an *http.Client that sends every request through t.
func (t *RoundTripper) Client() *http.Client {
	return &http.Client{Transport: t}
}

// Subscribe calls fn for every event, the actor's and the RoundTripper's,
// one at a time on a goroutine of its own. fn never blocks the actor or a
// request: each subscriber queues up to Settings.EventBuffer events and
// further ones are dropped (see [RoundTripper.DroppedEvents]). A panic in
// fn is contained. The returned func unsubscribes; it is idempotent.
func (t *RoundTripper) Subscribe(fn func(messages.Event)) (unsubscribe func()) {
	if fn == nil || t.closed.Load() {
		return func() {}
	}
	return t.bus.Subscribe(fn)
}

// DroppedEvents returns how many events were dropped because a subscriber
// (of this RoundTripper or of its actor) had a full queue.
func (t *RoundTripper) DroppedEvents() uint64 {
	return t.bus.Dropped() + t.h.Bus.Dropped()
}

// Token returns a valid token, fetching one if none is cached, and waits
// at most until ctx ends (or Settings.WaitTimeout when ctx has no
// deadline). The returned Token must not be modified.
func (t *RoundTripper) Token(ctx context.Context) (tokenmanager.Token, error) {
	if t.closed.Load() {
		return tokenmanager.Token{}, tokenmanager.ErrClosed
	}
	return t.token(ctx, "")
}

// Close stops what t owns: for a RoundTripper from New, the token actor
// (cancelling its fetch, stopping its timers) and the actor system. Requests
// waiting for a token get tokenmanager.ErrClosed, as does every later call.
// Events already queued are delivered to subscribers for up to a second
// (callbacks included); then subscribers are stopped after their current
// call. A RoundTripper from NewFromActor leaves the actor and system
// running. Close is idempotent: later calls return nil.
func (t *RoundTripper) Close() error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(t.done)
	var err error
	if t.owned {
		if e := t.root.StopFuture(t.pid).Wait(); e != nil {
			err = fmt.Errorf("tokenmanager: stopping the token actor: %w", e)
		}
		t.system.Shutdown()
		t.h.Bus.Shutdown(closeGrace) // the actor's last events reach t.bus
	}
	for _, u := range t.unsubs {
		u()
	}
	t.publishClosed()
	t.bus.Shutdown(closeGrace)
	return err
}

// publishClosed publishes messages.Closed, at most once.
func (t *RoundTripper) publishClosed() {
	if t.ended.CompareAndSwap(false, true) {
		t.bus.Publish(messages.Closed{})
	}
}

// token returns a valid token: the snapshot's when it is fresh and not
// rejected, else the actor's answer.
func (t *RoundTripper) token(ctx context.Context, rejected string) (tokenmanager.Token, error) {
	if snap := t.h.Snapshot(); snap.FreshAt(t.h.Clock.Now()) && snap.Token.AccessToken != rejected {
		return snap.Token, nil
	}
	if err := ctx.Err(); err != nil {
		return tokenmanager.Token{}, fmt.Errorf("tokenmanager: waiting for a token: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.wait)
		defer cancel()
	}
	for {
		f := t.join()
		select {
		case <-f.done:
		case <-ctx.Done():
			t.leave(f)
			return tokenmanager.Token{}, t.waitErr(ctx)
		}
		switch {
		case f.res == nil: // the flight ended without an answer
			if ctx.Err() != nil {
				return tokenmanager.Token{}, t.waitErr(ctx)
			}
			continue
		case f.res.Err != nil:
			return tokenmanager.Token{}, f.res.Err
		case f.res.Token.AccessToken == rejected && rejected != "":
			// The flight was answered before the actor saw this request's
			// invalidation: ask on its own, behind the invalidation.
			return t.waitAlone(ctx)
		case !f.res.ExpiresAt.IsZero() && !t.h.Clock.Now().Before(f.res.ExpiresAt):
			// This request joined a flight answered before the token
			// expired: ask again.
			continue
		}
		return f.res.Token, nil
	}
}

// waitErr is the error of a request whose context ended while it waited.
// It wraps both ctx.Err() and the last fetch's error, if any, so
// errors.Is and errors.As find either.
func (t *RoundTripper) waitErr(ctx context.Context) error {
	if last := t.h.LastError(); last != nil {
		return fmt.Errorf("tokenmanager: waiting for a token (last fetch: %w): %w", last, ctx.Err())
	}
	return fmt.Errorf("tokenmanager: waiting for a token: %w", ctx.Err())
}

// flight is one wait in the actor, shared by every request of this
// RoundTripper that misses the snapshot meanwhile, so that a stampede costs
// the actor one message rather than one per request.
type flight struct {
	done    chan struct{} // closed once res is set
	res     *messages.TokenResult
	cancel  context.CancelFunc
	waiters int // guarded by RoundTripper.mu
}

// join returns the flight in progress, starting one if there is none.
func (t *RoundTripper) join() *flight {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.flight
	if f == nil {
		// A flight lasts while someone waits on it: every waiter has a
		// deadline (its own or WaitTimeout), and the last to leave ends it.
		ctx, cancel := context.WithCancel(context.Background())
		f = &flight{done: make(chan struct{}), cancel: cancel}
		t.flight = f
		go t.fly(ctx, f)
	}
	f.waiters++
	return f
}

// leave is called by a waiter that gives up; the last one out ends the
// flight, so the actor stops fetching for nobody.
func (t *RoundTripper) leave(f *flight) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f.waiters--
	if f.waiters == 0 {
		if t.flight == f {
			t.flight = nil
		}
		f.cancel()
	}
}

func (t *RoundTripper) fly(ctx context.Context, f *flight) {
	defer f.cancel()
	var res *messages.TokenResult
	select {
	case <-t.h.Done:
		res = &messages.TokenResult{Err: tokenmanager.ErrClosed}
	default:
		w := &link.Wait{Ctx: ctx, Reply: make(chan *messages.TokenResult, 1)}
		t.root.Send(t.pid, w)
		select {
		case res = <-w.Reply:
		case <-ctx.Done():
		case <-t.h.Done:
			res = &messages.TokenResult{Err: tokenmanager.ErrClosed}
		case <-t.done:
			res = &messages.TokenResult{Err: tokenmanager.ErrClosed}
		}
	}
	t.mu.Lock()
	if t.flight == f {
		t.flight = nil
	}
	t.mu.Unlock()
	f.res = res
	close(f.done)
}

// waitAlone asks the actor for a token on behalf of this request only.
func (t *RoundTripper) waitAlone(ctx context.Context) (tokenmanager.Token, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the actor forgets the wait once its context ends
	w := &link.Wait{Ctx: ctx, Reply: make(chan *messages.TokenResult, 1)}
	t.root.Send(t.pid, w)
	select {
	case r := <-w.Reply:
		if r.Err != nil {
			return tokenmanager.Token{}, r.Err
		}
		return r.Token, nil
	case <-ctx.Done():
		return tokenmanager.Token{}, t.waitErr(ctx)
	case <-t.h.Done:
		return tokenmanager.Token{}, tokenmanager.ErrClosed
	case <-t.done:
		return tokenmanager.Token{}, tokenmanager.ErrClosed
	}
}

// headerValue formats token, reusing the last result when the token is the
// same, so a cached token costs no allocation.
func (t *RoundTripper) headerValue(token string) (v string, err error) {
	if c := t.header0.Load(); c != nil && c.token == token {
		return c.value, nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = errors.New("tokenmanager: Formatter panicked")
		}
	}()
	v = t.formatter(token)
	t.header0.Store(&headerValue{token: token, value: v})
	return v, nil
}

func (t *RoundTripper) rejects(status int) bool {
	return status >= 0 && status < 640 && t.reject[status/64]&(1<<(status%64)) != 0
}

// RoundTrip sends req with the token in Settings.Header. It follows the
// net/http contract: it does not modify req (it sends a clone), it always
// closes req.Body, and it returns err == nil whenever it obtained a
// response, whatever its status.
//
// Beyond a plain RoundTripper, it recovers from rejected tokens: when the
// response status is in Settings.RefreshOnStatus, it invalidates the token
// the request carried, drains and closes that response, waits for a fresh
// token and resends the request, at most Settings.MaxRecoveryTries times
// for this request. It then gives back the last response, body unread. A
// request whose body cannot be replayed (non-nil Body without GetBody; see
// http.NewRequest) is never resent: its first rejected response is given
// back. Requests built by http.NewRequest from a *bytes.Buffer,
// *bytes.Reader or *strings.Reader can always be replayed.
//
// The token is attached only to the original request's host and its
// subdomains: when an http.Client follows a redirect to another host, that
// request goes out without it. It travels only over https or to a
// loopback host: any other request that would carry it fails with
// tokenmanager.ErrInsecureTransport, unsent, unless
// Settings.AllowInsecureHTTP is set.
//
// When no token can be had, RoundTrip returns an error wrapping the
// failed fetch (a *tokenmanager.FetchError, which wraps the provider's
// error) and, when the request's context ended first, ctx.Err(). A
// permanent failure (tokenmanager.IsPermanent) fails the request at once.
func (t *RoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.closed.Load() {
		closeBody(req)
		return nil, tokenmanager.ErrClosed
	}
	if !sameSite(req) {
		return t.base.RoundTrip(req)
	}
	if !t.insecure && !secure.Allowed(req.URL) {
		closeBody(req)
		return nil, fmt.Errorf("%w to %s: use https, or set Settings.AllowInsecureHTTP where something else protects the traffic",
			tokenmanager.ErrInsecureTransport, req.URL.Host)
	}
	var access string
	if snap := t.h.Snapshot(); snap.FreshAt(t.h.Clock.Now()) {
		access = snap.Token.AccessToken // the fast path: no message, no lock
	} else {
		tok, err := t.token(req.Context(), "")
		if err != nil {
			closeBody(req)
			return nil, err
		}
		access = tok.AccessToken
	}
	value, err := t.headerValue(access)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	resp, err := t.base.RoundTrip(t.withHeader(req, value, req.Body))
	if err != nil || !t.rejects(resp.StatusCode) {
		t.served(err)
		return resp, err
	}
	return t.recover(req, resp, access)
}

// served tells the actor a token was accepted, when it is counting
// rejected new tokens (see link.Served); otherwise it costs one atomic
// load.
func (t *RoundTripper) served(err error) {
	if err == nil && t.h.Streak() {
		t.root.Send(t.pid, &link.Served{})
	}
}

// withHeader returns a clone of req carrying the token's header value and
// body.
func (t *RoundTripper) withHeader(req *http.Request, value string, body io.ReadCloser) *http.Request {
	r2 := req.Clone(req.Context())
	if r2.Header == nil {
		r2.Header = make(http.Header, 1)
	}
	r2.Header.Set(t.header, value)
	r2.Body = body
	return r2
}

// recover handles a rejected response: see RoundTrip.
func (t *RoundTripper) recover(req *http.Request, resp *http.Response, used string) (*http.Response, error) {
	ctx := req.Context()
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	for attempt := 1; ; attempt++ {
		t.bus.Publish(messages.AuthFailed{
			Status:      resp.StatusCode,
			Host:        req.URL.Host,
			Fingerprint: tokenmanager.Fingerprint(used),
			Message:     t.withTokenf(used, "request to %s got status %d", req.URL.Host, resp.StatusCode),
		})
		if attempt == 1 && t.h.Holding(t.h.Clock.Now()) {
			// New tokens keep being rejected: give the response back and
			// keep the token, so the token endpoint is spared (see
			// actor.holdIfRejectedTooOften).
			t.bus.Publish(messages.RecoveryAborted{
				Status:  resp.StatusCode,
				Message: fmt.Sprintf("recovery aborted for request to %s with status %d: new tokens keep being rejected, so the manager is backing off", req.URL.Host, resp.StatusCode),
			})
			return resp, nil
		}
		// Withdraw the token from the fast path at once, so no request,
		// this one's caller's next included, sends it again; then let the
		// actor drop it (if it is still the cached one).
		t.h.Drop(used)
		if attempt == 1 {
			t.root.Send(t.pid, messages.Invalidate{AccessToken: used})
		} else {
			// A token fetched for this recovery, rejected on first use.
			t.root.Send(t.pid, &link.Rejected{AccessToken: used, MaxTries: t.maxTries})
		}
		var why string
		switch {
		case !replayable:
			why = "its body cannot be replayed (no GetBody)"
		case attempt > t.maxTries && t.maxTries == 0:
			why = "no recovery tries are allowed"
		case attempt > t.maxTries:
			why = fmt.Sprintf("all %d recovery tries were used", t.maxTries)
		}
		var value string
		var body io.ReadCloser
		if why == "" {
			tok, err := t.token(ctx, used)
			if err == nil {
				value, err = t.headerValue(tok.AccessToken)
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
			t.bus.Publish(messages.RecoveryAborted{
				Attempts: attempt - 1,
				Status:   resp.StatusCode,
				Message:  fmt.Sprintf("recovery aborted for request to %s with status %d: %s", req.URL.Host, resp.StatusCode, why),
			})
			return resp, nil
		}
		drainClose(resp.Body)
		t.bus.Publish(messages.RecoveryTried{
			Attempt:     attempt,
			Fingerprint: tokenmanager.Fingerprint(used),
			Message:     t.withTokenf(used, "resending request to %s with a fresh token (recovery try %d of %d)", req.URL.Host, attempt, t.maxTries),
		})
		var err error
		resp, err = t.base.RoundTrip(t.withHeader(req, value, body))
		if err != nil || !t.rejects(resp.StatusCode) {
			t.served(err)
			return resp, err
		}
	}
}

// withTokenf formats a message and appends token when AddTokenToLogs is set.
func (t *RoundTripper) withTokenf(token, format string, args ...any) string {
	msg := fmt.Sprintf(format, args...)
	if t.withToken {
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

// sameSite reports whether req may carry the token: it is not a redirect,
// or its host is the original request's host or a subdomain of it. As
// net/http does for its own sensitive headers, hosts compare by hostname
// (port ignored) and an IP address matches only itself.
//
// Like net/http, once a redirect chain has left the original host, the
// token stays off for the rest of the chain, also if it comes back.
func sameSite(req *http.Request) bool {
	if req.Response == nil {
		return true // not a redirect
	}
	chain := []*http.Request{req}
	for r := req; r.Response != nil; r = r.Response.Request {
		if r.Response.Request == nil {
			return false // a redirect from we cannot tell where: no token
		}
		chain = append(chain, r.Response.Request)
	}
	orig := strings.ToLower(chain[len(chain)-1].URL.Hostname())
	for _, r := range chain[:len(chain)-1] {
		if !isDomainOrSubdomain(strings.ToLower(r.URL.Hostname()), orig) {
			return false
		}
	}
	return true
}

func isDomainOrSubdomain(sub, parent string) bool {
	if sub == parent {
		return true
	}
	if parent == "" || net.ParseIP(parent) != nil || net.ParseIP(sub) != nil || strings.ContainsAny(sub, ":%") {
		return false
	}
	return strings.HasSuffix(sub, parent) && len(sub) > len(parent) && sub[len(sub)-len(parent)-1] == '.'
}
