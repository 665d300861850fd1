package protocol

import (
	"context"
	"sync"
	"time"

	"github.com/go-tokenmanager/tokenmanager/messages"
)

// fetchCtx is the context of a host's provider call (FetchContext): its
// deadline, its fetch values and what runs when it ends, in one
// allocation with one timer, where context.WithTimeout, a value and a
// timer of the caller's own for the same deadline (see AfterEnd) took
// five allocations and two timers on every fetch.
type fetchCtx struct {
	parent     context.Context
	deadline   time.Time
	vals       fetchValues
	timer      *time.Timer
	stopParent func() bool // nil unless parent can end

	mu    sync.Mutex
	done  chan struct{} // made when asked for or when ended
	err   error
	onEnd func() // AfterEnd's, until it is stopped or run
}

// closedchan is the Done of every fetch context that ended before
// anyone asked for its Done.
var closedchan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// FetchContext returns the context of a host's provider call, and its
// cancel: it ends after timeout (context.DeadlineExceeded), when parent
// ends (parent's error), or when cancel is called (context.Canceled),
// and it carries the fetch values: reason and rejected (FetchFrom),
// publish when not nil (PublishFrom), and a lifetime slot (SetLifetime),
// as one value. Values other than the fetch's come from parent.
func FetchContext(parent context.Context, timeout time.Duration, reason, rejected string, publish func(messages.Event)) (context.Context, context.CancelFunc) {
	f := &fetchCtx{parent: parent, deadline: time.Now().Add(timeout)}
	f.vals.reason, f.vals.rejected, f.vals.publish = reason, rejected, publish
	f.vals.lifetime = &f.vals.own
	if d, ok := parent.Deadline(); ok && d.Before(f.deadline) {
		f.deadline = d
	}
	if err := parent.Err(); err != nil {
		f.end(err)
		return f, func() {}
	}
	f.timer = time.AfterFunc(time.Until(f.deadline), func() { f.end(context.DeadlineExceeded) })
	if parent.Done() != nil {
		f.stopParent = context.AfterFunc(parent, func() { f.end(parent.Err()) })
	}
	return f, func() { f.end(context.Canceled) }
}

func (f *fetchCtx) Deadline() (time.Time, bool) { return f.deadline, true }

func (f *fetchCtx) Done() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done == nil {
		f.done = make(chan struct{})
	}
	return f.done
}

func (f *fetchCtx) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *fetchCtx) Value(key any) any {
	if _, ok := key.(fetchKey); ok {
		return &f.vals
	}
	return f.parent.Value(key)
}

// end ends f with err, once: Done is closed, the timer and the watch on
// the parent are stopped, and AfterEnd's func, if any, runs on a
// goroutine of its own (the timer's, when the deadline ended it).
func (f *fetchCtx) end(err error) {
	f.mu.Lock()
	if f.err != nil {
		f.mu.Unlock()
		return
	}
	f.err = err
	if f.done == nil {
		f.done = closedchan
	} else {
		close(f.done)
	}
	hook := f.onEnd
	f.onEnd = nil
	f.mu.Unlock()
	if f.timer != nil {
		f.timer.Stop()
	}
	if f.stopParent != nil {
		f.stopParent()
	}
	if hook != nil {
		if err == context.DeadlineExceeded {
			hook() // on the timer's goroutine
		} else {
			go hook()
		}
	}
}

// AfterEnd arranges for fn to run once ctx, a context FetchContext made,
// ends (at once, on a goroutine of its own, if it has), using ctx's own
// timer rather than one more. stop stops that, reporting whether it did.
// ok is false, and nothing is arranged, when ctx is not one
// FetchContext made.
func AfterEnd(ctx context.Context, fn func()) (stop func() bool, ok bool) {
	f, ok := ctx.(*fetchCtx)
	if !ok {
		return nil, false
	}
	f.mu.Lock()
	if f.err != nil {
		f.mu.Unlock()
		go fn()
		return func() bool { return false }, true
	}
	f.onEnd = fn
	f.mu.Unlock()
	return func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		had := f.onEnd != nil
		f.onEnd = nil
		return had
	}, true
}
