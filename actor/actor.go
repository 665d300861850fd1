package actor

import (
	"fmt"
	"log/slog"
	"sync"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/internal/request"
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

// Timer ticks the token actor sends itself.
type (
	refreshTick struct{ gen uint64 }
	retryTick   struct{ seq uint64 }
)

// tokenActor is the protoactor host of one token's state: it turns
// messages into transitions and carries out their effects.
type tokenActor struct {
	st  *state
	clk clock.Clock
	cb  func(messages.Event) // the actor-side callbacks

	self *proto.PID
	root *proto.RootContext
	log  *slog.Logger // Settings.Logger, else the actor system's

	mu      sync.Mutex // guards stopped: goroutines send to self only while false
	stopped bool
	unsubs  []func()

	refreshTimer *clock.Timer
	retryTimer   *clock.Timer
}

func newTokenActor(s tokenmanager.Settings) *tokenActor {
	return &tokenActor{
		st:  newState(s, standalonePolicy),
		clk: s.Clock,
		cb:  request.Callbacks(s, request.ActorSide),
	}
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
	st := a.st
	switch m := c.Message().(type) {
	case *proto.Started:
		a.started(c)
	case *proto.Stopping:
		a.stopping()
	case messages.Get, *messages.Get:
		if sender := c.Sender(); sender != nil {
			a.run(st.get(a.clk.Now(), sender), c.Respond)
		}
	case messages.Invalidate:
		a.run(st.invalidate(a.clk.Now(), m.AccessToken, -1), nil)
	case *messages.Invalidate:
		a.run(st.invalidate(a.clk.Now(), m.AccessToken, -1), nil)
	case messages.Refreshed:
		a.run(st.pushed(a.clk.Now(), m), nil)
	case *messages.Refreshed:
		a.run(st.pushed(a.clk.Now(), *m), nil)
	case *protocol.Rejected:
		a.run(st.invalidate(a.clk.Now(), m.AccessToken, m.MaxTries), nil)
	case *protocol.Served:
		st.endStreak()
	case *protocol.Wait:
		a.run(st.wait(a.clk.Now(), m), func(res any) { reply(m, res.(*messages.TokenResult)) })
	case *protocol.Attach:
		c.Respond(&st.h)
	case *fetchDone:
		a.run(st.fetched(a.clk.Now(), m), nil)
	case refreshTick:
		a.run(st.refreshDue(a.clk.Now(), m.gen), nil)
	case *protocol.RefreshNow:
		a.run(st.refreshDue(a.clk.Now(), m.Gen), nil)
	case retryTick:
		a.run(st.retryDue(a.clk.Now(), m.seq), nil)
	}
}

// run carries out a transition's effects; respond answers the sender of
// the message handled.
func (a *tokenActor) run(e effects, respond func(any)) {
	if e.reply != nil && respond != nil {
		respond(e.reply)
	}
	if e.stopRefresh {
		stopTimer(&a.refreshTimer)
	}
	if e.stopRetry {
		stopTimer(&a.retryTimer)
	}
	switch e.arm {
	case refreshTimer:
		stopTimer(&a.refreshTimer)
		gen := e.armSeq
		a.refreshTimer = a.clk.AfterFunc(e.armIn, func() { a.sendSelf(refreshTick{gen: gen}) })
	case retryTimer:
		stopTimer(&a.retryTimer)
		seq := e.armSeq
		a.retryTimer = a.clk.AfterFunc(e.armIn, func() { a.sendSelf(retryTick{seq: seq}) })
	}
	if e.fetch {
		a.st.launch(nil, func(d *fetchDone) { a.sendSelf(d) })
	}
	answer(a.root, e)
	if e.panicked != nil {
		a.st.logPanic(a.log, e.panicked)
	}
	for _, ev := range e.events {
		if ev != nil {
			a.st.publish(ev)
		}
	}
}

// answer sends e.answer to the askers and waits e hands over.
func answer(root *proto.RootContext, e effects) {
	for _, pid := range e.askers {
		root.Send(pid, e.answer)
	}
	for _, w := range e.waits {
		reply(w, e.answer)
	}
}

// reply answers a wait without ever blocking the host.
func reply(w *protocol.Wait, res *messages.TokenResult) {
	select {
	case w.Reply <- res:
	default:
	}
}

func stopTimer(t **clock.Timer) {
	if *t != nil {
		(*t).Stop()
		*t = nil
	}
}

func (a *tokenActor) started(c proto.Context) {
	a.self = c.Self()
	a.root = c.ActorSystem().Root
	a.log = a.st.s.Logger
	if a.log == nil {
		a.log = c.Logger()
	}
	h := &a.st.h
	if a.cb != nil {
		a.unsubs = append(a.unsubs, h.Bus.Subscribe(a.cb))
	}
	es := c.ActorSystem().EventStream
	a.unsubs = append(a.unsubs, h.Bus.Subscribe(func(ev messages.Event) { es.Publish(ev) }))
}

func (a *tokenActor) stopping() {
	a.mu.Lock()
	a.stopped = true
	a.mu.Unlock()
	a.run(a.st.stop(&messages.TokenResult{Err: tokenmanager.ErrClosed}), nil)
	stopTimer(&a.refreshTimer)
	stopTimer(&a.retryTimer)
	h := &a.st.h
	close(h.Done)
	h.Bus.Publish(messages.Closed{})
	h.Bus.Close()
	for _, u := range a.unsubs {
		u()
	}
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
