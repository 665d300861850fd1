package actor

import (
	"fmt"

	proto "github.com/asynkron/protoactor-go/actor"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// childActor is the protoactor host of one owner identity's state.
type childActor struct {
	tokenActor
	owner       *proto.PID
	passivating bool // told the owner it is idle; reroutes what still comes
}

// newChild returns the token actor of one of an owner's identities, with
// the handle the owner publishes for it.
func newChild(s tokenmanager.Settings, h *link.Handle, owner *proto.PID) *childActor {
	return &childActor{tokenActor: tokenActor{st: newState(s, h, hosted), clk: s.Clock}, owner: owner}
}

// Receive implements protoactor's Actor: the token actor's, except that
// the child can be passivated and its events go to the owner's bus.
func (a *childActor) Receive(c proto.Context) {
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
		a.self = c.Self()
		a.root = c.ActorSystem().Root
		a.log = a.st.s.Logger
		if a.log == nil {
			a.log = c.Logger()
		}
	case *proto.Stopping:
		a.stopping(c)
	case *passivate:
		a.passivate(c, m)
	default:
		a.tokenActor.Receive(c)
	}
}

func (a *childActor) stopping(c proto.Context) {
	a.mu.Lock()
	a.stopped = true
	a.mu.Unlock()
	closed := &messages.TokenResult{Err: tokenmanager.ErrClosed}
	if a.passivating {
		closed = &messages.TokenResult{Err: link.ErrPassivated} // ask the owner again
	}
	a.run(a.st.stop(closed), nil)
	stopTimer(&a.refreshTimer)
	stopTimer(&a.retryTimer)
	close(a.st.h.Done)
	if !a.passivating {
		c.Send(a.owner, &gone{identity: a.st.h.Identity, pid: c.Self()})
	}
}

// passivate stops taking work if the actor is idle, and tells its owner,
// which then poisons it. It refuses while it is fetching, waited on, or
// was used after m.cutoff.
func (a *childActor) passivate(c proto.Context, m *passivate) {
	if !a.st.idle(m.cutoff) {
		c.Send(a.owner, &stay{identity: a.st.h.Identity, pid: c.Self()})
		return
	}
	a.passivating = true
	a.st.h.SetPassivated()
	c.Send(a.owner, &idle{identity: a.st.h.Identity, pid: c.Self(), evicted: m.evicted})
}

// reroute handles a message that reaches a passivating child: protocol
// messages go back to the owner, which starts the identity anew; waits
// are dropped (their RoundTrippers see the handle passivated and ask the
// owner again). It reports whether it handled the message.
func (a *childActor) reroute(c proto.Context) bool {
	switch c.Message().(type) {
	case messages.Get, *messages.Get, messages.Invalidate, *messages.Invalidate,
		messages.Refreshed, *messages.Refreshed:
		c.Forward(a.owner)
		return true
	case *link.Wait, *link.Rejected, *link.Served, *link.RefreshNow, *passivate,
		refreshTick, retryTick: // no fetch starts on the way out
		return true
	}
	return false
}
