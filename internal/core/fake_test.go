package core_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/core"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/internal/request"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// tokenTTL is how long the fake's tokens live on the mock clock.
const tokenTTL = time.Hour

// fakeActor stands in for the token actor: a token source behind the
// messages the core sends. In auto mode it answers each Wait with a new
// token (tok-1, tok-2, ...) and publishes it in the handle, as the actor
// does; in manual mode it hands each Wait to the test. It drops the
// snapshot on Invalidate and Rejected and records what it was sent.
type fakeActor struct {
	h      *link.Handle
	clk    *clock.Mock
	manual bool
	fail   error // auto mode: answer Waits with this error instead

	waits chan *protocol.Wait // manual mode: the Waits, in order

	mu          sync.Mutex
	fetches     int
	invalidated []string // messages.Invalidate, in order
	rejected    []string // protocol.Rejected, in order
	served      int
}

func (a *fakeActor) Receive(c proto.Context) {
	switch m := c.Message().(type) {
	case *protocol.Wait:
		if a.manual {
			a.waits <- m
			return
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		a.fetches++
		if a.fail != nil {
			m.Reply <- &messages.TokenResult{Err: a.fail}
			return
		}
		res := &messages.TokenResult{
			Token:     tokenmanager.Token{AccessToken: fmt.Sprintf("tok-%d", a.fetches)},
			ExpiresAt: a.clk.Now().Add(tokenTTL),
		}
		a.h.Store(&link.Snapshot{Token: res.Token, ExpiresAt: res.ExpiresAt})
		m.Reply <- res
	case messages.Invalidate:
		a.mu.Lock()
		a.invalidated = append(a.invalidated, m.AccessToken)
		a.mu.Unlock()
		a.h.Drop(m.AccessToken)
	case *protocol.Rejected:
		a.mu.Lock()
		a.rejected = append(a.rejected, m.AccessToken)
		a.mu.Unlock()
		a.h.Drop(m.AccessToken)
	case *protocol.Served:
		a.mu.Lock()
		a.served++
		a.mu.Unlock()
	case ping:
		c.Respond(ping{})
	case *proto.Stopped:
		close(a.h.Done)
	}
}

// record returns what the fake has done so far.
func (a *fakeActor) record() (fetches int, invalidated, rejected []string, served int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fetches, append([]string(nil), a.invalidated...), append([]string(nil), a.rejected...), a.served
}

// answer takes the next Wait the fake was sent and answers it with token.
func (a *fakeActor) answer(t *testing.T, token string) *protocol.Wait {
	t.Helper()
	w := a.nextWait(t)
	res := &messages.TokenResult{Token: tokenmanager.Token{AccessToken: token}, ExpiresAt: a.clk.Now().Add(tokenTTL)}
	a.h.Store(&link.Snapshot{Token: res.Token, ExpiresAt: res.ExpiresAt})
	w.Reply <- res
	return w
}

// nextWait returns the next Wait the fake was sent.
func (a *fakeActor) nextWait(t *testing.T) *protocol.Wait {
	t.Helper()
	select {
	case w := <-a.waits:
		return w
	case <-time.After(testutil.Patience):
		t.Fatal("the core sent no Wait")
		return nil
	}
}

// fixture is a Core over a fakeActor, with the binding of its identity.
type fixture struct {
	c   *core.Core
	b   core.Binding
	a   *fakeActor
	clk *clock.Mock
	ev  *testutil.Recorder
}

// newFixture starts a Core over a fake actor in a system of its own; s
// gives the request settings (MaxRecoveryTries, WaitTimeout). The core is
// closed when the test ends.
func newFixture(t *testing.T, s tokenmanager.Settings, manual bool) *fixture {
	t.Helper()
	clk := clock.NewMock()
	system := testutil.QuietSystem() // the core owns it: Close shuts it down
	if s.WaitTimeout == 0 {
		s.WaitTimeout = time.Minute
	}
	f := &fixture{c: &core.Core{}, clk: clk, ev: &testutil.Recorder{}}
	f.b, f.a = f.spawn(system, s, manual)
	f.c.Init(system, f.b.PID, f.b.H.Bus, 1024, true, nil)
	f.c.Subscribe(f.ev.Add)
	t.Cleanup(f.close)
	return f
}

// ping asks the fake for a reply: once it comes, the fake has handled
// every message sent to it before.
type ping struct{}

// sync waits until the fake has handled every message sent to it so far.
func (f *fixture) sync() {
	f.c.Root.RequestFuture(f.b.PID, ping{}, testutil.Patience).Wait()
}

// spawn starts a fake actor for identity "tenant" in system and returns
// its binding.
func (f *fixture) spawn(system *proto.ActorSystem, s tokenmanager.Settings, manual bool) (core.Binding, *fakeActor) {
	h := link.NewHandle(64, f.clk)
	h.Identity = "tenant"
	a := &fakeActor{h: h, clk: f.clk, manual: manual, waits: make(chan *protocol.Wait, 64)}
	h.PID = system.Root.Spawn(proto.PropsFromProducer(func() proto.Actor { return a }))
	return core.Binding{H: h, PID: h.PID, Req: request.New(s, request.RequestSide), St: &request.State{}}, a
}

// close closes the core, which stops the fake and its system and delivers
// the events already published. It is idempotent.
func (f *fixture) close() { f.c.Close("fake actor") }

// cache publishes token as the cached one, valid for tokenTTL.
func (f *fixture) cache(token string) {
	f.b.H.Store(&link.Snapshot{Token: tokenmanager.Token{AccessToken: token}, ExpiresAt: f.clk.Now().Add(tokenTTL)})
}

// cached returns the cached token, "" if none.
func (f *fixture) cached() string {
	if s := f.b.H.Snapshot(); s != nil {
		return s.Token.AccessToken
	}
	return ""
}

// waiters returns how many requests wait on the identity's flight; -1
// when there is none.
func (f *fixture) waiters() int {
	f.b.St.Mu.Lock()
	defer f.b.St.Mu.Unlock()
	if f.b.St.Flight == nil {
		return -1
	}
	return f.b.St.Flight.Waiters
}

// waitToken runs Token in a goroutine; the result arrives on the channel.
func (f *fixture) waitToken(ctx context.Context, rejected string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		b := f.b
		iss, err := f.c.Token(ctx, &b, rejected)
		ch <- result{iss.Token.AccessToken, err}
	}()
	return ch
}

type result struct {
	token string
	err   error
}

// get receives from ch, failing the test after Patience.
func get(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(testutil.Patience):
		t.Fatal("Token did not return")
		return result{}
	}
}
