// Package eventbus fans events out to subscribers without ever blocking
// the publisher: each subscriber has a bounded queue and a goroutine of its
// own; events that do not fit are dropped and counted.
package eventbus

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-tokenmanager/tokenmanager/messages"
)

// Bus is safe for concurrent use by multiple goroutines.
type Bus struct {
	buffer  int
	dropped atomic.Uint64
	panics  atomic.Uint64

	mu     sync.RWMutex // guards subs, nextID and closed
	subs   map[uint64]chan Item
	nextID uint64
	closed bool

	running   sync.WaitGroup // subscriber goroutines
	abort     chan struct{}  // closed when Shutdown gives up waiting
	abortOnce sync.Once
}

// New returns a bus whose subscribers each queue up to buffer events.
func New(buffer int) *Bus {
	if buffer < 1 {
		buffer = 1
	}
	return &Bus{buffer: buffer, subs: make(map[uint64]chan Item), abort: make(chan struct{})}
}

// Item is an event as the bus carries it, with the callbacks of the
// identity it concerns, bound when it was published (nil for none).
type Item struct {
	Event     messages.Event
	Callbacks func(messages.Event)
}

// Publish queues ev for every subscriber. It never blocks.
func (b *Bus) Publish(ev messages.Event) { b.PublishWith(ev, nil) }

// PublishWith is Publish with the callbacks that should see ev; only
// subscribers of [Bus.SubscribeItems] get them.
func (b *Bus) PublishWith(ev messages.Event, callbacks func(messages.Event)) {
	it := Item{ev, callbacks}
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, ch := range b.subs {
		select {
		case ch <- it:
		default:
			b.dropped.Add(1)
		}
	}
}

// Subscribe calls fn for each event, one at a time, on a goroutine of its
// own. A panic in fn is contained and counted. The returned func
// unsubscribes; events already queued are still delivered. It is
// idempotent and safe to call from fn.
func (b *Bus) Subscribe(fn func(messages.Event)) (unsubscribe func()) {
	return b.SubscribeItems(func(it Item) { fn(it.Event) })
}

// SubscribeItems is Subscribe for a subscriber that also wants each
// event's callbacks.
func (b *Bus) SubscribeItems(fn func(Item)) (unsubscribe func()) {
	ch := make(chan Item, b.buffer)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return func() {}
	}
	id := b.nextID
	b.nextID++
	b.subs[id] = ch
	b.running.Add(1)
	b.mu.Unlock()

	go func() {
		defer b.running.Done()
		for {
			select {
			case <-b.abort:
				return
			case it, ok := <-ch:
				if !ok {
					return
				}
				select {
				case <-b.abort:
					return
				default:
					b.call(fn, it)
				}
			}
		}
	}()
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if c, ok := b.subs[id]; ok {
			delete(b.subs, id)
			close(c)
		}
	}
}

func (b *Bus) call(fn func(Item), it Item) {
	defer func() {
		if recover() != nil {
			b.panics.Add(1)
		}
	}()
	fn(it)
}

// Close unsubscribes everyone; later Subscribe calls get no events.
// Subscriber goroutines end once they have delivered what was queued.
func (b *Bus) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	for id, ch := range b.subs {
		delete(b.subs, id)
		close(ch)
	}
}

// Shutdown closes the bus and waits up to grace for subscribers to
// deliver what is queued; then it tells them to stop after their current
// call, dropping the rest, and returns. It reports whether all had ended.
func (b *Bus) Shutdown(grace time.Duration) bool {
	b.Close()
	done := make(chan struct{})
	go func() {
		b.running.Wait()
		close(done)
	}()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C:
		b.abortOnce.Do(func() { close(b.abort) })
		return false
	}
}

// Dropped returns how many events were dropped because a subscriber's
// queue was full.
func (b *Bus) Dropped() uint64 { return b.dropped.Load() }

// Panics returns how many subscriber calls panicked.
func (b *Bus) Panics() uint64 { return b.panics.Load() }
