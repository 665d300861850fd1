package testutil

import (
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// NewSystem returns a [QuietSystem] that is shut down when the test ends
// (after cleanups registered later, such as stopping its actors).
func NewSystem(t testing.TB) *proto.ActorSystem {
	t.Helper()
	system := QuietSystem()
	t.Cleanup(system.Shutdown)
	return system
}

// QuietSystem returns an actor system that prints nothing and whose
// dead-letter throttle does not outlive the test. The caller shuts it
// down, once.
func QuietSystem() *proto.ActorSystem {
	return proto.NewActorSystem(
		proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }),
		proto.WithDeadLetterThrottleInterval(time.Millisecond),
	)
}

// NewRT builds a RoundTripper with transport.New over base (nil: the
// default) and closes it when the test ends, failing the test if Close
// fails.
func NewRT(t testing.TB, s tokenmanager.Settings, base http.RoundTripper, opts ...transport.Option) *transport.RoundTripper {
	t.Helper()
	if base != nil {
		opts = append([]transport.Option{transport.WithBase(base)}, opts...)
	}
	rt, err := transport.New(s, opts...)
	if err != nil {
		t.Fatalf("transport.New: %v", err)
	}
	closeAtEnd(t, rt)
	return rt
}

// NewMulti builds a MultiRoundTripper with transport.NewMulti over base
// (nil: the default) and closes it when the test ends, failing the test
// if Close fails.
func NewMulti(t testing.TB, s tokenmanager.OwnerSettings, base http.RoundTripper, opts ...transport.Option) *transport.MultiRoundTripper {
	t.Helper()
	if base != nil {
		opts = append([]transport.Option{transport.WithBase(base)}, opts...)
	}
	m, err := transport.NewMulti(s, opts...)
	if err != nil {
		t.Fatalf("transport.NewMulti: %v", err)
	}
	closeAtEnd(t, m)
	return m
}

// closeAtEnd closes c when the test ends, failing the test if Close fails.
func closeAtEnd(t testing.TB, c interface{ Close() error }) {
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

// NewMockRT is NewRT on a new mock clock, which it returns; s.Clock must
// be nil.
func NewMockRT(t testing.TB, s tokenmanager.Settings, base http.RoundTripper, opts ...transport.Option) (*transport.RoundTripper, *clock.Mock) {
	t.Helper()
	if s.Clock != nil {
		t.Fatal("NewMockRT: Settings.Clock is set")
	}
	mock := clock.NewMock()
	s.Clock = mock
	return NewRT(t, s, base, opts...), mock
}

// Recorder keeps every event a subscriber saw. It is safe for concurrent
// use.
type Recorder struct {
	mu     sync.Mutex
	events []messages.Event
}

// Record subscribes a new Recorder to rt until the test ends.
func Record(t testing.TB, rt interface {
	Subscribe(func(messages.Event)) func()
}) *Recorder {
	r := &Recorder{}
	t.Cleanup(rt.Subscribe(r.Add))
	return r
}

// Add records ev; it is the Recorder's subscriber.
func (r *Recorder) Add(ev messages.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

// All returns the events recorded so far, in order.
func (r *Recorder) All() []messages.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]messages.Event(nil), r.events...)
}

// Count returns how many recorded events are named name.
func (r *Recorder) Count(name string) int {
	n := 0
	for _, ev := range r.All() {
		if ev.Name() == name {
			n++
		}
	}
	return n
}

// EventsOf returns the events of type E r has recorded.
func EventsOf[E messages.Event](r *Recorder) []E {
	var out []E
	for _, ev := range r.All() {
		if e, ok := ev.(E); ok {
			out = append(out, e)
		}
	}
	return out
}

// WaitEvents waits until r has recorded at least n events of type E and
// returns them.
func WaitEvents[E messages.Event](t testing.TB, r *Recorder, n int) []E {
	t.Helper()
	var zero E
	Eventually(t, fmt.Sprintf("%d %T events", n, zero), func() bool { return len(EventsOf[E](r)) >= n })
	return EventsOf[E](r)
}
