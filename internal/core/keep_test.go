package core

import (
	"context"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager/internal/request"
)

// TestKeep_oneTimerPerFlight: callers that fail fast while a fetch is
// being retried hand their places to one timer per flight, not one each,
// so an outage under load costs one timer, not one per failed call.
func TestKeep_oneTimerPerFlight(t *testing.T) {
	var c Core
	st := &request.State{}
	b := Binding{Req: &request.Request{Wait: time.Hour}, St: st}
	_, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &request.Flight{Done: make(chan struct{}), Cancel: cancel, Waiters: 1000}
	st.Flight = f
	for range 1000 {
		c.keep(b, f)
	}
	st.Mu.Lock()
	defer st.Mu.Unlock()
	if f.Waiters != 1 || !f.Kept {
		t.Errorf("after 1000 fail-fast callers: waiters = %d, kept = %v; want 1 (the timer's), true", f.Waiters, f.Kept)
	}
	if st.Flight != f {
		t.Error("the flight ended while a timer holds a place in it")
	}
}
