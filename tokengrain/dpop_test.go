package tokengrain

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/remote"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/tokengrain/tokenpb"
)

// dpopSettings returns settings for an identity with a DPoP key, whose
// provider counts its calls.
func dpopSettings(t *testing.T, fetches *atomic.Int64) tokenmanager.SettingsFunc {
	d, err := tokenmanager.NewDPoP(nil)
	if err != nil {
		t.Fatal(err)
	}
	return func(string) (tokenmanager.Settings, error) {
		return tokenmanager.Settings{DPoP: d, GetCredentials: func(context.Context) (tokenmanager.Token, error) {
			fetches.Add(1)
			return tokenmanager.Token{AccessToken: "bound", TokenType: "DPoP", ExpiresIn: 60}, nil
		}}, nil
	}
}

// A member never asks a grain for a DPoP identity's token: it fetches its
// own, bound to its own key.
func TestMember_dpopIdentityFetchesItsOwn(t *testing.T) {
	var fetches atomic.Int64
	grains := &fakeGrains{answers: []func() (*tokenpb.TokenReply, error){
		answer(&tokenpb.TokenReply{AccessToken: "from the grain", ExpiresInMs: 5000}, nil),
	}}
	s, err := wrap(dpopSettings(t, &fetches), Options{Timeout: 50 * time.Millisecond}, grains.request)("a")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.GetCredentials(fetchCtx(messages.ReasonColdStart, ""))
	if err != nil || tok.AccessToken != "bound" {
		t.Fatalf("got %q, %v; want the member's own token", tok.AccessToken, err)
	}
	if len(grains.sent) != 0 || fetches.Load() != 1 {
		t.Errorf("asked the grain %d times, fetched %d times; want 0 and 1", len(grains.sent), fetches.Load())
	}
}

// A grain refuses to serve a DPoP identity (a member of another version,
// or Ask, could ask), and fetches nothing.
func TestGrain_refusesDPoPIdentity(t *testing.T) {
	var fetches atomic.Int64
	system := quietSystem()
	pid := system.Root.Spawn(grainProps(dpopSettings(t, &fetches), KindOptions{}))
	t.Cleanup(func() {
		system.Root.StopFuture(pid).Wait()
		system.Shutdown()
	})
	system.Root.Send(pid, &cluster.ClusterInit{Identity: cluster.NewClusterIdentity("a", Kind), Cluster: clusterOn(remote.Configure("127.0.0.1", 0))})
	res, err := system.Root.RequestFuture(pid, &tokenpb.GetToken{WaitMs: 1000}, 2*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*tokenpb.TokenReply)
	if r.GetAccessToken() != "" || !r.GetPermanent() || !strings.Contains(r.GetError(), "DPoP") {
		t.Fatalf("reply %v; want a permanent DPoP error and no token", r)
	}
	if fetches.Load() != 0 {
		t.Errorf("%d fetches; want 0", fetches.Load())
	}
}
