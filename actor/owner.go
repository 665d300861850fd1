package actor

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/eventbus"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// NewOwnerProps validates settings and returns props for an owner of many
// identities: an actor that starts one token actor per identity (a named
// child, the same token actor [NewProps] makes) on first use, routes
// [messages.Get], [messages.Invalidate] and [messages.Refreshed] to it by
// their Identity field, and stops it when it has been idle for
// settings.IdleTimeout.
//
// Under an owner, a token is refreshed early only when it is used after
// its refresh time, so identities nobody uses never call their token
// endpoint, and an idle identity holds no goroutine and no timer. Events
// of all identities, each carrying its identity, go through one bus: they
// are published on the actor system's EventStream from one goroutine per
// owner. Stopping the owner stops every identity.
//
// An identity that fails tokenmanager.CheckIdentity (empty, too long,
// not UTF-8, holding a control character) is refused: a Get for it is
// answered with an error wrapping tokenmanager.ErrInvalidIdentity, an
// Invalidate or Refreshed for it is dropped, and nothing is started.
//
// A Get for an identity whose settings cannot be had (settings.SettingsFor
// failed) is answered with that error, naming the identity; each failed
// SettingsFor call is published as [messages.SettingsFailed] and logged
// (to settings.Logger, else the actor system's logger).
func NewOwnerProps(settings tokenmanager.OwnerSettings) (*proto.Props, error) {
	if err := settings.Validate(); err != nil {
		return nil, err
	}
	s := settings.WithDefaults()
	return proto.PropsFromProducer(func() proto.Actor { return newOwner(s) }, lockfreeMailbox), nil
}

// Messages between an owner and its children, and to itself.
type (
	// passivate asks a child to stop if it has not been used since
	// cutoff and nobody waits on it.
	passivate struct {
		cutoff  time.Time
		evicted bool
	}
	// idle is a child's answer: it stopped taking work.
	idle struct {
		identity string
		pid      *proto.PID
		evicted  bool
	}
	// stay is a child's answer: it is busy or was used meanwhile.
	stay struct {
		identity string
		pid      *proto.PID
	}
	// gone says a child stopped other than by passivation.
	gone struct {
		identity string
		pid      *proto.PID
	}
	settingsDone struct {
		identity string
		s        tokenmanager.Settings
		err      error
	}
	sweepTick struct{ seq uint64 }
)

// The internal messages are not logged when they end up as dead letters
// (a child's last word to an owner that is stopping, say).
func (*passivate) IgnoreDeadLetterLogging()    {}
func (*idle) IgnoreDeadLetterLogging()         {}
func (*stay) IgnoreDeadLetterLogging()         {}
func (*gone) IgnoreDeadLetterLogging()         {}
func (*settingsDone) IgnoreDeadLetterLogging() {}

type owner struct {
	s tokenmanager.OwnerSettings
	o *link.Owner

	self *proto.PID
	root *proto.RootContext

	mu      sync.Mutex // guards stopped: goroutines send to self only while false
	stopped bool
	unsubs  []func()

	children map[string]*child
	pending  map[string]*pending              // SettingsFor running
	failed   map[string]*link.SettingsFailure // SettingsFor failed; not called again before NotBefore
	seq      uint64                           // names children uniquely
	requests map[requestKey]*link.Request
	peak     int // the most children since the map was last rebuilt
	// pendingPeak is the same for pending.
	pendingPeak int
	sweep       *clock.Timer // armed while there are children or failures
	sweepSeq    uint64
}

type child struct {
	pid   *proto.PID
	h     *link.Handle
	asked bool // a passivate is on its way; it answers idle or stay
}

// pending holds what asked for an identity while its settings are fetched.
type pending struct {
	resolves  []*link.Resolve
	envelopes []envelope
}

type envelope struct {
	msg    any
	sender *proto.PID
}

func newOwner(s tokenmanager.OwnerSettings) *owner {
	return &owner{
		s: s,
		o: &link.Owner{Registry: link.NewRegistry(), Bus: eventbus.New(s.EventBuffer), Done: make(chan struct{})},

		children: make(map[string]*child),
		pending:  make(map[string]*pending),
		failed:   make(map[string]*link.SettingsFailure),
	}
}

// Receive implements protoactor's Actor; like the token actor, it
// contains panics so that it is never restarted with its children lost.
func (w *owner) Receive(c proto.Context) {
	defer func() {
		if r := recover(); r != nil {
			c.Logger().Error("tokenmanager: owner recovered from a panic", "panic", fmt.Sprint(r))
		}
	}()
	switch m := c.Message().(type) {
	case *proto.Started:
		w.started(c)
	case *proto.Stopping:
		w.stopping()
	case *proto.Stopped:
		w.finished()
	case *link.AttachOwner:
		c.Respond(w.o)
	case messages.Get:
		w.route(c, m.Identity, true)
	case *messages.Get:
		w.route(c, m.Identity, true)
	case messages.Refreshed:
		w.route(c, m.Identity, true)
	case *messages.Refreshed:
		w.route(c, m.Identity, true)
	case messages.Invalidate:
		w.route(c, m.Identity, false)
	case *messages.Invalidate:
		w.route(c, m.Identity, false)
	case *link.Resolve:
		w.resolve(m)
	case *settingsDone:
		w.settingsDone(c, m)
	case *idle:
		w.idle(c, m)
	case *stay:
		if ch := w.children[m.identity]; ch != nil && ch.pid.Equal(m.pid) {
			ch.asked = false
		}
	case *gone:
		w.gone(m)
	case sweepTick:
		w.sweepTick(c, m)
	}
}

func (w *owner) started(c proto.Context) {
	w.self = c.Self()
	w.root = c.ActorSystem().Root
	es := c.ActorSystem().EventStream
	w.unsubs = append(w.unsubs, w.o.Bus.Subscribe(func(ev messages.Event) { es.Publish(ev) }))
	// One goroutine calls every identity's actor-side callbacks, bound to
	// each event by the identity's token actor when it published it.
	w.unsubs = append(w.unsubs, w.o.Bus.SubscribeItems(func(it eventbus.Item) {
		if it.Callbacks != nil {
			it.Callbacks(it.Event)
		}
	}))
}

func (w *owner) stopping() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	if w.sweep != nil {
		w.sweep.Stop()
		w.sweep = nil
	}
	for _, p := range w.pending {
		w.answer(p, nil, tokenmanager.ErrClosed)
	}
	clear(w.pending)
	for _, ch := range w.children {
		w.root.Stop(ch.pid)
	}
	for _, ch := range w.children {
		<-ch.h.Done // each child's Stopping ran: its fetch is cancelled
	}
}

func (w *owner) finished() {
	w.o.Registry.Clear()
	clear(w.children)
	w.o.Live.Store(0)
	w.o.Bus.Publish(messages.Closed{})
	w.o.Bus.Close()
	close(w.o.Done)
	for _, u := range w.unsubs {
		u()
	}
}

// sendSelf delivers msg from a goroutine or timer, unless the owner has
// stopped.
func (w *owner) sendSelf(msg any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.root.Send(w.self, msg)
	}
}

// route forwards a protocol message to identity's token actor, keeping
// its sender. When the identity has none yet, start makes the owner start
// one (fetching its settings first); otherwise the message is dropped.
func (w *owner) route(c proto.Context, identity string, start bool) {
	if ch := w.children[identity]; ch != nil {
		c.Forward(ch.pid)
		return
	}
	if !start {
		return
	}
	env := envelope{msg: c.Message(), sender: c.Sender()}
	if err := tokenmanager.CheckIdentity(identity); err != nil {
		w.reply(env, err)
		return
	}
	if err := w.failedNow(identity); err != nil {
		w.reply(env, err)
		return
	}
	p := w.await(identity)
	p.envelopes = append(p.envelopes, env)
}

// resolve answers a transport's request for identity's handle.
func (w *owner) resolve(m *link.Resolve) {
	if m.Ctx.Err() != nil {
		return
	}
	if ch := w.children[m.Identity]; ch != nil {
		m.Reply <- link.Resolved{H: ch.h}
		return
	}
	if err := tokenmanager.CheckIdentity(m.Identity); err != nil {
		m.Reply <- link.Resolved{Err: err}
		return
	}
	if err := w.failedNow(m.Identity); err != nil {
		m.Reply <- link.Resolved{Err: err}
		return
	}
	p := w.await(m.Identity)
	p.resolves = slices.DeleteFunc(p.resolves, func(r *link.Resolve) bool { return r.Ctx.Err() != nil })
	p.resolves = append(p.resolves, m)
}

// failedNow returns the identity's settings failure while its backoff
// lasts.
func (w *owner) failedNow(identity string) error {
	return w.failed[identity].Blocking(w.s.Clock.Now())
}

// await returns the identity's pending entry, starting its SettingsFor
// call if there is none.
func (w *owner) await(identity string) *pending {
	p := w.pending[identity]
	if p == nil {
		p = &pending{}
		w.pending[identity] = p
		w.pendingPeak = max(w.pendingPeak, len(w.pending))
		fn := w.s.SettingsFor
		go func() {
			s, err := link.SettingsOf(fn, identity)
			w.sendSelf(&settingsDone{identity: identity, s: s, err: err})
		}()
	}
	return p
}

func (w *owner) settingsDone(c proto.Context, m *settingsDone) {
	p := w.pending[m.identity]
	delete(w.pending, m.identity)
	w.pending = shrink(w.pending, &w.pendingPeak)
	if p == nil {
		p = &pending{}
	}
	now := w.s.Clock.Now()
	if m.err != nil {
		f := w.failed[m.identity]
		if f == nil {
			f = &link.SettingsFailure{}
			w.failed[m.identity] = f
		}
		retryIn := f.Fail(now, m.err)
		w.answer(p, nil, m.err)
		w.armSweep()
		w.settingsFailed(c, m.identity, f, retryIn)
		return
	}
	delete(w.failed, m.identity)
	ch, err := w.spawn(c, m.identity, m.s, now)
	if err != nil {
		w.answer(p, nil, err)
		return
	}
	w.answer(p, ch, nil)
	w.armSweep()
	w.evictOverCap(c, ch)
}

// settingsFailed reports a failed SettingsFor call: an event, and a log
// line (to OwnerSettings.Logger, else the actor system's logger).
func (w *owner) settingsFailed(c proto.Context, identity string, f *link.SettingsFailure, retryIn time.Duration) {
	w.o.Bus.Publish(messages.SettingsFailed{Identity: identity, Err: f.Err, ConsecutiveFailures: f.N, RetryIn: retryIn})
	log := w.s.Logger
	if log == nil {
		log = c.Logger()
	}
	log.LogAttrs(context.Background(), slog.LevelError, "tokenmanager: SettingsFor failed",
		slog.String("identity", identity),
		slog.String("error", f.Err.Error()),
		slog.Int("consecutive_failures", f.N),
		slog.Duration("retry_in", retryIn))
}

// spawn starts identity's token actor and publishes its handle.
func (w *owner) spawn(c proto.Context, identity string, s tokenmanager.Settings, now time.Time) (*child, error) {
	req := w.request(s)
	s = s.WithDefaults()
	h := &link.Handle{
		Bus:      w.o.Bus,
		Done:     make(chan struct{}),
		Clock:    s.Clock,
		Identity: identity,
		Request:  req,
	}
	h.Touch(now)
	w.seq++
	name := url.PathEscape(identity) + "#" + strconv.FormatUint(w.seq, 36)
	// Spawned from the root, named under the owner, rather than as
	// protoactor children: a parent's child set keeps stale PIDs of
	// stopped children, and a PID caches its process, so passivated
	// identities would never be freed. The owner stops them itself.
	// The producer hands out this one actor: the token actor contains its
	// own panics, so protoactor never restarts it for a fresh one.
	a := newChild(s, h, w.self)
	props := proto.PropsFromProducer(func() proto.Actor { return a }, lockfreeMailbox)
	pid, err := w.root.SpawnNamed(props, w.self.Id+"/"+name)
	if err != nil {
		return nil, fmt.Errorf("tokenmanager: starting identity %q: %w", identity, err)
	}
	h.PID = pid
	ch := &child{pid: pid, h: h}
	w.children[identity] = ch
	w.peak = max(w.peak, len(w.children))
	w.o.Registry.Store(identity, h)
	w.o.Live.Store(int64(len(w.children)))
	return ch, nil
}

// lockfreeMailbox is the owner's and the identities' mailbox: a lock-free
// queue allocated as it grows and freed as it drains, where the default
// preallocates a ring per actor and never gives back what a burst grew.
var lockfreeMailbox = proto.WithMailbox(proto.UnboundedLockfree())

// request returns the request side of s (as SettingsFor gave it, before
// defaults). Settings that differ only in their provider and timing share
// one: with no Formatter and no callbacks, the request side is a handful
// of comparable values.
func (w *owner) request(s tokenmanager.Settings) *link.Request {
	if s.Formatter != nil || s.OnAuthFail != nil || s.OnRecoveryTry != nil || s.OnRecoveryAbort != nil ||
		s.OnTokenRefresh != nil || s.OnTokenRequestFail != nil || s.OnTokenTryThreshold != nil {
		return link.NewRequest(s, link.BothSides)
	}
	key := requestKey{
		header: s.Header, statuses: fmt.Sprint(s.RefreshOnStatus), tries: s.MaxRecoveryTries,
		withToken: s.AddTokenToLogs, insecure: s.AllowInsecureHTTP, wait: s.WaitTimeout,
	}
	r := w.requests[key]
	if r == nil {
		if w.requests == nil {
			w.requests = make(map[requestKey]*link.Request)
		}
		r = link.NewRequest(s, link.BothSides)
		w.requests[key] = r
	}
	return r
}

// requestKey is what a shared request side is looked up by.
type requestKey struct {
	header, statuses string
	tries            int
	withToken        bool
	insecure         bool
	wait             time.Duration
}

// answer replies to everyone pending: with the child, or with err.
func (w *owner) answer(p *pending, ch *child, err error) {
	for _, r := range p.resolves {
		if r.Ctx.Err() == nil {
			if ch != nil {
				r.Reply <- link.Resolved{H: ch.h}
			} else {
				r.Reply <- link.Resolved{Err: err}
			}
		}
	}
	for _, env := range p.envelopes {
		if ch != nil {
			w.root.RequestWithCustomSender(ch.pid, env.msg, env.sender)
		} else {
			w.reply(env, err)
		}
	}
}

// reply answers a Get that cannot be served with err; other messages
// have no reply.
func (w *owner) reply(env envelope, err error) {
	switch env.msg.(type) {
	case messages.Get, *messages.Get:
		if env.sender != nil {
			w.root.Send(env.sender, &messages.TokenResult{Err: err})
		}
	}
}

// idle takes a child that agreed to stop out of service and poisons it:
// it forwards what is already in its mailbox back here.
func (w *owner) idle(c proto.Context, m *idle) {
	ch := w.children[m.identity]
	if ch == nil || !ch.pid.Equal(m.pid) {
		return
	}
	w.forget(m.identity, ch)
	c.Poison(ch.pid)
	w.o.Bus.Publish(messages.IdentityPassivated{Identity: m.identity, Evicted: m.evicted})
}

// gone forgets a child that stopped other than by passivation (someone
// stopped it by its PID).
func (w *owner) gone(m *gone) {
	if ch := w.children[m.identity]; ch != nil && ch.pid.Equal(m.pid) {
		w.forget(m.identity, ch)
	}
}

// forget removes a child from the owner's books. Go maps never shrink,
// so once the children are down to a quarter of their peak the map is
// rebuilt: passivated identities leave no memory behind.
func (w *owner) forget(identity string, ch *child) {
	delete(w.children, identity)
	w.o.Registry.CompareAndDelete(identity, ch.h)
	w.o.Live.Store(int64(len(w.children)))
	w.children = shrink(w.children, &w.peak)
}

// shrink returns m, or a copy of it once it is down to a quarter of its
// peak: Go maps never give back their buckets.
func shrink[K comparable, V any](m map[K]V, peak *int) map[K]V {
	*peak = max(*peak, len(m))
	if *peak < 64 || len(m) >= *peak/4 {
		return m
	}
	*peak = len(m)
	n := make(map[K]V, len(m)) // maps.Clone would keep the buckets
	maps.Copy(n, m)
	return n
}

// armSweep arms the idle sweep, if it is not armed, while there is
// something to sweep.
func (w *owner) armSweep() {
	if w.sweep != nil || (len(w.children) == 0 && len(w.failed) == 0) {
		return
	}
	w.sweepSeq++
	seq := w.sweepSeq
	w.sweep = w.s.Clock.AfterFunc(w.s.IdleTimeout/2, func() { w.sendSelf(sweepTick{seq: seq}) })
}

// sweepTick asks every child unused for IdleTimeout to passivate, and
// forgets settings failures whose backoff is long over.
func (w *owner) sweepTick(c proto.Context, m sweepTick) {
	if m.seq != w.sweepSeq {
		return
	}
	w.sweep = nil
	now := w.s.Clock.Now()
	for _, ch := range w.children {
		if last := lastUse(ch); !ch.asked && now.Sub(last) >= w.s.IdleTimeout {
			ch.asked = true
			c.Send(ch.pid, &passivate{cutoff: last})
		}
	}
	for id, f := range w.failed {
		if now.Sub(f.NotBefore) >= w.s.IdleTimeout {
			delete(w.failed, id)
		}
	}
	w.armSweep()
}

func lastUse(ch *child) time.Time { return ch.h.LastUse() } // touched at spawn

// evictOverCap asks the least recently used tenth of the children (at
// least one) to passivate when there are more than MaxIdentities; busy
// ones refuse. The newest child is spared.
func (w *owner) evictOverCap(c proto.Context, newest *child) {
	if w.s.MaxIdentities == 0 {
		return
	}
	type aged struct {
		ch   *child
		last time.Time
	}
	all := make([]aged, 0, len(w.children))
	for _, ch := range w.children {
		if ch != newest && !ch.asked {
			all = append(all, aged{ch, lastUse(ch)})
		}
	}
	staying := len(all) + 1 // the ones not already asked to go, and the newest
	if staying <= w.s.MaxIdentities {
		return
	}
	n := min(max(staying-w.s.MaxIdentities, w.s.MaxIdentities/10, 1), len(all))
	slices.SortFunc(all, func(a, b aged) int { return cmp.Compare(a.last.UnixNano(), b.last.UnixNano()) })
	for _, a := range all[:n] {
		a.ch.asked = true
		c.Send(a.ch.pid, &passivate{cutoff: a.last, evicted: true})
	}
}
