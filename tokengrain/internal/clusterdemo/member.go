package clusterdemo

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/automanaged"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/etcd"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/tokengrain"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// MemberEnv is the environment variable that makes a process a member:
// [Start] sets it, [RunMemberIfChild] looks for it. Members run as
// separate processes: two cluster members in one -race binary race inside
// protoactor's remote.
const MemberEnv = "TM_MEMBER"

// The rest of a member's configuration, set by [Start].
const (
	envPort      = "TM_PORT"          // the member's remote port
	envAutoPort  = "TM_AUTO_PORT"     // its automanaged provider's port
	envHosts     = "TM_HOSTS"         // every member's automanaged host:port
	envTokenURL  = "TM_TOKEN_URL"     // the token endpoint
	envAPIURL    = "TM_API_URL"       // the API to call
	envRun       = "TM_RUN"           // how long to send requests
	envWorkers   = "TM_WORKERS"       // how many workers send them
	envStart     = "TM_START_UNIX_MS" // when to start, in Unix milliseconds
	envProgress  = "TM_PROGRESS"      // print PROGRESS lines
	envDirect    = "TM_DIRECT"        // Direct mode
	envClient    = "TM_CLIENT"        // Client mode
	envStranger  = "TM_STRANGER"      // Stranger mode
	envTLSDir    = "TM_TLS_DIR"       // mutual TLS credentials
	envAdvertise = "TM_ADVERTISE"     // the address to advertise
	envEtcd      = "TM_ETCD"          // etcd endpoints (comma-separated): the etcd provider
	envEtcdKey   = "TM_ETCD_KEY"      // the cluster's base key in etcd
)

// Identity is the one identity every member serves.
const Identity = "tenant-a"

// SlowRequest is what counts as a stalled request in [Stats].Slow.
const SlowRequest = 100 * time.Millisecond

// Stats is what a member prints when its run is over.
type Stats struct {
	Requests  int64 `json:"requests"`
	Failed    int64 `json:"failed"`
	Slow      int64 `json:"slow"` // slower than SlowRequest
	MaxMs     int64 `json:"max_ms"`
	Fallbacks int64 `json:"fallbacks"` // fetches of its own: the cluster did not answer
	// FallbackEvents counts the messages.ClusterFallback events its
	// owner published (one per fallback); FetchFailures its
	// token_request_failed events (each a backoff).
	FallbackEvents int64 `json:"fallback_events"`
	FetchFailures  int64 `json:"fetch_failures"`
	FirstErr       string
	Tokens         int64 `json:"tokens"` // Stranger mode: asks answered with a token
	// Hosts says the member hosted the grain when it measured AskP50Us
	// and AskP99Us: the latency of asking the grain for its cached token
	// (a member's miss), in microseconds, over 200 asks.
	Hosts    bool  `json:"hosts"`
	AskP50Us int64 `json:"ask_p50_us"`
	AskP99Us int64 `json:"ask_p99_us"`
}

// askLatency asks the grain for its cached token 200 times and returns
// the p50 and p99 latency in microseconds.
func askLatency(c *cluster.Cluster) (p50, p99 int64) {
	var took []time.Duration
	for range 200 {
		began := time.Now()
		if _, err := tokengrain.Ask(context.Background(), c, Identity, time.Second); err != nil {
			continue
		}
		took = append(took, time.Since(began))
	}
	if len(took) == 0 {
		return 0, 0
	}
	slices.Sort(took)
	return took[len(took)/2].Microseconds(), took[len(took)*99/100].Microseconds()
}

// Progress is what a member prints each second when asked to.
type Progress struct {
	Requests int64 `json:"requests"`
	Failed   int64 `json:"failed"`
	Slow     int64 `json:"slow"`
}

// RunMemberIfChild runs a member's whole life if this process was started
// as one by [Start] (MemberEnv is set), and returns its exit code with
// isChild true; otherwise it returns at once with isChild false. Call it
// first thing in TestMain or main:
//
//	if code, ok := clusterdemo.RunMemberIfChild(); ok {
//		os.Exit(code)
//	}
func RunMemberIfChild() (exitCode int, isChild bool) {
	if os.Getenv(MemberEnv) == "" {
		return 0, false
	}
	return runMember(), true
}

// runMember joins the cluster (or, in Direct mode, fetches on its own),
// sends requests for the run, and prints its figures as one JSON line.
func runMember() int {
	env := os.Getenv
	port, _ := strconv.Atoi(env(envPort))
	autoPort, _ := strconv.Atoi(env(envAutoPort))
	run, _ := time.ParseDuration(env(envRun))
	workers, _ := strconv.Atoi(env(envWorkers))
	hosts := strings.Split(env(envHosts), ",")

	settingsFor := func(id string) (tokenmanager.Settings, error) {
		return tokenmanager.Settings{
			GetCredentials: providers.ClientCredentials(providers.ClientCredentialsConfig{
				TokenURL: env(envTokenURL), ClientID: id, ClientSecret: "s3cret", AuthStyle: providers.AuthStyleInParams,
			}),
			RefreshBuffer: time.Second,
		}, nil
	}
	var fallbacks atomic.Int64
	var hosting atomic.Bool // the grain was activated here (it may have moved since)
	ownerSettings := tokenmanager.OwnerSettings{SettingsFor: settingsFor}
	var c *cluster.Cluster
	if env(envDirect) == "" {
		system := proto.NewActorSystem(proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger {
			return slog.New(slog.DiscardHandler)
		}))
		// The kind announces where the grain lives, for the parent.
		hostingSettings := func(id string) (tokenmanager.Settings, error) {
			fmt.Printf("HOSTED %s\n", id)
			hosting.Store(true)
			return settingsFor(id)
		}
		var provider cluster.ClusterProvider = automanaged.NewWithConfig(500*time.Millisecond, autoPort, hosts...)
		if endpoints := env(envEtcd); endpoints != "" {
			p, err := etcd.NewWithConfig(env(envEtcdKey), clientv3.Config{
				Endpoints:   strings.Split(endpoints, ","),
				DialTimeout: 5 * time.Second,
			})
			if err != nil {
				fmt.Println("ERROR", err)
				return 1
			}
			provider = p
		}
		var opts []cluster.ConfigOption
		if env(envClient) == "" {
			opts = append(opts, cluster.WithKinds(tokengrain.NewKind(hostingSettings)))
		}
		var remoteOpts []remote.ConfigOption
		if dir := env(envTLSDir); dir != "" {
			tlsCfg, err := tokengrain.TLSFiles{
				CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"),
				CAFile: filepath.Join(dir, "ca.crt"), ServerName: ServerName,
			}.Config()
			if err != nil {
				fmt.Println("ERROR", err)
				return 1
			}
			remoteOpts = append(remoteOpts, tokengrain.MutualTLS(tlsCfg))
		}
		if adv := env(envAdvertise); adv != "" {
			remoteOpts = append(remoteOpts, remote.WithAdvertisedHost(adv))
		}
		cfg := cluster.Configure("tokenmanager-test", provider, disthash.New(),
			remote.Configure("127.0.0.1", port, remoteOpts...), append(opts, cluster.WithRequestTimeout(time.Second))...)
		c = cluster.New(system, cfg)
		readiness := tokengrain.NewReadiness(c, time.Second)
		defer readiness.Close()
		if env(envClient) != "" {
			c.StartClient()
		} else {
			c.StartMember()
			fmt.Printf("READINESS %s\n", awaitReady(readiness))
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
	var fallbackEvents, fetchFailures atomic.Int64
	m.Subscribe(func(ev messages.Event) {
		switch ev.(type) {
		case messages.ClusterFallback:
			fallbackEvents.Add(1)
		case messages.TokenRequestFailed:
			fetchFailures.Add(1)
		}
	})
	fmt.Println("READY")
	// Start together: the parent says when.
	startAt, _ := strconv.ParseInt(env(envStart), 10, 64)
	time.Sleep(time.Until(time.UnixMilli(startAt)))
	if env(envStranger) != "" {
		st := strangerRun(c, run)
		out, _ := json.Marshal(st)
		fmt.Printf("STATS %s\n", out)
		m.Close()
		shutdownClient(c)
		return 0
	}

	var st Stats
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(run)
	client := m.Client()
	for range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				req, _ := http.NewRequestWithContext(transport.WithIdentity(context.Background(), Identity), http.MethodGet, env(envAPIURL), nil)
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
				if took > SlowRequest {
					st.Slow++
				}
				st.MaxMs = max(st.MaxMs, took.Milliseconds())
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	stopProgress := func() {}
	if env(envProgress) != "" {
		stop := make(chan struct{})
		var reporter sync.WaitGroup
		reporter.Go(func() {
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				mu.Lock()
				p := Progress{Requests: st.Requests, Failed: st.Failed, Slow: st.Slow}
				mu.Unlock()
				out, _ := json.Marshal(p)
				fmt.Printf("PROGRESS %s\n", out)
			}
		})
		stopProgress = func() { close(stop); reporter.Wait() }
	}
	wg.Wait()
	stopProgress()
	st.Fallbacks = fallbacks.Load()
	if c != nil && env(envClient) == "" {
		st.Hosts = hosting.Load()
		st.AskP50Us, st.AskP99Us = askLatency(c)
	}
	m.Close() // delivers the events queued
	st.FallbackEvents, st.FetchFailures = fallbackEvents.Load(), fetchFailures.Load()
	out, _ := json.Marshal(st)
	fmt.Printf("STATS %s\n", out)
	switch {
	case c == nil:
	case env(envClient) != "":
		shutdownClient(c)
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

// strangerRun asks the grain for the token, and nothing else, for run.
func strangerRun(c *cluster.Cluster, run time.Duration) Stats {
	var st Stats
	for deadline := time.Now().Add(run); time.Now().Before(deadline); {
		st.Requests++
		tok, err := tokengrain.Ask(context.Background(), c, Identity, 300*time.Millisecond)
		switch {
		case err != nil:
			st.Failed++
			if st.FirstErr == "" {
				st.FirstErr = err.Error()
			}
		case tok.AccessToken != "":
			st.Tokens++
		}
		time.Sleep(20 * time.Millisecond)
	}
	return st
}

// shutdownClient shuts a cluster client down (cluster.Shutdown panics
// for a client).
func shutdownClient(c *cluster.Cluster) { tokengrain.ShutdownClient(c, false) }

// awaitReady checks r until the member is ready, for up to 5s, and
// returns "ok" or the last reason it was not.
func awaitReady(r *tokengrain.Readiness) string {
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = r.Check(context.Background()); err == nil {
			return "ok"
		}
	}
	return err.Error()
}
