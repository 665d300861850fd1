package tokengrain_test

import (
	"log/slog"
	"strconv"
	"testing"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/automanaged"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"
	"go.uber.org/goleak"

	"github.com/go-tokenmanager/tokenmanager/observability"
	"github.com/go-tokenmanager/tokenmanager/tokengrain"
	"github.com/go-tokenmanager/tokenmanager/tokengrain/internal/clusterdemo"
)

// A cluster client shuts down without a panic and leaves no goroutine
// behind.
func TestShutdownClient(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ports, err := clusterdemo.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	system := proto.NewActorSystem(proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	provider := automanaged.NewWithConfig(100*time.Millisecond, ports[1], "127.0.0.1:"+itoa(ports[2]))
	c := cluster.New(system, cluster.Configure("shutdown-test", provider, disthash.New(), remote.Configure("127.0.0.1", ports[0])))
	c.StartClient()
	tokengrain.ShutdownClient(c, true)
}

func itoa(n int) string { return strconv.Itoa(n) }

// observability's cluster metrics plug into tokengrain as they are.
var _ tokengrain.Recorder = (*observability.ClusterMetrics)(nil)
