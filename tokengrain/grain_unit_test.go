package tokengrain

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/remote"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/tokengrain/tokenpb"
)

// countingRecorder counts what it is told.
type countingRecorder struct {
	mu        sync.Mutex
	refused   map[string]int
	fallbacks map[string]int
	asked     []string
	moves     int
}

func (r *countingRecorder) GrainAsked(_ string, local bool, _ time.Duration, outcome string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, outcome)
}

func (r *countingRecorder) FellBack(_, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fallbacks == nil {
		r.fallbacks = map[string]int{}
	}
	r.fallbacks[reason]++
}

func (r *countingRecorder) GrainMoved(string) { r.mu.Lock(); r.moves++; r.mu.Unlock() }

func (r *countingRecorder) Refused(_, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refused == nil {
		r.refused = map[string]int{}
	}
	r.refused[reason]++
}

// startGrain spawns a grain for identity "a" on a loopback remote, as
// the cluster would activate it, and returns a function asking it.
func startGrain(t *testing.T, o KindOptions, fetches *atomic.Int64) func(*tokenpb.GetToken) *tokenpb.TokenReply {
	props := grainProps(func(string) (tokenmanager.Settings, error) {
		return tokenmanager.Settings{GetCredentials: func(context.Context) (tokenmanager.Token, error) {
			fetches.Add(1)
			return tokenmanager.Token{AccessToken: "t", ExpiresIn: 60}, nil
		}}, nil
	}, o)
	system := quietSystem()
	pid := system.Root.Spawn(props)
	t.Cleanup(func() {
		system.Root.StopFuture(pid).Wait()
		system.Shutdown()
	})
	system.Root.Send(pid, &cluster.ClusterInit{Identity: cluster.NewClusterIdentity("a", Kind), Cluster: clusterOn(remote.Configure("127.0.0.1", 0))})
	return func(m *tokenpb.GetToken) *tokenpb.TokenReply {
		res, err := system.Root.RequestFuture(pid, m, 2*time.Second).Result()
		if err != nil {
			t.Fatal(err)
		}
		return res.(*tokenpb.TokenReply)
	}
}

// During a rollout that changes an identity's settings, a grain refuses a
// member whose settings fingerprint differs from its own, and says so.
func TestGrain_refusesOtherSettings(t *testing.T) {
	var fetches atomic.Int64
	var rec countingRecorder
	ask := startGrain(t, KindOptions{Fingerprint: func(string) string { return "scopes=read;secret=v2" }, Metrics: &rec}, &fetches)
	if r := ask(&tokenpb.GetToken{WaitMs: 1000, Fingerprint: "scopes=read;secret=v1"}); !r.GetRefused() || r.GetAccessToken() != "" {
		t.Fatalf("other settings: refused=%v token=%v; want refused, no token", r.GetRefused(), r.GetAccessToken() != "")
	}
	if fetches.Load() != 0 {
		t.Errorf("%d fetches for a refused member; want 0", fetches.Load())
	}
	if r := ask(&tokenpb.GetToken{WaitMs: 1000, Fingerprint: "scopes=read;secret=v2"}); r.GetRefused() || r.GetAccessToken() != "t" {
		t.Fatalf("same settings: %v; want the token", r)
	}
	if r := ask(&tokenpb.GetToken{WaitMs: 1000}); r.GetAccessToken() != "t" {
		t.Fatalf("no fingerprint (not checked): %v; want the token", r)
	}
	if rec.refused[RefusedStaleConfig] != 1 {
		t.Errorf("refusals recorded: %v; want one stale_config", rec.refused)
	}
}

func TestGrain_answersProbesWithoutFetching(t *testing.T) {
	var fetches atomic.Int64
	ask := startGrain(t, KindOptions{}, &fetches)
	if r := ask(&tokenpb.GetToken{Probe: true}); r.GetError() != "" || r.GetAccessToken() != "" || r.GetRefused() {
		t.Fatalf("probe answered %v; want an empty reply", r)
	}
	if fetches.Load() != 0 {
		t.Errorf("a probe caused %d fetches", fetches.Load())
	}
}

func TestReadiness_notReady(t *testing.T) {
	for _, tt := range []struct {
		name string
		rc   *remote.Config
		want string
	}{
		{"insecure remote", remote.Configure("0.0.0.0", 8090), "plaintext"},
		{"not joined", remote.Configure("127.0.0.1", 8090), "has not joined"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			system := quietSystem()
			defer system.Shutdown()
			c := &cluster.Cluster{ActorSystem: system, Config: &cluster.Config{RemoteConfig: tt.rc}}
			r := NewReadiness(c, 100*time.Millisecond)
			defer r.Close()
			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("got %d %q; want 503 saying %q", rec.Code, rec.Body.String(), tt.want)
			}
		})
	}
}

// With RemoteOnly (protoactor's Kubernetes provider admits only ready
// pods), a member that has not joined is ready once its remote may carry
// tokens; an insecure remote still is not.
func TestReadiness_remoteOnly(t *testing.T) {
	for _, tt := range []struct {
		name     string
		rc       *remote.Config
		wantCode int
		want     string
	}{
		{"insecure remote", remote.Configure("0.0.0.0", 8090), http.StatusServiceUnavailable, "plaintext"},
		{"not joined, loopback", remote.Configure("127.0.0.1", 8090), http.StatusOK, "ok"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			system := quietSystem()
			defer system.Shutdown()
			c := &cluster.Cluster{ActorSystem: system, Config: &cluster.Config{RemoteConfig: tt.rc}}
			r := NewReadinessWith(c, ReadinessOptions{RemoteOnly: true})
			defer r.Close()
			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("got %d %q; want %d saying %q", rec.Code, rec.Body.String(), tt.wantCode, tt.want)
			}
		})
	}
}

// KindOptions.FetchWait bounds the grain's wait for a fetch in progress,
// below what the member would allow (WaitMs).
func TestGrain_fetchWaitConfigurable(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	props := grainProps(func(string) (tokenmanager.Settings, error) {
		return tokenmanager.Settings{GetCredentials: func(ctx context.Context) (tokenmanager.Token, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return tokenmanager.Token{}, ctx.Err()
		}}, nil
	}, KindOptions{FetchWait: 20 * time.Millisecond})
	system := quietSystem()
	pid := system.Root.Spawn(props)
	defer func() {
		system.Root.StopFuture(pid).Wait()
		system.Shutdown()
	}()
	system.Root.Send(pid, &cluster.ClusterInit{Identity: cluster.NewClusterIdentity("a", Kind), Cluster: clusterOn(remote.Configure("127.0.0.1", 0))})
	res, err := system.Root.RequestFuture(pid, &tokenpb.GetToken{WaitMs: 60_000}, 5*time.Second).Result()
	if err != nil {
		t.Fatalf("no answer within 5s: %v; want pending after FetchWait", err)
	}
	if r := res.(*tokenpb.TokenReply); !r.GetPending() {
		t.Errorf("got %v; want pending", r)
	}
}
