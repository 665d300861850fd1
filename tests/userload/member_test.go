package userload_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/automanaged"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/pgstore"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/tokengrain"
	"github.com/go-tokenmanager/tokenmanager/transport"
	"github.com/go-tokenmanager/tokenmanager/users"
)

// A member process is this test binary run again with envMember set: it
// serves the users' tokens in one of three modes and sends requests for
// them, then prints its figures.

// Modes: how members get their users' access tokens.
const (
	// modeGrain: the cluster grain of each user refreshes, over pgstore
	// (with its lock); members ask it for access tokens.
	modeGrain = "grain"
	// modeLock: each member refreshes for itself, over pgstore with its
	// lock: replicas take turns.
	modeLock = "lock"
	// modeNoLock: each member refreshes for itself over a store shared
	// without a lock: how replicas share refresh tokens today.
	modeNoLock = "nolock"
)

// The member's configuration, set by the parent.
const (
	envMember   = "TM_USERLOAD_MEMBER" // the member's name; set in members only
	envMode     = "TM_USERLOAD_MODE"
	envDSN      = "TM_USERLOAD_DSN"
	envKeys     = "TM_USERLOAD_KEYS" // users.ParseKeys
	envTokenURL = "TM_USERLOAD_TOKEN_URL"
	envAPIURL   = "TM_USERLOAD_API_URL"
	envUsers    = "TM_USERLOAD_USERS" // how many users: user0 ... userN-1
	envPort     = "TM_USERLOAD_PORT"  // remote port
	envAutoPort = "TM_USERLOAD_AUTO_PORT"
	envHosts    = "TM_USERLOAD_HOSTS" // every member's automanaged host:port
	envStart    = "TM_USERLOAD_START_UNIX_MS"
	envRun      = "TM_USERLOAD_RUN" // how long to send requests; 0: until stdin closes
	envWorkers  = "TM_USERLOAD_WORKERS"
)

// Token lifetimes: access tokens live lifetime, refreshed buffer early.
const (
	lifetimeSeconds = 2
	refreshBuffer   = 500 * time.Millisecond
)

// identity is user i's identity.
func identity(i int) string {
	return users.Identity{User: "user" + strconv.Itoa(i), Client: "app"}.String()
}

// memberStats is what a member prints when its run is over.
type memberStats struct {
	Requests int64  `json:"requests"`
	Failed   int64  `json:"failed"`
	Reauth   int64  `json:"reauth"`  // requests failed with ErrReauthRequired
	Revoked  int64  `json:"revoked"` // RefreshTokenRevoked events
	Rotated  int64  `json:"rotated"` // RefreshTokenRotated events
	FirstErr string `json:"first_err"`
}

// userAgent names the member in its token requests: the server records
// which member each refresh token went to.
type userAgent struct {
	name string
	next http.RoundTripper
}

func (u userAgent) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", u.name)
	return u.next.RoundTrip(r)
}

// runMember is a member's whole life; it returns its exit code.
func runMember() int {
	env := os.Getenv
	fail := func(err error) int {
		fmt.Println("ERROR", err)
		return 1
	}
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(env(envDSN))
	if err != nil {
		return fail(err)
	}
	cfg.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	defer pool.Close()
	pg, err := pgstore.New(ctx, pool, pgstore.Options{})
	if err != nil {
		return fail(err)
	}
	var store users.Store = pg
	if env(envMode) == modeNoLock {
		store = struct{ users.Store }{pg} // the lock hidden
	}
	keys, err := users.ParseKeys(env(envKeys))
	if err != nil {
		return fail(err)
	}
	httpClient := &http.Client{Transport: userAgent{name: env(envMember) + "/" + strconv.Itoa(os.Getpid()), next: http.DefaultTransport}}
	refreshing := func(id string) (tokenmanager.Settings, error) {
		return tokenmanager.Settings{
			GetCredentials: providers.RefreshToken(providers.RefreshTokenConfig{
				TokenURL: env(envTokenURL), Identity: id, Store: store, Keys: keys,
				Auth: providers.NoClientAuth("app"), HTTPClient: httpClient,
			}),
			RefreshBuffer: refreshBuffer,
		}, nil
	}
	owner := tokenmanager.OwnerSettings{SettingsFor: refreshing}
	var c *cluster.Cluster
	if env(envMode) == modeGrain {
		port, _ := strconv.Atoi(env(envPort))
		autoPort, _ := strconv.Atoi(env(envAutoPort))
		system := proto.NewActorSystem(proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger {
			return slog.New(slog.DiscardHandler)
		}))
		provider := automanaged.NewWithConfig(300*time.Millisecond, autoPort, strings.Split(env(envHosts), ",")...)
		c = cluster.New(system, cluster.Configure("userload", provider, disthash.New(),
			remote.Configure("127.0.0.1", port),
			cluster.WithKinds(tokengrain.NewKind(refreshing)), cluster.WithRequestTimeout(2*time.Second)))
		c.StartMember()
		// Members never refresh: with no provider of their own, a
		// member whose grain does not answer fails the request rather
		// than spend the refresh token beside the grain.
		member := func(string) (tokenmanager.Settings, error) {
			return tokenmanager.Settings{RefreshBuffer: refreshBuffer}, nil
		}
		owner.SettingsFor = tokengrain.SettingsFor(c, member, tokengrain.Options{Timeout: 2 * time.Second})
	}
	m, err := transport.NewMulti(owner)
	if err != nil {
		return fail(err)
	}
	var st memberStats
	var revoked, rotated atomic.Int64
	m.Subscribe(func(ev messages.Event) {
		switch ev.(type) {
		case messages.RefreshTokenRevoked:
			revoked.Add(1)
		case messages.RefreshTokenRotated:
			rotated.Add(1)
		}
	})
	fmt.Println("READY")

	n, _ := strconv.Atoi(env(envUsers))
	workers, _ := strconv.Atoi(env(envWorkers))
	run, _ := time.ParseDuration(env(envRun))
	startAt, _ := strconv.ParseInt(env(envStart), 10, 64)
	time.Sleep(time.Until(time.UnixMilli(startAt)))
	stop := make(chan struct{})
	if run > 0 {
		time.AfterFunc(run, func() { close(stop) })
	} else {
		go func() { // until the parent closes stdin
			_, _ = os.Stdin.Read(make([]byte, 1))
			close(stop)
		}()
	}
	client := m.Client()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequestWithContext(transport.WithIdentity(ctx, identity(i%n)), http.MethodGet, env(envAPIURL), nil)
				resp, err := client.Do(req)
				ok := err == nil && resp.StatusCode == http.StatusOK
				if err == nil {
					resp.Body.Close()
				}
				mu.Lock()
				st.Requests++
				if !ok {
					st.Failed++
					if errors.Is(err, tokenmanager.ErrReauthRequired) {
						st.Reauth++
					}
					if st.FirstErr == "" {
						st.FirstErr = fmt.Sprint(err, statusOf(resp))
					}
				}
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	m.Close() // delivers the events queued
	st.Revoked, st.Rotated = revoked.Load(), rotated.Load()
	out, _ := json.Marshal(st)
	fmt.Printf("STATS %s\n", out)
	if c != nil {
		c.Shutdown(true)
	}
	// A grain stopped above may still be saving a rotation it was
	// answered: exit once none is in flight.
	drain, cancel := context.WithTimeout(ctx, 35*time.Second)
	defer cancel()
	if err := providers.DrainRefreshes(drain); err != nil {
		return fail(err)
	}
	return 0
}

func statusOf(resp *http.Response) string {
	if resp == nil {
		return ""
	}
	return resp.Status
}
