package tokengrain

import (
	"sync/atomic"
	"testing"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/tokengrain/tokenpb"
)

// TestGrain_settingsBackoffOnSettingsClock: a grain whose SettingsFor
// fails calls it again only after the owner's backoff, timed on the
// settings' clock (here a mock), not the wall clock.
func TestGrain_settingsBackoffOnSettingsClock(t *testing.T) {
	mock := clock.NewMock()
	var calls atomic.Int32
	settingsFor := func(string) (tokenmanager.Settings, error) {
		calls.Add(1)
		return tokenmanager.Settings{Clock: mock}, nil // invalid: no GetCredentials
	}
	system := proto.NewActorSystem()
	defer system.Shutdown()
	pid := system.Root.Spawn(proto.PropsFromProducer(func() proto.Actor { return &grain{settingsFor: settingsFor} }))
	defer func() { _ = system.Root.StopFuture(pid).Wait() }()
	// A loopback remote: the grain may serve tokens over it.
	system.Root.Send(pid, &cluster.ClusterInit{Identity: cluster.NewClusterIdentity("tenant", Kind), Cluster: clusterOn(remote.Configure("127.0.0.1", 0))})

	get := func() *tokenpb.TokenReply {
		t.Helper()
		res, err := system.Root.RequestFuture(pid, &tokenpb.GetToken{}, 5*time.Second).Result()
		if err != nil {
			t.Fatal(err)
		}
		return res.(*tokenpb.TokenReply)
	}
	if r := get(); r.GetError() == "" || calls.Load() != 1 {
		t.Fatalf("reply %v after %d SettingsFor calls; want an error after 1", r, calls.Load())
	}
	if r := get(); r.GetError() == "" || calls.Load() != 1 {
		t.Fatalf("reply %v after %d SettingsFor calls; want the error again, no new call during the backoff", r, calls.Load())
	}
	mock.Add(500 * time.Millisecond) // the first failure's backoff is at most 0.5s
	if get(); calls.Load() != 2 {
		t.Fatalf("%d SettingsFor calls once the backoff passed on the settings' clock; want 2", calls.Load())
	}
}
