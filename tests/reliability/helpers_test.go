package reliability

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// newSystem returns a silent actor system whose dead-letter throttle does
// not outlive the test, shut down at cleanup.
func newSystem(t *testing.T) *proto.ActorSystem {
	t.Helper()
	sys := proto.NewActorSystem(
		proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }),
		proto.WithDeadLetterThrottleInterval(time.Millisecond),
	)
	t.Cleanup(sys.Shutdown)
	return sys
}

// newRT builds a RoundTripper over base and closes it at cleanup.
func newRT(t *testing.T, s tokenmanager.Settings, base http.RoundTripper) *transport.RoundTripper {
	t.Helper()
	rt, err := transport.New(s, transport.WithBase(base))
	if err != nil {
		t.Fatalf("transport.New: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// waitFor polls cond every millisecond until it holds or d of real time
// has passed. It waits for counters, never for timers.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// advanceUntil moves the mock clock forward in steps until cond holds,
// giving the actor a little real time to react after each step. It fails
// the test after max steps. cond is called until it first returns true,
// never after.
func advanceUntil(t *testing.T, mock *clock.Mock, step time.Duration, max int, what string, cond func() bool) {
	t.Helper()
	for i := 0; i <= max; i++ {
		if i > 0 {
			mock.Add(step)
		}
		for range 20 {
			if cond() {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	t.Fatalf("%s: not reached after advancing the clock %d x %v", what, max, step)
}

// events records every event a RoundTripper publishes.
type events struct {
	mu  sync.Mutex
	all []messages.Event
}

func recordEvents(t *testing.T, rt *transport.RoundTripper) *events {
	e := &events{}
	unsub := rt.Subscribe(func(ev messages.Event) {
		e.mu.Lock()
		e.all = append(e.all, ev)
		e.mu.Unlock()
	})
	t.Cleanup(unsub)
	return e
}

func (e *events) snapshot() []messages.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]messages.Event(nil), e.all...)
}

// count returns how many recorded events have the given name.
func (e *events) count(name string) int {
	n := 0
	for _, ev := range e.snapshot() {
		if ev.Name() == name {
			n++
		}
	}
	return n
}

// reasons counts TokenRefreshed events by reason.
func (e *events) reasons() map[messages.RefreshReason]int {
	m := map[messages.RefreshReason]int{}
	for _, ev := range e.snapshot() {
		if r, ok := ev.(messages.TokenRefreshed); ok {
			m[r.Reason]++
		}
	}
	return m
}

// lastFetchError returns the Err of the last TokenRequestFailed event.
func (e *events) lastFetchError() error {
	var err error
	for _, ev := range e.snapshot() {
		if f, ok := ev.(messages.TokenRequestFailed); ok {
			err = f.Err
		}
	}
	return err
}

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// textResponse returns a response with a small in-memory body.
func textResponse(req *http.Request, status int, body string) *http.Response {
	return &http.Response{
		StatusCode:    status,
		Status:        fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Header:        http.Header{"Content-Type": {"text/plain"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// bearer returns the token a request carries in Authorization.
func bearer(req *http.Request) string {
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
}

// doGet sends a GET through rt and returns the status, reading and closing
// the body.
func doGet(ctx context.Context, rt http.RoundTripper, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// newUnmanagedRT builds a RoundTripper the test closes itself.
func newUnmanagedRT(s tokenmanager.Settings, base http.RoundTripper) (*transport.RoundTripper, error) {
	return transport.New(s, transport.WithBase(base))
}
