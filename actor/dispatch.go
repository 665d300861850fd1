package actor

import (
	"sync"
	"sync/atomic"
	"time"
)

// workers is the owner's dispatcher: it runs the owner's mailbox on a
// goroutine kept parked for a while after its last run, rather than on a
// new goroutine per run (protoactor's default). A new goroutine grows its
// stack anew, by copying, to the depth of the owner's handlers on every
// run: most of what an identity's first request costs the owner. The
// owner's provider calls (SettingsFor with the first fetch, and every
// later fetch) run on the same workers, for the same reason; a call that
// blocks holds its worker, and Schedule starts another when none is
// parked. While no owner of the props runs, and after linger without
// work, no worker is left.
type workers struct {
	idle chan func() // a parked worker receives here

	parked atomic.Int32 // workers parked or about to park

	mu     sync.Mutex
	owners int           // owners started and not finished
	quit   chan struct{} // closed when owners drops to 0
}

// linger is how long a worker stays parked without work.
const linger = time.Second

// maxParked bounds the parked workers: after a burst of provider calls,
// all but these end at once instead of lingering.
const maxParked = 4

func newWorkers() *workers {
	return &workers{idle: make(chan func()), quit: make(chan struct{})}
}

// Schedule implements protoactor's Dispatcher.
func (d *workers) Schedule(fn func()) {
	select {
	case d.idle <- fn:
	default:
		d.mu.Lock()
		quit, owners := d.quit, d.owners
		d.mu.Unlock()
		if owners == 0 { // starting, or stopped: nothing to keep a worker for
			go fn()
			return
		}
		go d.work(fn, quit)
	}
}

// Throughput implements protoactor's Dispatcher: as protoactor's default,
// a run yields the processor after this many messages.
func (*workers) Throughput() int { return 300 }

func (d *workers) work(fn func(), quit chan struct{}) {
	t := time.NewTimer(linger)
	defer t.Stop()
	for {
		fn()
		if d.parked.Add(1) > maxParked {
			d.parked.Add(-1)
			return
		}
		t.Reset(linger)
		select {
		case fn = <-d.idle:
			d.parked.Add(-1)
		case <-t.C:
			d.parked.Add(-1)
			return
		case <-quit:
			d.parked.Add(-1)
			return
		}
	}
}

// start counts an owner started.
func (d *workers) start() {
	d.mu.Lock()
	d.owners++
	d.mu.Unlock()
}

// finish counts an owner finished; once none runs, parked workers end.
func (d *workers) finish() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.owners--; d.owners == 0 {
		close(d.quit)
		d.quit = make(chan struct{})
	}
}
