package actor

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestWorkers_burstLeavesFewParked: a burst of calls that block runs on
// as many workers as it needs; once they return, at most maxParked stay
// parked for the next run, the others end at once; when the last owner
// finishes, none is left (goleak checks that at the end of the package).
func TestWorkers_burstLeavesFewParked(t *testing.T) {
	d := newWorkers()
	d.start()
	before := runtime.NumGoroutine()
	const burst = 20
	release := make(chan struct{})
	var started, done sync.WaitGroup
	started.Add(burst)
	done.Add(burst)
	for range burst {
		d.Schedule(func() {
			started.Done()
			<-release
			done.Done()
		})
	}
	started.Wait() // all 20 run at once: none waited for another
	close(release)
	done.Wait()
	// Well before linger: the extra workers end at once, not after it.
	deadline := time.Now().Add(linger / 2)
	for runtime.NumGoroutine() > before+maxParked {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after the burst; want at most %d parked workers over the %d before",
				runtime.NumGoroutine(), maxParked, before)
		}
		time.Sleep(time.Millisecond)
	}
	if p := d.parked.Load(); p < 1 || p > maxParked {
		t.Fatalf("%d workers parked; want between 1 and %d", p, maxParked)
	}
	ran := make(chan struct{})
	d.Schedule(func() { close(ran) }) // a parked worker takes it
	<-ran
	d.finish()
}
