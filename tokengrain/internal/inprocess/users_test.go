package inprocess_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/automanaged"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/tokengrain"
	"github.com/go-tokenmanager/tokenmanager/tokengrain/internal/clusterdemo"
	"github.com/go-tokenmanager/tokenmanager/transport"
	"github.com/go-tokenmanager/tokenmanager/users"
)

// userMember is one member of an in-process cluster serving tokens on
// behalf of a user.
type userMember struct {
	c      *cluster.Cluster
	m      *transport.MultiRoundTripper
	hosted atomic.Int32 // grain activations here (the kind's SettingsFor calls)
	once   sync.Once
}

func (u *userMember) stop() {
	u.once.Do(func() {
		u.m.Close()
		u.c.Shutdown(true)
	})
}

// TestUsers_oneRefreshAcrossTheCluster: three members serve one user's
// tokens. The grain hosts the refresh provider, so each rollover is one
// refresh for the whole cluster and the rotating server never sees a
// refresh token twice; members get access tokens only (their settings
// have no provider, so they never refresh on their own). When the member
// hosting the grain leaves, the grain starts on another member, whose
// provider loads the rotated refresh token from the shared store and
// goes on without invalid_grant.
func TestUsers_oneRefreshAcrossTheCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member cluster: skipped with -short")
	}
	if raceDetector {
		t.Skip("several cluster members in one process race inside protoactor: run without -race (CI does)")
	}
	ctx := context.Background()
	srv := &testutil.RefreshServer{ExpiresIn: 60}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	store, err := users.OpenFile(filepath.Join(t.TempDir(), "tokens.db")) // shared by the in-process members
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	keys, err := users.NewKeys("k1", map[string][]byte{"k1": bytes.Repeat([]byte{5}, users.KeySize)})
	if err != nil {
		t.Fatal(err)
	}
	id := users.Identity{User: "ann", Client: "app"}.String()
	if _, err := users.Seed(ctx, store, keys, id, srv.Issue()); err != nil {
		t.Fatal(err)
	}
	mock := clock.NewMock()

	ports, err := clusterdemo.FreePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for _, p := range ports[3:] {
		hosts = append(hosts, "127.0.0.1:"+strconv.Itoa(p))
	}
	members := make([]*userMember, 3)
	for i := range members {
		u := &userMember{}
		members[i] = u
		// Where the grain runs: the refresh provider.
		hostSettings := func(identity string) (tokenmanager.Settings, error) {
			u.hosted.Add(1)
			return tokenmanager.Settings{Clock: mock, GetCredentials: providers.RefreshToken(providers.RefreshTokenConfig{
				TokenURL: hs.URL, Identity: identity, Store: store, Keys: keys, Auth: providers.NoClientAuth("app"),
			})}, nil
		}
		// On every member: no provider of its own, tokens from the grain.
		memberSettings := func(string) (tokenmanager.Settings, error) {
			return tokenmanager.Settings{Clock: mock}, nil
		}
		system := proto.NewActorSystem(proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger {
			return slog.New(slog.DiscardHandler)
		}))
		provider := automanaged.NewWithConfig(100*time.Millisecond, ports[3+i], hosts...)
		u.c = cluster.New(system, cluster.Configure("users-test", provider, disthash.New(),
			remote.Configure("127.0.0.1", ports[i]),
			cluster.WithKinds(tokengrain.NewKind(hostSettings)), cluster.WithRequestTimeout(5*time.Second)))
		u.c.StartMember()
		u.m, err = transport.NewMulti(tokenmanager.OwnerSettings{Clock: mock,
			SettingsFor: tokengrain.SettingsFor(u.c, memberSettings, tokengrain.Options{Timeout: 5 * time.Second})})
		if err != nil {
			t.Fatal(err)
		}
		defer u.stop()
	}
	testutil.Eventually(t, "three members", func() bool {
		for _, u := range members {
			if u.c.MemberList.Members().Len() != 3 {
				return false
			}
		}
		return true
	})

	// Cold start: 10 requests on every member, one refresh.
	var wg sync.WaitGroup
	for _, u := range members {
		for range 10 {
			wg.Go(func() {
				if _, err := u.m.Token(ctx, id); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if n := srv.Refreshes(); n != 1 {
		t.Fatalf("cold start on three members: %d refreshes; want 1", n)
	}
	// Rollovers: every member keeps asking; each rollover is one refresh.
	askAll := func(live []*userMember) {
		for _, u := range live {
			tok, err := u.m.Token(ctx, id)
			if err != nil {
				t.Fatalf("token: %v", err)
			}
			if !srv.Live(tok.AccessToken) {
				t.Fatal("a member was handed an access token the server does not know")
			}
		}
	}
	for want := int64(2); want <= 4; want++ {
		testutil.AdvanceUntil(t, mock, 5*time.Second, 40, "a rollover", func() bool {
			askAll(members)
			return srv.Refreshes() >= want
		})
		if n := srv.Refreshes(); n != want {
			t.Fatalf("%d refreshes after rollover %d; want one per rollover", n, want-1)
		}
	}

	// The member hosting the grain leaves; the grain starts elsewhere and
	// goes on from the stored refresh token.
	var host *userMember
	var live []*userMember
	for _, u := range members {
		if u.hosted.Load() > 0 && host == nil {
			host = u
		} else {
			live = append(live, u)
		}
	}
	if host == nil {
		t.Fatal("no member hosted the grain")
	}
	host.stop()
	// Let the membership settle in real time first: advancing the mock
	// clock does not speed it up, and the steps below are counted.
	testutil.Within(t, 15*time.Second, "the survivors see two members", func() bool {
		for _, u := range live {
			if u.c.MemberList.Members().Len() != 2 {
				return false
			}
		}
		return true
	})
	before := srv.Refreshes()
	testutil.AdvanceUntil(t, mock, 5*time.Second, 40, "a refresh on the grain's new host", func() bool {
		for _, u := range live {
			_, _ = u.m.Token(ctx, id) // may fail while the membership settles
		}
		return srv.Refreshes() > before
	})
	askAll(live)
	moved := false
	for _, u := range live {
		moved = moved || u.hosted.Load() > 0
	}
	if !moved {
		t.Fatal("the grain did not start on a surviving member")
	}
	if srv.Reuses() != 0 {
		t.Fatalf("%d refresh tokens presented twice; want none", srv.Reuses())
	}
	// The last refresh may still be on its way to the store: the server
	// counts it when it answers.
	testutil.Eventually(t, "every rotation stored", func() bool {
		e, err := store.Load(ctx, id)
		return err == nil && e.Version == uint64(srv.Refreshes())+1
	})
	t.Logf("refreshes: %d (cold start, 3 rollovers, after the move: %d)", srv.Refreshes(), srv.Refreshes()-before)
}
