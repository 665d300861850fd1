package eventbus_test

import (
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/go-tokenmanager/tokenmanager/internal/eventbus"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBus_deliversInOrder(t *testing.T) {
	b := eventbus.New(16)
	defer b.Close()
	got := make(chan int, 16)
	b.Subscribe(func(ev messages.Event) { got <- ev.(messages.RecoveryTried).Attempt })
	for i := range 10 {
		b.Publish(messages.RecoveryTried{Attempt: i})
	}
	for i := range 10 {
		if n := <-got; n != i {
			t.Fatalf("event %d arrived as %d", i, n)
		}
	}
}

func TestBus_slowSubscriberDropsAndCountsButNeverBlocks(t *testing.T) {
	b := eventbus.New(4)
	block := make(chan struct{})
	b.Subscribe(func(messages.Event) { <-block })
	var fast atomic.Int64
	b.Subscribe(func(messages.Event) { fast.Add(1) })
	done := make(chan struct{})
	go func() {
		for range 100 {
			b.Publish(messages.AuthFailed{Status: 401})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish blocked on a stuck subscriber")
	}
	// The stuck one holds one event and queues four: 95 dropped, at least.
	if got := b.Dropped(); got < 95 {
		t.Errorf("Dropped() = %d; want >= 95", got)
	}
	close(block)
	b.Close()
}

func TestBus_panickingSubscriberIsContained(t *testing.T) {
	b := eventbus.New(8)
	defer b.Close()
	var calls atomic.Int64
	b.Subscribe(func(messages.Event) { calls.Add(1); panic("subscriber bug") })
	b.Publish(messages.AuthFailed{})
	b.Publish(messages.AuthFailed{})
	testutil.Eventually(t, "both events", func() bool { return calls.Load() == 2 })
	testutil.Eventually(t, "panic count", func() bool { return b.Panics() == 2 })
}

func TestBus_unsubscribeAndClose(t *testing.T) {
	b := eventbus.New(8)
	var calls atomic.Int64
	unsub := b.Subscribe(func(messages.Event) { calls.Add(1) })
	b.Publish(messages.AuthFailed{})
	testutil.Eventually(t, "first event", func() bool { return calls.Load() == 1 })
	unsub()
	unsub() // idempotent
	b.Publish(messages.AuthFailed{})
	b.Close()
	b.Close()
	late := b.Subscribe(func(messages.Event) { calls.Add(1) })
	late()
	b.Publish(messages.AuthFailed{})
	if got := calls.Load(); got != 1 {
		t.Errorf("calls = %d; want 1 (no delivery after unsubscribe or Close)", got)
	}
}

func TestBus_unsubscribeFromInsideHandler(t *testing.T) {
	b := eventbus.New(8)
	defer b.Close()
	done := make(chan struct{})
	var unsub func()
	ready := make(chan struct{})
	unsub = b.Subscribe(func(messages.Event) {
		<-ready
		unsub()
		close(done)
	})
	close(ready)
	b.Publish(messages.AuthFailed{})
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("unsubscribe from inside the handler deadlocked")
	}
}

func TestBus_shutdownDeliversBacklogWithinGrace(t *testing.T) {
	b := eventbus.New(64)
	var calls atomic.Int64
	b.Subscribe(func(messages.Event) { time.Sleep(time.Millisecond); calls.Add(1) })
	for range 20 {
		b.Publish(messages.AuthFailed{})
	}
	if !b.Shutdown(5 * time.Second) {
		t.Fatal("Shutdown gave up on a subscriber that was only slow")
	}
	if got := calls.Load(); got != 20 {
		t.Errorf("delivered %d of 20 queued events", got)
	}
}

func TestBus_shutdownStopsAStuckSubscriber(t *testing.T) {
	b := eventbus.New(64)
	release := make(chan struct{})
	var calls atomic.Int64
	b.Subscribe(func(messages.Event) { calls.Add(1); <-release })
	for range 20 {
		b.Publish(messages.AuthFailed{})
	}
	testutil.Eventually(t, "first call", func() bool { return calls.Load() == 1 })
	if b.Shutdown(10 * time.Millisecond) {
		t.Fatal("Shutdown reported a stuck subscriber as ended")
	}
	close(release)
	// The subscriber ends after its current call; goleak checks it is gone.
	testutil.Eventually(t, "the subscriber to stop", func() bool { return b.Shutdown(time.Second) })
	if got := calls.Load(); got != 1 {
		t.Errorf("subscriber got %d calls after Shutdown gave up; want it stopped", got)
	}
}
