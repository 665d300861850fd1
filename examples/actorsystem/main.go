// Command actorsystem embeds the token actor in an actor system of its
// own: a worker actor asks it for tokens with messages.Get, tells it when
// a token was rejected, and reacts to its events, which arrive on the
// system's EventStream. It exits on its own after ~4 seconds.
package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"sync/atomic"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/actor"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// work is what the worker is told to do: call the "API" with a token.
type work struct{ n int }

// worker asks the token actor for a token for each piece of work. It never
// blocks its own mailbox: it sends Get with Request and handles the reply
// when it arrives.
type worker struct {
	tokens *proto.PID
	start  time.Time
}

func (w *worker) Receive(c proto.Context) {
	switch m := c.Message().(type) {
	case work:
		// PipeTo delivers the reply to this actor as an ordinary message,
		// so the worker's mailbox is never blocked on the token actor.
		c.RequestFuture(w.tokens, messages.Get{}, 5*time.Second).PipeTo(c.Self())
	case *messages.TokenResult:
		if m.Err != nil {
			w.logf("worker: no token: %v", m.Err)
			return
		}
		w.logf("worker: calling the API with a token that expires in %v",
			time.Until(m.ExpiresAt).Round(100*time.Millisecond))
	case messages.Event:
		// Events from the token actor, forwarded from the EventStream.
		switch e := m.(type) {
		case messages.TokenRefreshed:
			w.logf("worker saw event: %s", e.Message)
		case messages.TokenRequestFailed:
			w.logf("worker saw event: token request failed (%d in a row), retry in %v", e.ConsecutiveFailures, e.RetryIn)
		}
	}
}

func (w *worker) logf(format string, args ...any) {
	fmt.Printf("[%4.1fs] %s\n", time.Since(w.start).Seconds(), fmt.Sprintf(format, args...))
}

func main() {
	start := time.Now()
	system := proto.NewActorSystem(proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler) // keep the runtime quiet
	}))
	defer system.Shutdown()

	// A provider that issues 2-second tokens; the third fetch fails once.
	var calls atomic.Int64
	provider := func(ctx context.Context) (tokenmanager.Token, error) {
		n := calls.Add(1)
		if n == 3 {
			return tokenmanager.Token{}, fmt.Errorf("token endpoint busy")
		}
		return tokenmanager.Token{AccessToken: fmt.Sprintf("token-%d", n), ExpiresIn: 2}, nil
	}
	props, err := actor.NewProps(tokenmanager.Settings{
		GetCredentials: provider,
		RefreshBuffer:  500 * time.Millisecond,
		RetryBaseDelay: 200 * time.Millisecond,
	})
	if err != nil {
		log.Fatal(err)
	}
	tokens, err := system.Root.SpawnNamed(props, "tokens/tenant-a")
	if err != nil {
		log.Fatal(err)
	}
	w := system.Root.Spawn(proto.PropsFromProducer(func() proto.Actor {
		return &worker{tokens: tokens, start: start}
	}))

	// Forward the token events to the worker as messages.
	sub := system.EventStream.SubscribeWithPredicate(
		func(ev any) { system.Root.Send(w, ev) },
		func(ev any) bool { _, ok := ev.(messages.Event); return ok },
	)
	defer system.EventStream.Unsubscribe(sub)

	for n := 1; n <= 8; n++ {
		system.Root.Send(w, work{n: n})
		time.Sleep(500 * time.Millisecond)
	}
	// A token was rejected by some API: tell the token actor.
	res, err := system.Root.RequestFuture(tokens, messages.Get{}, time.Second).Result()
	if err == nil {
		system.Root.Send(tokens, messages.Invalidate{AccessToken: res.(*messages.TokenResult).Token.AccessToken})
		system.Root.Send(w, work{n: 9})
	}
	time.Sleep(200 * time.Millisecond)
	fmt.Printf("done: %d provider calls\n", calls.Load())
	system.Root.StopFuture(w).Wait()
	system.Root.StopFuture(tokens).Wait()
}
