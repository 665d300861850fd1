package tokengrain

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/remote"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/tokengrain/tokenpb"
)

// KindOptions.Idle is the grain's receive timeout; when it passes, the
// grain stops with its token, and the next activation fetches anew. The
// timeout is delivered by hand (no timer is waited for).
func TestGrain_idleStopsAndForgets(t *testing.T) {
	var fetches atomic.Int64
	var idle atomic.Int64 // the receive timeout the grain set, read after each message
	props := grainProps(func(string) (tokenmanager.Settings, error) {
		return tokenmanager.Settings{GetCredentials: func(context.Context) (tokenmanager.Token, error) {
			fetches.Add(1)
			return tokenmanager.Token{AccessToken: "t", ExpiresIn: 60}, nil
		}}, nil
	}, KindOptions{Idle: 42 * time.Second}).Configure(proto.WithReceiverMiddleware(func(next proto.ReceiverFunc) proto.ReceiverFunc {
		return func(c proto.ReceiverContext, env *proto.MessageEnvelope) {
			next(c, env)
			idle.Store(int64(c.(proto.Context).ReceiveTimeout()))
		}
	}))
	system := quietSystem()
	defer system.Shutdown()
	activate := func() *proto.PID {
		pid := system.Root.Spawn(props)
		system.Root.Send(pid, &cluster.ClusterInit{Identity: cluster.NewClusterIdentity("a", Kind), Cluster: clusterOn(remote.Configure("127.0.0.1", 0))})
		res, err := system.Root.RequestFuture(pid, &tokenpb.GetToken{WaitMs: 1000}, 2*time.Second).Result()
		if r, ok := res.(*tokenpb.TokenReply); err != nil || !ok || r.GetAccessToken() != "t" {
			t.Fatalf("got %v, %v; want the token", res, err)
		}
		return pid
	}

	pid := activate()
	if got := time.Duration(idle.Load()); got != 42*time.Second {
		t.Errorf("receive timeout %v; want KindOptions.Idle, 42s", got)
	}
	system.Root.Send(pid, &proto.ReceiveTimeout{})
	eventually(t, "the idle grain to stop", func() bool {
		_, err := system.Root.RequestFuture(pid, &tokenpb.GetToken{Probe: true}, time.Second).Result()
		return err != nil // a dead letter
	})
	pid = activate()
	defer system.Root.StopFuture(pid).Wait() // with its token actor
	if got := fetches.Load(); got != 2 {
		t.Errorf("%d fetches; want 2 (the token is forgotten when the grain stops idle)", got)
	}
}
