package actor

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/dpopctx"
	"github.com/go-tokenmanager/tokenmanager/internal/eventbus"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/internal/request"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// state is one token's state: what is cached, the fetch in progress, the
// backoff after failures, the streak of rejected new tokens that may put
// requests on hold, and who waits. Its transitions (transitions.go) take
// the time and return the [effects] their host carries out; the state
// itself touches nothing but its fields and the handle it publishes to.
//
// Every field is owned by the goroutine running its host's Receive (the
// token actor's, or the owner's for the identities it hosts): no lock
// guards them. Other goroutines see the state only through h.
type state struct {
	// h is what the state publishes to readers (the snapshot of
	// cache.cur, the last fetch error, the streak and the hold); its
	// host hands out its address.
	h        link.Handle
	s        *fetchSettings // shared by identities whose settings agree
	provider tokenmanager.TokenProvider
	pol      policy

	cache struct {
		// cur is the cached token; nil when nothing is cached. It may be
		// expired. h holds cur at all times (readers may drop it early,
		// on a rejection, before invalidate runs).
		cur *link.Snapshot
		// gen is bumped on every change of cur; 0 means nothing was ever
		// cached. A refresh tick for another gen is stale.
		gen uint64
		// cachedAt is when cur was cached (UnixNano on the clock);
		// meaningful while cur != nil.
		cachedAt int64
		// refreshDue: the early refresh came due for cur and no new
		// token came yet. Only while cur != nil.
		refreshDue bool
		// refreshArmed: the host holds a refresh timer for gen. Only
		// with pol.refresh == refreshByTimer.
		refreshArmed bool
	}

	fetch struct {
		// running: a provider call was started and its outcome (a
		// fetchDone with id) has not been handled yet.
		running bool
		// retryArmed: the host holds a retry timer for retrySeq. Armed
		// only while someone needs a fetch and the backoff lasts (idle
		// states hold no timer); a tick for another seq is stale.
		retryArmed bool
		why        reason
		// calls counts provider calls running, abandoned ones included:
		// a call abandoned after FetchTimeout may overlap the next one,
		// but no more than maxProviderCalls run at once. Written by the
		// fetch goroutines.
		calls atomic.Int32
		// id names the fetch running, or the last one; a fetchDone with
		// another id is stale.
		id       uint32
		retrySeq uint32
		// start is when the running fetch started; the token's lifetime
		// counts from it.
		start time.Time
		// cancel cancels the running fetch; set by the host that starts
		// it, nil unless running.
		cancel context.CancelFunc
	}

	// drops is nil exactly while no token was invalidated since the
	// last one was cached and none was rejected during the running
	// fetch.
	drops *dropState
	// backoff is nil exactly while no fetch has failed since the last
	// token was cached.
	backoff *backoffState
	// hold is nil exactly while no streak runs (h.Streak() is false).
	hold *holdState
	// waiters is nil exactly while nobody waits (waits whose context
	// ended are forgotten lazily, by pruneWaits).
	waiters *waitersState
}

// dropState is what invalidations left behind.
type dropState struct {
	// last is the last token invalidated, until a token is cached; the
	// fetch that follows passes it to the provider.
	last string
	// rejected holds the tokens invalidated while the fetch ran: one
	// of them coming back is never cached. Empty unless fetch.running.
	rejected []string
}

// reason is a messages.RefreshReason in a byte.
type reason uint8

const (
	reasonColdStart reason = iota
	reasonEarlyRefresh
	reasonExpired
	reasonInvalidated
)

func (r reason) reason() messages.RefreshReason {
	return [...]messages.RefreshReason{messages.ReasonColdStart, messages.ReasonEarlyRefresh,
		messages.ReasonExpired, messages.ReasonInvalidated}[r]
}

// backoffState is the backoff after failed fetches.
type backoffState struct {
	// failures counts fetches failed in a row (> 0).
	failures int
	// lastErr is the last failure, a *tokenmanager.FetchError.
	lastErr error
	// notBefore: no fetch starts before it.
	notBefore time.Time
}

// holdState is a streak of new tokens rejected on first use.
type holdState struct {
	// quickRejects counts tokens in a row fetched for a recovery and
	// rejected on first use (> 0). The hold itself (h.HoldUntil) is set
	// once the streak is long.
	quickRejects int
}

// waitersState is who waits for a token.
type waitersState struct {
	// askers are messages.Get senders waiting for the running fetch
	// (or the retry after a failure): answered on its outcome.
	askers []*proto.PID
	// waits are requests waiting through failures until their context
	// ends; answered on a token, or a permanent failure.
	waits []*protocol.Wait
}

// policy is what differs between the hosts of a state: a token actor of
// its own (NewProps), an identity of an owner (NewOwnerProps), and so a
// cluster grain's token actor.
type policy struct {
	// refresh says how the early refresh comes: by a timer the host arms
	// (refreshByTimer), or when a reader uses the token past its refresh
	// time and asks (refreshOnUse: the snapshot carries RefreshAt, and
	// an unused token is never refreshed).
	refresh refreshPolicy
	// events says where events go: the state's own bus (eventsOwnBus),
	// or a bus shared by many identities, each event bound to its
	// identity's callbacks (eventsSharedBus).
	events eventsPolicy
	// passivate: the host may stop the state when it is idle.
	passivate bool
}

type refreshPolicy uint8

const (
	refreshByTimer refreshPolicy = iota
	refreshOnUse
)

type eventsPolicy uint8

const (
	eventsOwnBus eventsPolicy = iota
	eventsSharedBus
)

// standalonePolicy is the policy of a token actor of its own.
var standalonePolicy = policy{refresh: refreshByTimer, events: eventsOwnBus}

// hostedPolicy is the policy of an owner's identity.
var hostedPolicy = policy{refresh: refreshOnUse, events: eventsSharedBus, passivate: true}

// fetchSettings are the fields of tokenmanager.Settings a token's state
// uses (defaults applied) but its provider, kept apart so that an idle
// identity does not carry the whole Settings, and comparable, so that
// identities whose settings agree share one.
type fetchSettings struct {
	RefreshBuffer     time.Duration
	RetryBaseDelay    time.Duration
	RetryMaxDelay     time.Duration
	FetchTimeout      time.Duration
	TokenTryThreshold int
	AddTokenToLogs    bool
	Logger            *slog.Logger // nil: the host's
}

func newFetchSettings(s tokenmanager.Settings) fetchSettings {
	return fetchSettings{
		RefreshBuffer:     s.RefreshBuffer,
		RetryBaseDelay:    s.RetryBaseDelay,
		RetryMaxDelay:     s.RetryMaxDelay,
		FetchTimeout:      s.FetchTimeout,
		TokenTryThreshold: s.TokenTryThreshold,
		AddTokenToLogs:    s.AddTokenToLogs,
		Logger:            s.Logger,
	}
}

// newState returns the state of a token actor of its own, whose events
// subscribers queue up to s.EventBuffer.
func newState(s tokenmanager.Settings, pol policy) *state {
	fs := newFetchSettings(s)
	st := &state{s: &fs, provider: dpopctx.ProviderOf(s), pol: pol}
	st.h.Bus = eventbus.New(s.EventBuffer)
	st.h.Done = make(chan struct{})
	st.h.Clock = s.Clock
	return st
}

// effects is what a transition asks its host to do. The zero value asks
// nothing.
type effects struct {
	// reply answers the sender of the message being handled (a Get's
	// sender, a Wait's channel); nil: no answer now.
	reply *messages.TokenResult
	// answer answers askers and waits, handed over by the state, which
	// forgot them.
	answer *messages.TokenResult
	askers []*proto.PID
	waits  []*protocol.Wait
	// fetch: start the provider call the state just began (fetch.id).
	fetch bool
	// arm asks for a timer: a refresh tick for gen seq, or a retry tick
	// for backoff.retrySeq seq, in d. Stop* stop the ones held.
	arm         timerKind
	armIn       time.Duration
	armSeq      uint64
	stopRefresh bool
	stopRetry   bool
	// events are published in order (see policy.events).
	events [2]messages.Event
	// panicked is a provider panic to log with its stack trace.
	panicked *tokenmanager.PanicError
}

type timerKind uint8

const (
	noTimer timerKind = iota
	refreshTimer
	retryTimer
)

func (e *effects) emit(ev messages.Event) {
	if e.events[0] == nil {
		e.events[0] = ev
	} else {
		e.events[1] = ev
	}
}

// merge adds the effects of a later step to e.
func (e *effects) merge(o effects) {
	if o.reply != nil {
		e.reply = o.reply
	}
	if o.answer != nil {
		e.answer, e.askers, e.waits = o.answer, append(e.askers, o.askers...), append(e.waits, o.waits...)
	}
	e.fetch = e.fetch || o.fetch
	if o.arm != noTimer {
		e.arm, e.armIn, e.armSeq = o.arm, o.armIn, o.armSeq
	}
	e.stopRefresh = e.stopRefresh || o.stopRefresh
	e.stopRetry = e.stopRetry || o.stopRetry
	for _, ev := range o.events {
		if ev != nil {
			e.emit(ev)
		}
	}
	if o.panicked != nil {
		e.panicked = o.panicked
	}
}

// publish publishes ev where the policy says.
func (st *state) publish(ev messages.Event) {
	if st.pol.events == eventsSharedBus {
		st.h.Bus.PublishWith(ev, st.h.Request.Callbacks)
		return
	}
	st.h.Bus.Publish(ev)
}

// publisher returns a func publishing as [state.publish] does, for the
// provider's own events (protocol.WithPublish), safe to call from the
// provider's goroutine: it holds the bus (safe for concurrent use) and
// the callbacks as they are now, not the state.
func (st *state) publisher() func(messages.Event) {
	if st.pol.events == eventsSharedBus {
		return sharedPublisher(st.h.Bus, st.h.Request.Callbacks)
	}
	return st.h.Bus.Publish
}

// sharedPublisher returns a func publishing on a bus shared by many
// identities, each event bound to callbacks (those of its identity).
func sharedPublisher(bus *eventbus.Bus, callbacks func(messages.Event)) func(messages.Event) {
	return func(ev messages.Event) { bus.PublishWith(ev, callbacks) }
}

// launch starts the provider call the state began (effects.fetch) on a
// goroutine of its own: one spawn gives (an owner's parked worker), or a
// new one when spawn is nil. Its outcome is handed to done, which must
// not block (it sends a message to the host).
func (st *state) launch(spawn func(func()), done func(*fetchDone)) {
	id, provider := st.fetch.id, st.provider
	dropped := ""
	if st.drops != nil {
		dropped = st.drops.last
	}
	var publish func(messages.Event)
	if st.h.Bus != nil {
		publish = st.publisher()
	}
	ctx, cancel := fetchContext(context.Background(), st.s.FetchTimeout, st.fetch.why, dropped, publish)
	st.fetch.cancel = cancel
	calls := &st.fetch.calls
	run := func() {
		defer cancel()
		fetch(ctx, calls, provider, func(d *fetchDone) {
			d.id = id
			done(d)
		})
	}
	if spawn == nil {
		go run()
		return
	}
	spawn(run)
}

// fetchContext returns the context of a provider call: bounded by
// timeout (and parent), telling the provider why it is called and which
// token's rejection led to the call (protocol.WithFetch), and where to
// publish the provider's own events (protocol.WithPublish: publish, when
// not nil).
func fetchContext(parent context.Context, timeout time.Duration, why reason, dropped string, publish func(messages.Event)) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, timeout)
	return protocol.NewFetch(ctx, string(why.reason()), dropped, publish), cancel
}

// fetch calls provider (see callProvider) and hands done its outcome,
// timed.
func fetch(ctx context.Context, calls *atomic.Int32, provider tokenmanager.TokenProvider, done func(*fetchDone)) {
	began := time.Now()
	callProvider(ctx, calls, provider, func(tok tokenmanager.Token, err error) {
		done(&fetchDone{token: tok, err: err, duration: time.Since(began), lifetime: protocol.LifetimeFrom(ctx)})
	})
}

// firstFetch is the first fetch of a state not made yet, which its host
// runs on the goroutine that got the state's settings s (as SettingsFor
// gave them): a cold start, bounded by s's FetchTimeout and by parent,
// whose provider publishes on bus, shared by the host's identities, with
// the callbacks of s. calls is the future state's. done gets the
// outcome and when the fetch started on s's clock; the host hands both to
// the state with [state.begin] and [state.fetched].
func firstFetch(parent context.Context, s tokenmanager.Settings, bus *eventbus.Bus, calls *atomic.Int32, done func(d *fetchDone, start time.Time)) {
	s = s.WithDefaults()
	publish := sharedPublisher(bus, request.Callbacks(s, request.BothSides))
	ctx, cancel := fetchContext(parent, s.FetchTimeout, reasonColdStart, "", publish)
	defer cancel()
	start := s.Clock.Now()
	fetch(ctx, calls, dpopctx.ProviderOf(s), func(d *fetchDone) { done(d, start) })
}

// logPanic logs a provider's panic with its stack trace: a bug to fix,
// which the event's short error message alone would not locate.
func (st *state) logPanic(log *slog.Logger, pe *tokenmanager.PanicError) {
	if log == nil {
		return
	}
	attrs := []slog.Attr{slog.String("panic", pe.Error()), slog.String("stack", string(pe.Stack))}
	if st.h.Identity != "" {
		attrs = append(attrs, slog.String("identity", st.h.Identity))
	}
	log.LogAttrs(context.Background(), slog.LevelError, "tokenmanager: token provider panicked", attrs...)
}
