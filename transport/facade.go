package transport

import (
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"

	"github.com/go-tokenmanager/tokenmanager/internal/eventbus"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// facade is what RoundTripper and MultiRoundTripper share beyond the
// request core: the actor they are attached to, the event plumbing and
// Close.
type facade struct {
	core
	system   *proto.ActorSystem
	pid      *proto.PID    // the token actor, or the owner
	owned    bool          // built by New or NewMulti: Close stops pid and system
	actorBus *eventbus.Bus // the actor's (or owner's) events
	unsubs   []func()
	ended    atomic.Bool // messages.Closed was published
}

// newSystem returns an actor system that logs to logger (nil: nowhere).
func newSystem(logger *slog.Logger) *proto.ActorSystem {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return proto.NewActorSystem(
		proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger { return logger }),
		proto.WithDeadLetterThrottleInterval(10*time.Millisecond),
	)
}

// applyOptions returns the options with their defaults.
func applyOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	if o.base == nil {
		o.base = http.DefaultTransport
	}
	return o
}

// ask asks the actor at pid for what it shares (msg is link.Attach or
// link.AttachOwner); kind names the constructor it should come from.
func ask[T any](system *proto.ActorSystem, pid *proto.PID, msg any, kind string) (T, error) {
	var zero T
	res, err := system.Root.RequestFuture(pid, msg, attachTimeout).Result()
	if err != nil {
		return zero, fmt.Errorf("tokenmanager: actor %v did not answer (%w); is it alive and spawned from %s?", pid, err, kind)
	}
	v, ok := res.(T)
	if !ok {
		return zero, fmt.Errorf("tokenmanager: actor %v answered %T; was it spawned from %s?", pid, res, kind)
	}
	return v, nil
}

// init sets f up over the actor's bus: the actor's events reach f's
// subscribers; request-side events go to callbacks (when set) and, for
// an actor f does not own, to the system's EventStream.
func (f *facade) init(system *proto.ActorSystem, pid *proto.PID, actorBus *eventbus.Bus, buffer int, owned bool, o options, callbacks func(messages.Event)) {
	f.core = core{base: o.base, root: system.Root, bus: eventbus.New(buffer), done: make(chan struct{})}
	f.system, f.pid, f.owned, f.actorBus = system, pid, owned, actorBus
	f.unsubs = append(f.unsubs, actorBus.Subscribe(func(ev messages.Event) {
		if _, ok := ev.(messages.Closed); ok {
			f.publishClosed() // once, whether the actor or Close says it first
			return
		}
		f.bus.Publish(ev)
	}))
	if callbacks != nil {
		f.bus.Subscribe(callbacks)
	}
	if !owned {
		es := system.EventStream
		f.bus.Subscribe(func(ev messages.Event) {
			if link.IsRequestSide(ev) {
				es.Publish(ev)
			}
		})
	}
}

func (f *facade) subscribe(fn func(messages.Event)) func() {
	if fn == nil || f.closed.Load() {
		return func() {}
	}
	return f.bus.Subscribe(fn)
}

func (f *facade) dropped() uint64 { return f.bus.Dropped() + f.actorBus.Dropped() }

// close stops what f owns; what names the actor in errors.
func (f *facade) close(what string) error {
	if !f.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(f.done)
	var err error
	if f.owned {
		if e := f.root.StopFuture(f.pid).Wait(); e != nil {
			err = fmt.Errorf("tokenmanager: stopping the %s: %w", what, e)
		}
		f.system.Shutdown()
		f.actorBus.Shutdown(closeGrace) // the actor's last events reach f.bus
	}
	for _, u := range f.unsubs {
		u()
	}
	f.publishClosed()
	f.bus.Shutdown(closeGrace)
	return err
}

// publishClosed publishes messages.Closed, at most once.
func (f *facade) publishClosed() {
	if f.ended.CompareAndSwap(false, true) {
		f.bus.Publish(messages.Closed{})
	}
}
