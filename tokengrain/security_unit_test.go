package tokengrain

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/remote"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/loopcert"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/tokengrain/tokenpb"
)

func quietSystem() *proto.ActorSystem {
	return proto.NewActorSystem(proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
}

// clusterOn is a cluster value with only a remote configuration: enough
// for CheckRemote, never started.
func clusterOn(rc *remote.Config) *cluster.Cluster {
	return &cluster.Cluster{Config: &cluster.Config{RemoteConfig: rc}}
}

func mtlsConfig(t *testing.T) *tls.Config {
	cert, pool, err := loopcert.New()
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool}
}

func TestCheckRemote(t *testing.T) {
	tests := []struct {
		name   string
		rc     *remote.Config
		wantOK bool
	}{
		{"plaintext on all interfaces", remote.Configure("0.0.0.0", 8090), false},
		{"plaintext on an empty host (all interfaces)", remote.Configure("", 8090), false},
		{"plaintext on a pod IP", remote.Configure("10.1.2.3", 8090), false},
		{"plaintext on loopback", remote.Configure("127.0.0.1", 8090), true},
		{"plaintext on ::1", remote.Configure("::1", 8090), true},
		{"plaintext on loopback, advertised elsewhere", remote.Configure("127.0.0.1", 8090, remote.WithAdvertisedHost("10.1.2.3:8090")), false},
		{"mutual TLS on all interfaces", remote.Configure("0.0.0.0", 8090, MutualTLS(mtlsConfig(t))), true},
		{"mutual TLS without a CA", remote.Configure("0.0.0.0", 8090, MutualTLS(&tls.Config{Certificates: mtlsConfig(t).Certificates})), false},
		{"mutual TLS skipping verification", remote.Configure("0.0.0.0", 8090, MutualTLS(&tls.Config{Certificates: mtlsConfig(t).Certificates, ClientCAs: mtlsConfig(t).ClientCAs, InsecureSkipVerify: true})), false},
		{"plaintext on all interfaces, opted out", remote.Configure("0.0.0.0", 8090, AllowInsecureHTTP()), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckRemote(clusterOn(tt.rc))
			if (err == nil) != tt.wantOK {
				t.Fatalf("CheckRemote = %v; want ok %v", err, tt.wantOK)
			}
		})
	}
	if err := CheckRemote(clusterOn(remote.Configure("0.0.0.0", 8090))); !errors.Is(err, ErrInsecureRemote) {
		t.Errorf("CheckRemote = %v; want ErrInsecureRemote", err)
	}
}

// A grain on a plaintext remote bound to all interfaces refuses to serve
// a token, without fetching one; with the opt-out it serves.
func TestGrain_refusesOverAnInsecureRemote(t *testing.T) {
	for _, tt := range []struct {
		name    string
		rc      *remote.Config
		refused bool
	}{
		{"plaintext on 0.0.0.0", remote.Configure("0.0.0.0", 8090), true},
		{"plaintext on 0.0.0.0 with AllowInsecureHTTP", remote.Configure("0.0.0.0", 8090, AllowInsecureHTTP()), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var fetches atomic.Int64
			props := grainProps(func(string) (tokenmanager.Settings, error) {
				return tokenmanager.Settings{GetCredentials: func(context.Context) (tokenmanager.Token, error) {
					fetches.Add(1)
					return tokenmanager.Token{AccessToken: "secret-token", ExpiresIn: 60}, nil
				}}, nil
			}, KindOptions{Idle: time.Minute, FetchWait: time.Second})
			system := quietSystem()
			defer system.Shutdown()
			pid := system.Root.Spawn(props)
			defer func() { system.Root.StopFuture(pid).Wait() }()
			system.Root.Send(pid, &cluster.ClusterInit{Identity: cluster.NewClusterIdentity("a", Kind), Cluster: clusterOn(tt.rc)})
			res, err := system.Root.RequestFuture(pid, &tokenpb.GetToken{WaitMs: 1000}, 2*time.Second).Result()
			if err != nil {
				t.Fatal(err)
			}
			r := res.(*tokenpb.TokenReply)
			if r.GetRefused() != tt.refused || (r.GetAccessToken() != "") == tt.refused {
				t.Fatalf("reply refused=%v token=%v (%s); want refused %v", r.GetRefused(), r.GetAccessToken() != "", r.GetError(), tt.refused)
			}
			if tt.refused && fetches.Load() != 0 {
				t.Errorf("%d fetches; a refusing grain fetches nothing", fetches.Load())
			}
		})
	}
}

// A member on such a remote sends no ask (not even the rejected token it
// would hand over): it fetches on its own, and says why.
func TestMember_insecureRemoteFetchesDirectly(t *testing.T) {
	c := clusterOn(remote.Configure("0.0.0.0", 8090))
	var why error
	settingsFor := func(string) (tokenmanager.Settings, error) {
		return tokenmanager.Settings{GetCredentials: func(context.Context) (tokenmanager.Token, error) {
			return tokenmanager.Token{AccessToken: "direct", ExpiresIn: 60}, nil
		}}, nil
	}
	s, err := SettingsFor(c, settingsFor, Options{OnFallback: func(_ string, err error) { why = err }})("a")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.GetCredentials(fetchCtx(messages.ReasonInvalidated, "old-token"))
	if err != nil || tok.AccessToken != "direct" {
		t.Fatalf("got %v, %v; want the direct token", tok, err)
	}
	var fb *Fallback
	if !errors.As(why, &fb) || fb.Reason != ReasonInsecure || !errors.Is(why, ErrInsecureRemote) {
		t.Errorf("OnFallback got %v; want a Fallback for an insecure remote", why)
	}
}
