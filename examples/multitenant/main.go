// Command multitenant shows transport.MultiRoundTripper serving 1,000
// tenants through one http.Client: each tenant has its own OAuth 2.0
// client (client credentials) and its own token, fetched on the tenant's
// first request, refreshed while the tenant is busy, and forgotten
// (passivated) once it has been idle for two seconds. Midway, the API
// revokes a busy tenant's token; its next request recovers with a fresh
// one. Everything runs on 127.0.0.1 and ends after about ten seconds.
package main

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

const (
	tenants  = 1000
	hotEvery = 20 // every 20th tenant is busy: a hot set of 50
	workers  = 8
	lifetime = 4 // seconds a token lives
	runFor   = 9 * time.Second
)

func tenantID(i int) string { return fmt.Sprintf("tenant-%04d", i) }

// secretOf is each tenant's client secret; a real SettingsFor would read
// it from a secret store.
func secretOf(id string) string { return "secret-" + id }

// grant is what the token server remembers of a token it issued.
type grant struct {
	tenant  string
	expires time.Time
}

func main() {
	if failed := run(); failed > 0 {
		os.Exit(1)
	}
}

// run runs the demo and returns how many requests failed.
func run() int64 {
	start := time.Now()
	logf := func(format string, args ...any) {
		fmt.Printf("[%4.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	// The token server: the client-credentials grant, client
	// authentication by HTTP Basic or in the body, one opaque token per
	// request, tied to the client it was issued to.
	var (
		mu            sync.Mutex
		issued        = map[string]grant{}
		tokenRequests atomic.Int64
	)
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tokenRequests.Add(1)
		id, secret, ok := r.BasicAuth()
		if ok { // RFC 6749 §2.3.1: both are form-url-encoded before Basic
			id, _ = url.QueryUnescape(id)
			secret, _ = url.QueryUnescape(secret)
		} else {
			id, secret = r.PostFormValue("client_id"), r.PostFormValue("client_secret")
		}
		w.Header().Set("Content-Type", "application/json")
		if r.PostFormValue("grant_type") != "client_credentials" || !strings.HasPrefix(id, "tenant-") || secret != secretOf(id) {
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client"})
			return
		}
		tok := crand.Text()
		mu.Lock()
		issued[tok] = grant{tenant: id, expires: time.Now().Add(lifetime * time.Second)}
		mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": lifetime})
	}))
	defer idp.Close()

	// The API: a request must carry an unexpired token issued to the
	// tenant named in its path (or, for /whoami, to any tenant).
	var apiOK, apiRejected atomic.Int64
	tenantOf := func(r *http.Request) (string, bool) {
		mu.Lock()
		g, ok := issued[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		mu.Unlock()
		return g.tenant, ok && time.Now().Before(g.expires)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /tenants/{id}/orders", func(w http.ResponseWriter, r *http.Request) {
		if t, ok := tenantOf(r); !ok || t != r.PathValue("id") {
			apiRejected.Add(1)
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		apiOK.Add(1)
		fmt.Fprintf(w, `{"tenant":%q,"orders":[]}`, r.PathValue("id"))
	})
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		t, ok := tenantOf(r)
		if !ok {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, t)
	})
	api := httptest.NewServer(mux)
	defer api.Close()
	logf("token server at %s, API at %s; %d tenants, %d of them busy", idp.URL, api.URL, tenants, tenants/hotEvery)

	// One connection pool for token requests and API calls alike.
	pool := http.DefaultTransport.(*http.Transport).Clone()
	pool.MaxIdleConnsPerHost = 2 * workers
	defer pool.CloseIdleConnections()

	// The client: one MultiRoundTripper for every tenant. SettingsFor is
	// called on a tenant's first request (and again after it was
	// passivated), never on the request's goroutine. The identity of each
	// request is read from its path by the resolver.
	m, err := transport.NewMulti(tokenmanager.OwnerSettings{
		SettingsFor: func(id string) (tokenmanager.Settings, error) {
			if !strings.HasPrefix(id, "tenant-") {
				return tokenmanager.Settings{}, fmt.Errorf("unknown tenant %q", id)
			}
			return tokenmanager.Settings{
				GetCredentials: providers.ClientCredentials(providers.ClientCredentialsConfig{
					TokenURL:     idp.URL, // plain http is fine to 127.0.0.1
					ClientID:     id,
					ClientSecret: secretOf(id),
					Scopes:       []string{"orders:read"},
					AuthStyle:    providers.AuthStyleInHeader,
					HTTPClient:   &http.Client{Transport: pool},
				}),
			}, nil
		},
		IdleTimeout: 2 * time.Second, // forget a tenant idle this long
		EventBuffer: 1 << 14,         // room for a burst of 1,000 cold starts
	},
		transport.WithBase(pool),
		transport.WithResolver(func(r *http.Request) (string, error) {
			rest, ok := strings.CutPrefix(r.URL.Path, "/tenants/")
			if id, _, _ := strings.Cut(rest, "/"); ok && id != "" {
				return id, nil
			}
			return "", fmt.Errorf("no tenant in path %q", r.URL.Path)
		}),
	)
	if err != nil {
		log.Fatal(err)
	}

	// Every event names its identity; count what this demo shows.
	var refreshed, passivated, authFailed, recovered, failures atomic.Int64
	unsubscribe := m.Subscribe(func(ev messages.Event) {
		switch e := ev.(type) {
		case messages.TokenRefreshed:
			refreshed.Add(1)
		case messages.IdentityPassivated:
			passivated.Add(1)
		case messages.AuthFailed:
			authFailed.Add(1)
		case messages.RecoveryTried:
			recovered.Add(1)
			logf("%s: request resent with a fresh token %s (recovery try %d)", e.Identity, e.Fingerprint, e.Attempt)
		case messages.TokenRequestFailed, messages.RecoveryAborted, messages.TokenTryThresholdReached:
			failures.Add(1)
			logf("event %s: %+v", ev.Name(), ev)
		}
	})

	client := m.Client()
	var requests, failed atomic.Int64
	get := func(ctx context.Context, c *http.Client, path string) string {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		requests.Add(1)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api.URL+path, nil)
		resp, err := c.Do(req)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = errors.New(resp.Status)
			}
		}
		if err != nil {
			if failed.Add(1) <= 5 {
				logf("request %s failed: %v", path, err)
			}
			return ""
		}
		return string(body)
	}

	// A request whose URL names no tenant picks its identity from its
	// context instead; the context wins over the resolver.
	who := get(transport.WithIdentity(context.Background(), "tenant-0042"), client, "/whoami")
	logf("GET /whoami with transport.WithIdentity(ctx, \"tenant-0042\"): the API sees %s", who)

	// The traffic: each worker sends its share of the 1,000 tenants one
	// request each (they go idle after that), interleaved with requests
	// for random busy tenants until the run ends.
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for next := w; !stop.Load(); next += workers {
				if next < tenants {
					get(context.Background(), client, "/tenants/"+tenantID(next)+"/orders")
				}
				get(context.Background(), client, "/tenants/"+tenantID(hotEvery*rand.IntN(tenants/hotEvery))+"/orders")
				time.Sleep(time.Millisecond)
			}
		})
	}

	// A line a second: live tenants fall from 1,000 to the busy ones as
	// idle tenants are passivated; fetches grow with each busy tenant's
	// refreshes (every ~2s while it is used).
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	revoked, returned := false, false
	for time.Since(start) < runFor {
		<-ticker.C
		logf("live=%d fetches=%d passivated=%d requests=%d failed=%d recovered=%d",
			m.Live(), tokenRequests.Load(), passivated.Load(), requests.Load(), failed.Load(), recovered.Load())
		if elapsed := time.Since(start); elapsed >= 5*time.Second && !revoked {
			// The API revokes every token of a busy tenant early; its
			// next request gets a 401, and recovers with a fresh token.
			revoked = true
			const victim = "tenant-0060"
			tok, err := m.Token(context.Background(), victim)
			if err != nil {
				log.Fatal(err)
			}
			logf("the API revokes %s's token %s", victim, tokenmanager.Fingerprint(tok.AccessToken))
			mu.Lock()
			for t, g := range issued {
				if g.tenant == victim {
					delete(issued, t)
				}
			}
			mu.Unlock()
		} else if elapsed >= 6*time.Second && !returned {
			// Ten passivated tenants come back: each gets a new token
			// actor and a new token. m.For pins the identity instead.
			returned = true
			for i := 1; i <= 10; i++ {
				get(context.Background(), &http.Client{Transport: m.For(tenantID(i))}, "/tenants/"+tenantID(i)+"/orders")
			}
			logf("tenants %s..%s came back after being passivated", tenantID(1), tenantID(10))
		}
	}
	stop.Store(true)
	wg.Wait()

	time.Sleep(50 * time.Millisecond) // let the last events arrive
	live := m.Live()
	unsubscribe()
	if err := m.Close(); err != nil {
		logf("close: %v", err)
	}
	logf("events: token_refreshed=%d identity_passivated=%d auth_failed=%d recovery_tried=%d failures=%d dropped=%d; API: ok=%d rejected=%d",
		refreshed.Load(), passivated.Load(), authFailed.Load(), recovered.Load(), failures.Load(), m.DroppedEvents(), apiOK.Load(), apiRejected.Load())
	fmt.Printf("multitenant: tenants=%d requests=%d failed=%d fetches=%d passivations=%d live_at_end=%d\n",
		tenants, requests.Load(), failed.Load(), tokenRequests.Load(), passivated.Load(), live)
	return failed.Load()
}
