// Package actor holds the token actor: the one owner of a token's state.
//
// Spawn it from [NewProps] in any protoactor ActorSystem and talk to it
// with the messages package: [messages.Get] (reply *messages.TokenResult),
// [messages.Invalidate] and [messages.Refreshed]. transport.New spawns one
// for you; transport.NewFromActor attaches a RoundTripper to one you
// spawned.
//
// The actor never blocks its mailbox: the provider runs on a goroutine of
// its own whose outcome comes back as a message, timers (on
// Settings.Clock) send messages too, and events go to bounded
// per-subscriber queues. After every change it publishes an immutable
// snapshot that RoundTrippers read without a message, so a cached token
// costs a request one atomic load.
//
// Its events (TokenRefreshed, TokenRequestFailed,
// TokenTryThresholdReached) are also published on the actor system's
// EventStream, from a goroutine of their own so a slow EventStream
// subscriber cannot stall the actor; subscribe there with
// system.EventStream.SubscribeWithPredicate to receive them as an actor
// would.
package actor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// NewProps validates settings and returns props for a token actor. Each
// actor spawned from them owns its own token; spawn one per identity.
//
// Stop the actor with PoisonFuture to have every queued [messages.Get]
// answered (with tokenmanager.ErrClosed once it stops); Stop drops queued
// messages, so their futures time out.
// The settings' fetching side governs the actor: GetCredentials,
// RefreshBuffer, TokenTryThreshold, Clock, the retry and fetch timeouts,
// AddTokenToLogs for its event messages, and the OnTokenRefresh,
// OnTokenRequestFail and OnTokenTryThreshold callbacks.
func NewProps(settings tokenmanager.Settings) (*proto.Props, error) {
	if err := settings.Validate(); err != nil {
		return nil, err
	}
	s := settings.WithDefaults()
	return proto.PropsFromProducer(func() proto.Actor { return newTokenActor(s) }), nil
}

// Internal messages the actor sends itself.
type (
	fetchDone struct {
		id       uint64
		token    tokenmanager.Token
		err      error
		duration time.Duration
	}
	refreshTick struct{ gen uint64 }
	retryTick   struct{ seq uint64 }
)

type tokenActor struct {
	s   fetchSettings
	clk clock.Clock
	h   *link.Handle
	cb  func(messages.Event) // the actor-side callbacks; nil for a child
	// child: the actor serves one identity of an owner (owner.go). It
	// shares the owner's event bus, arms no refresh timer (readers ask
	// for the refresh when they use the token past its refresh time, so
	// a token nobody uses is never refreshed), and can be passivated.
	child       bool
	owner       *proto.PID // the owner, for a child
	passivating bool       // told the owner it is idle; reroutes what still comes

	self *proto.PID
	root *proto.RootContext
	log  *slog.Logger // Settings.Logger, else the actor system's

	mu      sync.Mutex // guards stopped: goroutines send to self only while false
	stopped bool

	fetchCancel context.CancelFunc // cancels the current fetch; called on stop
	unsubs      []func()

	cur *link.Snapshot // nil when nothing is cached; may be expired
	gen uint64

	fetching   bool
	fetchID    uint64
	fetchStart time.Time
	rejected   []string // tokens invalidated while the current fetch ran
	dropped    string   // the last token invalidated, until a token is cached

	// cachedAt is when cur was cached; quickRejects counts tokens in a row
	// rejected soon after they were cached (see holdIfRejectedTooOften).
	cachedAt     time.Time
	quickRejects int
	fetchWhy     messages.RefreshReason
	refreshDue   bool // the early-refresh timer fired and no new token came yet

	askers  []*proto.PID // messages.Get senders waiting for the current fetch
	waiters []*link.Wait // requests waiting through failures until their ctx ends

	failures     int
	lastErr      error
	notBefore    time.Time // backoff: no fetch starts before this
	retryTimer   *clock.Timer
	retrySeq     uint64
	refreshTimer *clock.Timer
	// calls counts provider calls running, abandoned or not: a call
	// abandoned after FetchTimeout may overlap the next one, but no more
	// calls than that run at once.
	calls atomic.Int32
}

// fetchSettings are the fields of tokenmanager.Settings the token actor
// uses (defaults applied), kept apart so that an idle identity does not
// carry the whole Settings.
type fetchSettings struct {
	GetCredentials    tokenmanager.TokenProvider
	RefreshBuffer     time.Duration
	RetryBaseDelay    time.Duration
	RetryMaxDelay     time.Duration
	FetchTimeout      time.Duration
	TokenTryThreshold int
	AddTokenToLogs    bool
	Logger            *slog.Logger // nil: the actor system's
}

func newFetchSettings(s tokenmanager.Settings) fetchSettings {
	return fetchSettings{
		GetCredentials:    s.GetCredentials,
		RefreshBuffer:     s.RefreshBuffer,
		RetryBaseDelay:    s.RetryBaseDelay,
		RetryMaxDelay:     s.RetryMaxDelay,
		FetchTimeout:      s.FetchTimeout,
		TokenTryThreshold: s.TokenTryThreshold,
		AddTokenToLogs:    s.AddTokenToLogs,
		Logger:            s.Logger,
	}
}

func newTokenActor(s tokenmanager.Settings) *tokenActor {
	return &tokenActor{
		s:   newFetchSettings(s),
		clk: s.Clock,
		h:   link.NewHandle(s.EventBuffer, s.Clock),
		cb:  link.Callbacks(s, link.ActorSide),
	}
}

// newChild returns the token actor of one of an owner's identities, with
// the handle the owner publishes for it.
func newChild(s tokenmanager.Settings, h *link.Handle, owner *proto.PID) *tokenActor {
	return &tokenActor{s: newFetchSettings(s), clk: s.Clock, h: h, child: true, owner: owner}
}

// Receive implements protoactor's Actor. It contains panics so that the
// actor is never restarted: a restart would lose the waiters and the
// handle the RoundTrippers hold.
func (a *tokenActor) Receive(c proto.Context) {
	defer func() {
		if r := recover(); r != nil {
			c.Logger().Error("tokenmanager: token actor recovered from a panic", "panic", fmt.Sprint(r))
		}
	}()
	if a.passivating && a.reroute(c) {
		return
	}
	switch m := c.Message().(type) {
	case *proto.Started:
		a.started(c)
	case *proto.Stopping:
		a.stopping(c)
	case messages.Get, *messages.Get:
		a.get(c)
	case messages.Invalidate:
		a.invalidate(m.AccessToken, -1)
	case *messages.Invalidate:
		a.invalidate(m.AccessToken, -1)
	case messages.Refreshed:
		a.pushed(m)
	case *messages.Refreshed:
		a.pushed(*m)
	case *link.Rejected:
		a.invalidate(m.AccessToken, m.MaxTries)
	case *link.Served:
		a.endStreak()
	case *link.Wait:
		a.wait(m)
	case *link.Attach:
		c.Respond(a.h)
	case *fetchDone:
		a.fetchDone(m)
	case refreshTick:
		a.refreshTick(m)
	case *link.RefreshNow:
		a.refreshTick(refreshTick{gen: m.Gen})
	case *passivate:
		a.passivate(c, m)
	case retryTick:
		a.retryTick(m)
	}
}

func (a *tokenActor) started(c proto.Context) {
	a.self = c.Self()
	a.root = c.ActorSystem().Root
	a.log = a.s.Logger
	if a.log == nil {
		a.log = c.Logger()
	}
	if a.child {
		return // the owner forwards the shared bus's events
	}
	if a.cb != nil {
		a.unsubs = append(a.unsubs, a.h.Bus.Subscribe(a.cb))
	}
	es := c.ActorSystem().EventStream
	a.unsubs = append(a.unsubs, a.h.Bus.Subscribe(func(ev messages.Event) { es.Publish(ev) }))
}

func (a *tokenActor) stopping(c proto.Context) {
	a.mu.Lock()
	a.stopped = true
	a.mu.Unlock()
	if a.fetchCancel != nil {
		a.fetchCancel()
	}
	a.stopTimer(&a.refreshTimer)
	a.stopTimer(&a.retryTimer)
	closed := &messages.TokenResult{Err: tokenmanager.ErrClosed}
	if a.passivating {
		closed = &messages.TokenResult{Err: link.ErrPassivated} // ask the owner again
	}
	for _, pid := range a.askers {
		c.Send(pid, closed)
	}
	for _, w := range a.waiters {
		reply(w, closed)
	}
	a.askers, a.waiters = nil, nil
	a.h.Store(nil)
	close(a.h.Done)
	if a.child {
		if !a.passivating {
			c.Send(a.owner, &gone{identity: a.h.Identity, pid: c.Self()})
		}
		return // the bus is the owner's
	}
	a.h.Bus.Publish(messages.Closed{})
	a.h.Bus.Close()
	for _, u := range a.unsubs {
		u()
	}
}

// publish publishes ev on the actor's bus; an owner's child binds its
// identity's callbacks to it, so they are called even if the identity is
// passivated before ev is delivered.
func (a *tokenActor) publish(ev messages.Event) {
	if a.child {
		a.h.Bus.PublishWith(ev, a.h.Request.Callbacks)
		return
	}
	a.h.Bus.Publish(ev)
}

// sendSelf delivers msg from a goroutine or timer, unless the actor has
// stopped (a message to a stopped actor would become a dead letter).
func (a *tokenActor) sendSelf(msg any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.stopped {
		a.root.Send(a.self, msg)
	}
}

func (a *tokenActor) stopTimer(t **clock.Timer) {
	if *t != nil {
		(*t).Stop()
		*t = nil
	}
}

func (a *tokenActor) result() *messages.TokenResult {
	return &messages.TokenResult{Token: a.cur.Token, ExpiresAt: a.cur.ExpiresAt}
}

func (a *tokenActor) get(c proto.Context) {
	sender := c.Sender()
	if sender == nil {
		return
	}
	now := a.clk.Now()
	a.h.Touch(now)
	if a.cur.FreshAt(now) {
		c.Respond(a.result())
		if a.cur.AskRefresh(now) {
			a.refreshTick(refreshTick{gen: a.gen})
		}
		return
	}
	if !a.fetching && a.lastErr != nil && now.Before(a.notBefore) {
		// Backing off: an actor asker hears the last failure at once.
		c.Respond(&messages.TokenResult{Err: a.lastErr})
		return
	}
	a.askers = append(a.askers, sender)
	a.ensureFetch(now)
}

func (a *tokenActor) wait(w *link.Wait) {
	if w.Ctx.Err() != nil {
		return
	}
	now := a.clk.Now()
	if a.cur.FreshAt(now) {
		reply(w, a.result())
		return
	}
	if !a.fetching && now.Before(a.notBefore) && tokenmanager.IsPermanent(a.lastErr) {
		// The last fetch failed for good and the backoff is not over:
		// answer with that failure rather than hold the request.
		reply(w, &messages.TokenResult{Err: a.lastErr})
		return
	}
	if len(a.waiters) >= 64 && len(a.waiters)&(len(a.waiters)-1) == 0 {
		a.pruneWaiters() // amortised: forget requests that gave up
	}
	a.waiters = append(a.waiters, w)
	a.ensureFetch(now)
}

// reply answers a waiter without ever blocking the actor.
func reply(w *link.Wait, res *messages.TokenResult) {
	select {
	case w.Reply <- res:
	default:
	}
}

func (a *tokenActor) pruneWaiters() {
	live := a.waiters[:0]
	for _, w := range a.waiters {
		if w.Ctx.Err() == nil {
			live = append(live, w)
		}
	}
	clear(a.waiters[len(live):])
	a.waiters = live
}

// needed reports whether anyone needs a fetch: an asker, a live waiter, or
// a still-valid token whose early refresh is due.
func (a *tokenActor) needed(now time.Time) bool {
	a.pruneWaiters()
	return len(a.askers) > 0 || len(a.waiters) > 0 || (a.refreshDue && a.cur.FreshAt(now))
}

// ensureFetch starts a fetch now, or schedules one for when the backoff
// ends.
func (a *tokenActor) ensureFetch(now time.Time) {
	if a.fetching {
		return
	}
	if now.Before(a.notBefore) {
		if a.retryTimer == nil {
			a.scheduleRetry(a.notBefore.Sub(now))
		}
		return
	}
	a.startFetch(now)
}

func (a *tokenActor) startFetch(now time.Time) {
	a.stopTimer(&a.retryTimer)
	a.fetching = true
	a.fetchID++
	a.fetchStart = now
	clear(a.rejected)
	a.rejected = a.rejected[:0]
	switch {
	case a.gen == 0: // nothing was ever cached (every change bumps gen)
		a.fetchWhy = messages.ReasonColdStart
	case a.cur.FreshAt(now):
		a.fetchWhy = messages.ReasonEarlyRefresh
	case a.cur != nil:
		a.fetchWhy = messages.ReasonExpired
	default: // dropped by an invalidation
		a.fetchWhy = messages.ReasonInvalidated
	}
	id, provider := a.fetchID, a.s.GetCredentials
	ctx, cancel := context.WithTimeout(context.Background(), a.s.FetchTimeout)
	ctx = link.WithFetch(ctx, string(a.fetchWhy), a.dropped)
	a.fetchCancel = cancel
	go func() {
		defer cancel()
		began := time.Now()
		tok, err := callProvider(ctx, &a.calls, provider)
		a.sendSelf(&fetchDone{id: id, token: tok, err: err, duration: time.Since(began)})
	}()
}

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

func (a *tokenActor) fetchDone(m *fetchDone) {
	if !a.fetching || m.id != a.fetchID {
		return
	}
	a.fetching = false
	a.fetchCancel = nil // its goroutine has called it
	now := a.clk.Now()
	err := m.err
	if err == nil {
		err = tokenmanager.CheckToken(m.token)
	}
	if err == nil && slices.Contains(a.rejected, m.token.AccessToken) {
		// The fetch brought back a token rejected while it ran: never
		// cache it again. Fetch anew if needed.
		if a.needed(now) {
			a.startFetch(now)
		}
		return
	}
	var expires time.Time
	if err == nil {
		if life, ok := m.token.Lifetime(); ok {
			expires = a.fetchStart.Add(life)
			if !now.Before(expires) {
				err = fmt.Errorf("%w (expires_in %d, fetch took %v)",
					tokenmanager.ErrExpiredOnArrival, m.token.ExpiresIn, now.Sub(a.fetchStart))
			}
		}
	}
	if err != nil {
		a.logPanic(err)
		a.fail(now, err)
		return
	}
	a.cache(now, a.fetchStart, m.token, expires, a.fetchWhy, m.duration)
}

// logPanic logs a provider's panic with its stack trace: a bug to fix,
// which the event's short error message alone would not locate.
func (a *tokenActor) logPanic(err error) {
	var pe *tokenmanager.PanicError
	if a.log == nil || !errors.As(err, &pe) {
		return
	}
	attrs := []slog.Attr{slog.String("panic", pe.Error()), slog.String("stack", string(pe.Stack))}
	if a.h.Identity != "" {
		attrs = append(attrs, slog.String("identity", a.h.Identity))
	}
	a.log.LogAttrs(context.Background(), slog.LevelError, "tokenmanager: token provider panicked", attrs...)
}

// cache stores tok, fetched from start on, answers everyone waiting and
// arms the early refresh.
func (a *tokenActor) cache(now, start time.Time, tok tokenmanager.Token, expires time.Time,
	why messages.RefreshReason, took time.Duration) {
	a.gen++
	a.cur = &link.Snapshot{Token: tok, ExpiresAt: expires, Gen: a.gen}
	if a.child && a.h.Request.Bearer {
		// The default formatter only: a user's Formatter runs on request
		// goroutines, never on the actor's.
		a.cur.Header = tokenmanager.BearerFormatter(tok.AccessToken)
	}
	a.stopTimer(&a.refreshTimer)
	if at, ok := a.refreshAt(now, start); ok {
		if a.child {
			a.cur.RefreshAt = at // readers ask when they use it past then
		} else {
			gen := a.gen
			a.refreshTimer = a.clk.AfterFunc(at.Sub(now), func() { a.sendSelf(refreshTick{gen: gen}) })
		}
	}
	a.h.Store(a.cur)
	a.cachedAt = now
	a.refreshDue = false
	a.dropped = ""
	a.failures, a.lastErr, a.notBefore = 0, nil, time.Time{}
	a.h.SetLastError(nil)
	a.stopTimer(&a.retryTimer)

	res := a.result()
	for _, pid := range a.askers {
		a.root.Send(pid, res)
	}
	for _, w := range a.waiters {
		reply(w, res)
	}
	clear(a.askers)
	clear(a.waiters)
	a.askers, a.waiters = a.askers[:0], a.waiters[:0]

	msg := fmt.Sprintf("token refreshed (%s)", why)
	if !expires.IsZero() {
		msg += fmt.Sprintf(", expires in %v", expires.Sub(now).Round(time.Second))
	}
	if a.s.AddTokenToLogs {
		msg += ": " + tok.AccessToken
	}
	a.publish(messages.TokenRefreshed{
		Identity:      a.h.Identity,
		ExpiresAt:     expires,
		Reason:        why,
		FetchDuration: took,
		Fingerprint:   tokenmanager.Fingerprint(tok.AccessToken),
		Message:       msg,
	})
}

// refreshAt returns when the current token, fetched from start on, is
// refreshed early: at expiry - RefreshBuffer, but never sooner than half
// its lifetime after start, so a buffer as long as the token's life (or
// longer) cannot make the actor fetch far more often than the token
// needs:
//
//	at = start + max(lifetime - RefreshBuffer, lifetime/2)
//
// When that time has already passed (its fetch took more than half the
// lifetime), the token is refreshed at half of what is left of it. ok is
// false for a token without expiry.
func (a *tokenActor) refreshAt(now, start time.Time) (at time.Time, ok bool) {
	exp := a.cur.ExpiresAt
	if exp.IsZero() {
		return time.Time{}, false
	}
	life := exp.Sub(start)
	at = start.Add(max(life-a.s.RefreshBuffer, life/2))
	if !at.After(now) {
		at = now.Add(exp.Sub(now) / 2)
	}
	return at, true
}

func (a *tokenActor) refreshTick(m refreshTick) {
	if m.gen != a.gen {
		return
	}
	a.refreshTimer = nil
	a.refreshDue = true
	a.endStreak() // the token lived to its refresh
	a.ensureFetch(a.clk.Now())
}

func (a *tokenActor) scheduleRetry(d time.Duration) {
	a.stopTimer(&a.retryTimer)
	a.retrySeq++
	seq := a.retrySeq
	a.retryTimer = a.clk.AfterFunc(d, func() { a.sendSelf(retryTick{seq: seq}) })
}

func (a *tokenActor) retryTick(m retryTick) {
	if m.seq != a.retrySeq {
		return
	}
	a.retryTimer = nil
	if a.fetching {
		return
	}
	now := a.clk.Now()
	if a.needed(now) {
		a.startFetch(now)
	}
}

func (a *tokenActor) fail(now time.Time, err error) {
	a.failures++
	fe := &tokenmanager.FetchError{Attempt: a.failures, Err: err}
	a.lastErr = fe
	a.h.SetLastError(fe)
	delay := backoff(a.failures, a.s.RetryBaseDelay, a.s.RetryMaxDelay)
	if d := min(retryAfter(err), tokenmanager.MaxRetryAfter); d > delay {
		delay = d
	}
	a.notBefore = now.Add(delay)

	res := &messages.TokenResult{Err: fe}
	for _, pid := range a.askers {
		a.root.Send(pid, res)
	}
	clear(a.askers)
	a.askers = a.askers[:0]
	permanent := tokenmanager.IsPermanent(err)
	if permanent {
		// Waiting cannot help: fail every request now. The next one after
		// the backoff tries again (see wait).
		for _, w := range a.waiters {
			reply(w, res)
		}
		clear(a.waiters)
		a.waiters = a.waiters[:0]
	}

	var retryIn time.Duration
	if a.needed(now) {
		a.scheduleRetry(delay)
		retryIn = delay
	}
	a.publish(messages.TokenRequestFailed{Identity: a.h.Identity, Err: fe, Permanent: permanent, ConsecutiveFailures: a.failures, RetryIn: retryIn})
	if a.failures%a.s.TokenTryThreshold == 0 {
		a.publish(messages.TokenTryThresholdReached{Identity: a.h.Identity, FailedTries: a.failures})
	}
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

// minRetryDelay keeps a failing provider from being called in a loop,
// whatever the settings say.
const minRetryDelay = 10 * time.Millisecond

// backoff returns the delay after the n-th consecutive failure: base
// doubling per failure, capped at limit, with jitter drawn from its upper
// half so that many actors do not retry in step.
func backoff(n int, base, limit time.Duration) time.Duration {
	d := limit
	if n < 32 {
		if e := base << (n - 1); e > 0 && e < limit {
			d = e
		}
	}
	if half := d / 2; half > 0 {
		d = half + rand.N(half+1)
	}
	return max(d, minRetryDelay)
}

// invalidate drops the cached token if it is still token (any, if
// empty). tries >= 0 says the token was fetched for a recovery and
// rejected on its first use by a RoundTripper allowing tries recoveries;
// tries < 0 is a plain Invalidate.
func (a *tokenActor) invalidate(token string, tries int) {
	if a.cur == nil || (token != "" && token != a.cur.Token.AccessToken) {
		return
	}
	now := a.clk.Now()
	window := a.s.RetryMaxDelay
	if !a.cur.ExpiresAt.IsZero() {
		window = min(window, a.cur.ExpiresAt.Sub(a.cachedAt)/2)
	}
	if now.Sub(a.cachedAt) >= window {
		// This token served for a while: any streak is over.
		a.endStreak()
	} else if tries >= 0 {
		// Fetched for a recovery and rejected on first use; tries is the
		// sending RoundTripper's own MaxRecoveryTries.
		a.holdIfRejectedTooOften(now, tries)
	}
	if a.fetching {
		a.rejected = append(a.rejected, a.cur.Token.AccessToken)
	}
	a.dropped = a.cur.Token.AccessToken
	a.gen++
	a.cur = nil
	a.h.Store(nil)
	a.refreshDue = false
	a.stopTimer(&a.refreshTimer)
}

// holdIfRejectedTooOften protects the token endpoint from an API that
// rejects every new token (a wrong audience, say), where each request
// would otherwise cost MaxRecoveryTries + 1 fetches. It counts tokens
// fetched for a recovery and rejected on first use within RetryMaxDelay
// of being cached (or half their lifetime, if shorter). After a streak of
// them far longer than any recovery needs (four times the sender's
// MaxRecoveryTries + 1, at least 8), it declares a hold for a backoff that
// grows with the streak: a request first rejected during the hold is given
// back its response at once, without recovery and without dropping the
// token, so the hold costs the endpoint no fetch (requests already
// recovering finish their tries). Any token serving a request
// successfully (link.Served), a token rejected after serving longer than
// the window, or one living to its early refresh ends the streak and the
// hold: tokens that work, however briefly, never lock requests out.
func (a *tokenActor) holdIfRejectedTooOften(now time.Time, tries int) {
	a.quickRejects++
	a.h.SetStreak(true)
	limit := max(4*(tries+1), 8)
	if a.quickRejects < limit {
		return
	}
	d := backoff(a.quickRejects-limit+1, a.s.RetryBaseDelay, a.s.RetryMaxDelay)
	a.h.SetHoldUntil(now.Add(d))
}

// endStreak forgets the tokens rejected on first use and lifts any hold.
func (a *tokenActor) endStreak() {
	if a.quickRejects == 0 {
		return
	}
	a.quickRejects = 0
	a.h.SetStreak(false)
	a.h.SetHoldUntil(time.Time{})
}

func (a *tokenActor) pushed(m messages.Refreshed) {
	now := a.clk.Now()
	if m.Err != nil {
		a.fail(now, m.Err)
		return
	}
	if err := tokenmanager.CheckToken(m.Token); err != nil {
		// Not the provider's failure: keep what is cached, count nothing.
		a.publish(messages.PushRejected{Identity: a.h.Identity, Err: fmt.Errorf("tokenmanager: pushed token refused: %w", err)})
		return
	}
	var expires time.Time
	if life, ok := m.Token.Lifetime(); ok {
		expires = now.Add(life)
	}
	a.cache(now, now, m.Token, expires, messages.ReasonPushed, 0)
}
