// Package core is the request side every facade shares (the HTTP
// RoundTrippers, the gRPC credentials and interceptors, the token API):
// attaching an identity's token, waiting for one on a miss with one shared
// wait per identity, and recovering from rejected tokens. It is the only
// copy of that logic; facades add their protocol around it.
package core

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/eventbus"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/internal/request"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// closeGrace bounds how long Close lets subscribers work through the
// events already queued for them.
const closeGrace = time.Second

// Core is one facade's request side: the token actor (or owner) it is
// attached to, its events, and Close. It is safe for concurrent use by
// multiple goroutines once Init has run.
type Core struct {
	// Root sends to the actors.
	Root *proto.RootContext
	// Bus carries the facade's events: the actor's, forwarded, and the
	// request side's own.
	Bus *eventbus.Bus
	// Resolve finds an identity's binding again once its token actor was
	// passivated; nil for a token actor of its own.
	Resolve func(ctx context.Context, identity string) (Binding, error)

	closed   atomic.Bool
	done     chan struct{} // closed by Close
	system   *proto.ActorSystem
	pid      *proto.PID    // the token actor, or the owner
	owned    bool          // Close stops pid and system
	actorBus *eventbus.Bus // the actor's (or owner's) events
	unsubs   []func()
	ended    atomic.Bool // messages.Closed was published
	// failed is closed, and replaced, when a fetch fails (any identity
	// of c): it wakes the waiters of TokenOrFailure.
	failed atomic.Pointer[chan struct{}]
}

// Binding is what the core needs of one identity: its token actor's
// handle and address, its request settings, and its request state.
type Binding struct {
	H   *link.Handle
	PID *proto.PID
	Req *request.Request
	St  *request.State
	// First, when set, is the identity's first token, which the request
	// that started the identity got before the owner cached it
	// (link.Owner.Start): the binding's first token, taken once.
	First *Issued
}

// BindingOf returns the binding of an owner's identity, whose handle
// carries its request side.
func BindingOf(h *link.Handle) Binding {
	return Binding{H: h, PID: h.PID, Req: h.Request, St: &h.State}
}

// ErrPassivated ends a wait whose token actor was stopped for being idle;
// the core resolves the identity again.
var ErrPassivated = protocol.ErrPassivated

// Init sets c up over the actor at pid and its bus: the actor's events
// reach c's subscribers; request-side events go to callbacks (when set)
// and, for an actor c does not own, to the system's EventStream.
func (c *Core) Init(system *proto.ActorSystem, pid *proto.PID, actorBus *eventbus.Bus, buffer int, owned bool, callbacks func(messages.Event)) {
	c.Root, c.Bus, c.done = system.Root, eventbus.New(buffer), make(chan struct{})
	c.system, c.pid, c.owned, c.actorBus = system, pid, owned, actorBus
	ch := make(chan struct{})
	c.failed.Store(&ch)
	c.unsubs = append(c.unsubs, actorBus.Subscribe(func(ev messages.Event) {
		switch ev.(type) {
		case messages.Closed:
			c.publishClosed() // once, whether the actor or Close says it first
			return
		case messages.TokenRequestFailed:
			next := make(chan struct{})
			close(*c.failed.Swap(&next))
		}
		c.Bus.Publish(ev)
	}))
	if callbacks != nil {
		c.Bus.Subscribe(callbacks)
	}
	if !owned {
		es := system.EventStream
		c.Bus.Subscribe(func(ev messages.Event) {
			if request.IsRequestSide(ev) {
				es.Publish(ev)
			}
		})
	}
}

// PID returns the actor c is attached to.
func (c *Core) PID() *proto.PID { return c.pid }

// Closed reports whether Close was called.
func (c *Core) Closed() bool { return c.closed.Load() }

// Done is closed by Close.
func (c *Core) Done() <-chan struct{} { return c.done }

// Subscribe adds an event subscriber; see transport.RoundTripper.Subscribe.
func (c *Core) Subscribe(fn func(messages.Event)) func() {
	if fn == nil || c.closed.Load() {
		return func() {}
	}
	return c.Bus.Subscribe(fn)
}

// Dropped counts events dropped for full subscriber queues.
func (c *Core) Dropped() uint64 { return c.Bus.Dropped() + c.actorBus.Dropped() }

// Close stops what c owns; what names the actor in errors. It is
// idempotent.
func (c *Core) Close(what string) error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(c.done)
	var err error
	if c.owned {
		if e := c.Root.StopFuture(c.pid).Wait(); e != nil {
			err = fmt.Errorf("tokenmanager: stopping the %s: %w", what, e)
		}
		c.system.Shutdown()
		c.actorBus.Shutdown(closeGrace) // the actor's last events reach c.Bus
	}
	for _, u := range c.unsubs {
		u()
	}
	c.publishClosed()
	c.Bus.Shutdown(closeGrace)
	return err
}

// publishClosed publishes messages.Closed, at most once.
func (c *Core) publishClosed() {
	if c.ended.CompareAndSwap(false, true) {
		c.Bus.Publish(messages.Closed{})
	}
}

// Fresh reports whether snap holds a valid token, and if so counts it as
// used: it records the use (for passivation) and, past the snapshot's
// refresh time, asks an actor that refreshes on use for the refresh.
func (c *Core) Fresh(b Binding, snap *link.Snapshot) bool {
	now := b.H.Clock.Now()
	if !snap.FreshAt(now) {
		return false
	}
	b.H.Touch(now)
	if snap.AskRefresh(now) {
		c.Root.Send(b.PID, &protocol.RefreshNow{H: b.H, Gen: snap.Gen})
	}
	return true
}

// Served tells the actor a token was accepted, when it is counting
// rejected new tokens (see protocol.Served); otherwise it costs one atomic
// load.
func (c *Core) Served(b Binding) {
	if b.H.Streak() {
		c.Root.Send(b.PID, &protocol.Served{H: b.H})
	}
}

// HeaderValue returns the header value for tok: "DPoP " + the token for
// a DPoP-bound token (which needs b's DPoP key), else b's Formatter's,
// reusing the last result when the token is the same, so a cached token
// costs no allocation. A panicking Formatter is contained.
func (c *Core) HeaderValue(b Binding, tok tokenmanager.Token) (v string, err error) {
	token := tok.AccessToken
	if hv := b.St.Header.Load(); hv != nil && hv.Token == token {
		return hv.Value, nil
	}
	if tokenmanager.IsDPoP(tok) {
		if b.Req.DPoP == nil {
			return "", errDPoPWithoutKey
		}
		v = DPoPScheme + token
		b.St.Header.Store(&request.HeaderValue{Token: token, Value: v})
		return v, nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = errors.New("tokenmanager: Formatter panicked")
		}
	}()
	v = b.Req.Formatter(token)
	b.St.Header.Store(&request.HeaderValue{Token: token, Value: v})
	return v, nil
}

// DPoPScheme starts the header value of a DPoP-bound token.
const DPoPScheme = "DPoP "

// errDPoPWithoutKey fails a request whose token is DPoP-bound when the
// request side has no key to prove it.
var errDPoPWithoutKey = tokenmanager.Permanent(errors.New("tokenmanager: the token is DPoP-bound (token_type DPoP) but the request side has no DPoP key; set Settings.DPoP"))

// Proves reports whether a call carrying header value v needs a DPoP
// proof: its token is DPoP-bound. A custom Formatter cannot be combined
// with DPoP, so only DPoP-bound tokens have values starting with
// DPoPScheme.
func Proves(b Binding, v string) bool {
	return b.Req.DPoP != nil && len(v) > len(DPoPScheme) && v[:len(DPoPScheme)] == DPoPScheme
}

// Attach returns the token a call should carry and its header value:
// the cached one (the fast path), else the actor's answer, waiting at most
// until ctx ends. b is resolved again if its actor was passivated.
func (c *Core) Attach(ctx context.Context, b *Binding) (access, value string, err error) {
	return c.attach(ctx, b, false)
}

func (c *Core) attach(ctx context.Context, b *Binding, failFast bool) (access, value string, err error) {
	if c.Closed() {
		return "", "", tokenmanager.ErrClosed
	}
	snap := b.H.Snapshot()
	var tok tokenmanager.Token
	if b.First == nil && c.Fresh(*b, snap) {
		tok = snap.Token
		if b.Req == b.H.Request {
			value = snap.Header
		}
	} else {
		iss, err := c.token(ctx, b, "", failFast)
		if err != nil {
			return "", "", err
		}
		tok = iss.Token
	}
	if value == "" {
		if value, err = c.HeaderValue(*b, tok); err != nil {
			return "", "", err
		}
	}
	return tok.AccessToken, value, nil
}

// Issued is a token with its expiry on the manager's clock (zero when it
// has none).
type Issued struct {
	Token     tokenmanager.Token
	ExpiresAt time.Time
}

// Facade is what a protocol facade (gRPC) needs of a token manager built
// by package transport: its core, and the binding for a call's context.
type Facade struct {
	Core *Core
	Bind func(ctx context.Context) (Binding, error)
}

var facadeOf func(m any) (Facade, bool)

// RegisterFacades lets package transport tell other facades how to reach
// its managers' cores, without exporting them.
func RegisterFacades(f func(m any) (Facade, bool)) { facadeOf = f }

// FacadeOf returns m's facade, when m is a manager of package transport.
func FacadeOf(m any) (Facade, bool) {
	if facadeOf == nil {
		return Facade{}, false
	}
	return facadeOf(m)
}
