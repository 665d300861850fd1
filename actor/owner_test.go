package actor_test

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/actor"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// processes counts the processes in sys's registry.
func processes(sys *proto.ActorSystem) int {
	n := 0
	for _, m := range sys.ProcessRegistry.LocalPIDs.LocalPIDs {
		n += m.Count()
	}
	return n
}

// TestOwner_identitiesAreNoProcesses: an owner hosts its identities
// itself: serving many adds no process (no PID, no name, no registry
// entry) to the actor system, so identities seen once leave nothing in
// protoactor's registry, which never shrinks.
func TestOwner_identitiesAreNoProcesses(t *testing.T) {
	p := &provider{expiresIn: 3600}
	mock := clock.NewMock()
	props, err := actor.NewOwnerProps(tokenmanager.OwnerSettings{
		Clock: mock,
		SettingsFor: func(string) (tokenmanager.Settings, error) {
			return tokenmanager.Settings{GetCredentials: p.get, Clock: mock}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	sys := proto.NewActorSystem(proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	defer sys.Shutdown()
	pid := sys.Root.Spawn(props)
	defer func() { _ = sys.Root.StopFuture(pid).Wait() }()

	get := func(identity string) *messages.TokenResult {
		t.Helper()
		res, err := sys.Root.RequestFuture(pid, messages.Get{Identity: identity}, 5*time.Second).Result()
		if err != nil {
			t.Fatalf("Get %s: %v", identity, err)
		}
		return res.(*messages.TokenResult)
	}
	get("warm-up") // the system's own processes, the owner's included
	before := processes(sys)
	const n = 50
	tokens := map[string]bool{}
	for i := range n {
		r := get(fmt.Sprintf("tenant-%d", i))
		if r.Err != nil || r.Token.AccessToken == "" {
			t.Fatalf("Get tenant-%d = %+v", i, r)
		}
		tokens[r.Token.AccessToken] = true
	}
	if len(tokens) != n {
		t.Errorf("%d distinct tokens for %d identities; want one each", len(tokens), n)
	}
	if r := get("tenant-7"); r.Token.AccessToken == "" || p.calls.Load() != n+1 {
		t.Errorf("second Get of tenant-7: %+v after %d provider calls; want its cached token, %d calls", r, p.calls.Load(), n+1)
	}
	if got := processes(sys) - before; got != 0 {
		t.Errorf("%d identities added %d processes to the actor system; want 0", n, got)
	}
}
