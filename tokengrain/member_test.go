package tokengrain_test

import (
	"context"
	"encoding/json"
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

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/tokengrain"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// A member is this test binary run again with memberEnv set: it joins the
// cluster (or, with TM_DIRECT, fetches on its own, for a baseline), sends
// requests for TM_RUN, and prints its figures as one JSON line. Members
// run as separate processes: two cluster members in one -race binary
// race inside protoactor's remote.
const memberEnv = "TM_MEMBER"

// memberStats is what a member prints when it is done.
type memberStats struct {
	Requests  int64 `json:"requests"`
	Failed    int64 `json:"failed"`
	Slow      int64 `json:"slow"` // slower than slowRequest
	MaxMs     int64 `json:"max_ms"`
	Fallbacks int64 `json:"fallbacks"`
	FirstErr  string
}

// slowRequest is what counts as a stalled request.
const slowRequest = 100 * time.Millisecond

// identity is the one identity every member serves.
const identity = "tenant-a"

// runMember is a member's whole life; it is called from TestMain.
func runMember() int {
	env := func(k string) string { return os.Getenv(k) }
	port, _ := strconv.Atoi(env("TM_PORT"))
	autoPort, _ := strconv.Atoi(env("TM_AUTO_PORT"))
	run, _ := time.ParseDuration(env("TM_RUN"))
	workers, _ := strconv.Atoi(env("TM_WORKERS"))
	hosts := strings.Split(env("TM_HOSTS"), ",")

	settingsFor := func(id string) (tokenmanager.Settings, error) {
		return tokenmanager.Settings{
			GetCredentials: providers.ClientCredentials(providers.ClientCredentialsConfig{
				TokenURL: env("TM_TOKEN_URL"), ClientID: id, ClientSecret: "s3cret", AuthStyle: providers.AuthStyleInParams,
			}),
			RefreshBuffer: time.Second,
		}, nil
	}
	var fallbacks atomic.Int64
	ownerSettings := tokenmanager.OwnerSettings{SettingsFor: settingsFor}
	var c *cluster.Cluster
	if env("TM_DIRECT") == "" {
		system := proto.NewActorSystem(proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger {
			return slog.New(slog.DiscardHandler)
		}))
		// The kind announces where the grain lives, for the parent.
		hostingSettings := func(id string) (tokenmanager.Settings, error) {
			fmt.Printf("HOSTED %s\n", id)
			return settingsFor(id)
		}
		provider := automanaged.NewWithConfig(500*time.Millisecond, autoPort, hosts...)
		var opts []cluster.ConfigOption
		if env("TM_CLIENT") == "" {
			opts = append(opts, cluster.WithKinds(tokengrain.NewKind(hostingSettings)))
		}
		cfg := cluster.Configure("tokenmanager-test", provider, disthash.New(),
			remote.Configure("127.0.0.1", port), append(opts, cluster.WithRequestTimeout(time.Second))...)
		c = cluster.New(system, cfg)
		if env("TM_CLIENT") != "" {
			c.StartClient()
		} else {
			c.StartMember()
		}
		ownerSettings.SettingsFor = tokengrain.SettingsFor(c, settingsFor, tokengrain.Options{
			OnFallback: func(string, error) { fallbacks.Add(1) },
		})
	}
	m, err := transport.NewMulti(ownerSettings)
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	fmt.Println("READY")
	// Start together: the parent says when.
	startAt, _ := strconv.ParseInt(env("TM_START_UNIX_MS"), 10, 64)
	time.Sleep(time.Until(time.UnixMilli(startAt)))

	var st memberStats
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(run)
	client := m.Client()
	for range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				req, _ := http.NewRequestWithContext(transport.WithIdentity(context.Background(), identity), http.MethodGet, env("TM_API_URL"), nil)
				began := time.Now()
				resp, err := client.Do(req)
				took := time.Since(began)
				ok := err == nil && resp.StatusCode == http.StatusOK
				if err == nil {
					resp.Body.Close()
				}
				mu.Lock()
				st.Requests++
				if !ok {
					st.Failed++
					if st.FirstErr == "" {
						st.FirstErr = fmt.Sprint(err, statusOf(resp))
					}
				}
				if took > slowRequest {
					st.Slow++
				}
				st.MaxMs = max(st.MaxMs, took.Milliseconds())
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	st.Fallbacks = fallbacks.Load()
	out, _ := json.Marshal(st)
	fmt.Printf("STATS %s\n", out)
	m.Close()
	switch {
	case c == nil:
	case env("TM_CLIENT") != "":
		// Shutdown needs gossip, which a client has none of.
		c.Remote.Shutdown(false)
		c.ActorSystem.Shutdown()
	default:
		c.Shutdown(true)
	}
	return 0
}

func statusOf(resp *http.Response) string {
	if resp == nil {
		return ""
	}
	return resp.Status
}
