package actor

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/backoff"
	"github.com/go-tokenmanager/tokenmanager/internal/eventbus"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/internal/registry"
	"github.com/go-tokenmanager/tokenmanager/internal/request"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// NewOwnerProps validates settings and returns props for an owner of many
// identities: one actor that hosts the token state of each identity (the
// same state machine as the token actor [NewProps] makes), started on
// first use, addressed by the Identity field of [messages.Get],
// [messages.Invalidate] and [messages.Refreshed], and dropped when it has
// been idle for settings.IdleTimeout. An identity is no actor of its
// own: it has no PID and no name, and one that was dropped leaves nothing
// behind.
//
// Under an owner, a token is refreshed early only when it is used after
// its refresh time, so identities nobody uses never call their token
// endpoint, and an idle identity holds no goroutine and no timer (a
// retry timer exists only while a request waits through a failure).
// Provider calls run off the owner, on worker goroutines it keeps parked
// for a second after use (at most 4 once a burst is over), and report
// back to the owner, so one identity's slow provider never holds up
// another. The first request of an identity, made through a
// transport.MultiRoundTripper, gets the identity's first token straight
// from the worker that fetched it, as the owner caches it. Events
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
	d := newWorkers()
	return proto.PropsFromProducer(func() proto.Actor { return newOwner(s, d) }, lockfreeMailbox, proto.WithDispatcher(d)), nil
}

// lockfreeMailbox is the owner's mailbox: a lock-free queue allocated as
// it grows and freed as it drains, where the default preallocates a ring
// and never gives back what a burst grew.
var lockfreeMailbox = proto.WithMailbox(proto.UnboundedLockfree())

// Messages the owner sends itself, from goroutines and timers.
type (
	settingsDone struct {
		identity string
		s        tokenmanager.Settings
		err      error
		// first is the outcome of the identity's first fetch, run with
		// SettingsFor when what started it wants a token, from
		// firstAt on, arrived at firstDone (on the identity's clock);
		// nil otherwise.
		first     *fetchDone
		firstAt   time.Time
		firstDone time.Time
		// counted: the identity is already counted in link.Owner.Live
		// (see owner.report).
		counted bool
	}
	sweepTick struct{ seq uint64 }
	// hostedFetch is the outcome of an identity's fetch; x says whose.
	hostedFetch struct {
		x *hosted
		d *fetchDone
	}
	// hostedRetry is an identity's retry timer firing.
	hostedRetry struct {
		x   *hosted
		seq uint64
	}
)

// The owner's own messages are not logged when they end up as dead
// letters (sent by a goroutine as the owner stops).
func (*settingsDone) IgnoreDeadLetterLogging() {}
func (*hostedFetch) IgnoreDeadLetterLogging()  {}
func (*hostedRetry) IgnoreDeadLetterLogging()  {}

// owner hosts the identities' states. Every field is owned by the
// goroutine running Receive, except: stopped, requests, pending and
// early are under mu (requests starting an identity add to pending: see start);
// failed is changed under mu, so that they may read it, and read by
// Receive without it.
type owner struct {
	s   tokenmanager.OwnerSettings
	o   *link.Owner
	reg *registry.Registry[*hosted] // o.Index

	self *proto.PID
	root *proto.RootContext
	log  *slog.Logger // the actor system's: for identities without Settings.Logger

	mu      sync.Mutex // goroutines send to self only while stopped is false
	stopped bool
	unsubs  []func()
	// ctx ends when the owner stops: first fetches (run with
	// SettingsFor, before their identity is hosted) are cancelled.
	ctx    context.Context
	cancel context.CancelFunc
	// workers runs the owner's mailbox; it counts the owners running.
	workers *workers

	// live counts the identities hosted, each in reg (their only
	// index: a passivated identity leaves nothing behind).
	live     int
	pending  map[string]*pending                 // SettingsFor running
	failed   map[string]*backoff.SettingsFailure // SettingsFor failed; not called again before NotBefore
	requests map[requestKey]*request.Request
	shared   map[fetchSettings]*fetchSettings
	// pendingPeak is the most identities pending since the map was last
	// rebuilt.
	pendingPeak int
	// early counts the identities requests started (start) whose
	// settingsDone is not handled yet (under mu).
	early    int
	sweep    *clock.Timer // armed while there are identities or failures
	sweepSeq uint64
}

func newOwner(s tokenmanager.OwnerSettings, d *workers) *owner {
	reg := registry.New[*hosted]()
	ctx, cancel := context.WithCancel(context.Background())
	w := &owner{
		ctx:     ctx,
		cancel:  cancel,
		workers: d,

		s:   s,
		reg: reg,
		o:   &link.Owner{Index: reg, Bus: eventbus.New(s.EventBuffer), Done: make(chan struct{})},

		pending: make(map[string]*pending),
		failed:  make(map[string]*backoff.SettingsFailure),
	}
	w.o.Start = w.start
	return w
}

// Receive implements protoactor's Actor; like the token actor, it
// contains panics so that it is never restarted with its identities lost.
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
	case *protocol.AttachOwner:
		c.Respond(w.o)
	case messages.Get, *messages.Get, messages.Refreshed, *messages.Refreshed,
		messages.Invalidate, *messages.Invalidate:
		w.route(envelope{msg: m, sender: c.Sender()})
	case *protocol.Resolve:
		w.resolve(m)
	case *protocol.Wait:
		if x := w.lookup(m.H); x != nil {
			w.run(x, x.st.wait(x.st.h.Clock.Now(), m), nil, m)
		} else {
			reply(m, &messages.TokenResult{Err: protocol.ErrPassivated}) // ask the owner again
		}
	case *protocol.Rejected:
		if x := w.lookup(m.H); x != nil {
			w.run(x, x.st.invalidate(x.st.h.Clock.Now(), m.AccessToken, m.MaxTries), nil, nil)
		}
	case *protocol.Served:
		if x := w.lookup(m.H); x != nil {
			x.st.endStreak()
		}
	case *protocol.RefreshNow:
		if x := w.lookup(m.H); x != nil {
			w.run(x, x.st.refreshDue(x.st.h.Clock.Now(), m.Gen), nil, nil)
		}
	case *hostedFetch:
		if w.hosts(m.x) {
			w.run(m.x, m.x.st.fetched(m.x.st.h.Clock.Now(), m.d), nil, nil)
		}
	case *hostedRetry:
		if w.hosts(m.x) {
			m.x.retry = nil
			w.run(m.x, m.x.st.retryDue(m.x.st.h.Clock.Now(), m.seq), nil, nil)
		}
	case *settingsDone:
		w.settingsDone(c, m)
	case sweepTick:
		w.sweepTick(m)
	}
}

func (w *owner) started(c proto.Context) {
	w.self = c.Self()
	w.root = c.ActorSystem().Root
	w.log = c.Logger()
	w.workers.start()
	es := c.ActorSystem().EventStream
	w.unsubs = append(w.unsubs, w.o.Bus.Subscribe(func(ev messages.Event) { es.Publish(ev) }))
	// One goroutine calls every identity's actor-side callbacks, bound to
	// each event when its state published it.
	w.unsubs = append(w.unsubs, w.o.Bus.SubscribeItems(func(it eventbus.Item) {
		if it.Callbacks != nil {
			it.Callbacks(it.Event)
		}
	}))
}

func (w *owner) stopping() {
	w.mu.Lock()
	w.stopped = true
	left := w.pending
	w.pending = make(map[string]*pending)
	w.mu.Unlock()
	w.cancel()
	if w.sweep != nil {
		w.sweep.Stop()
		w.sweep = nil
	}
	for _, p := range left {
		w.answer(p, nil, tokenmanager.ErrClosed)
	}
	closed := &messages.TokenResult{Err: tokenmanager.ErrClosed}
	w.reg.Range(func(x *hosted) {
		w.run(x, x.st.stop(closed), nil, nil) // cancels its fetch
	})
}

func (w *owner) finished() {
	w.reg.Clear()
	w.live = 0
	w.o.Live.Store(0)
	w.o.Bus.Publish(messages.Closed{})
	w.o.Bus.Close()
	close(w.o.Done)
	w.workers.finish()
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
