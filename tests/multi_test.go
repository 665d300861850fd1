package tests

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/actor"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// tenants hands out settings per identity: each identity gets a provider
// of its own issuing "<identity>-1", "<identity>-2", ... It counts
// SettingsFor calls, and can be told to fail or hang for one identity.
type tenants struct {
	clock     *clock.Mock
	expiresIn int64

	mu        sync.Mutex
	providers map[string]*testutil.Provider
	calls     map[string]int
	fail      map[string]error
	hang      map[string]chan struct{}
}

func newTenants(mock *clock.Mock, expiresIn int64) *tenants {
	return &tenants{
		clock: mock, expiresIn: expiresIn,
		providers: map[string]*testutil.Provider{}, calls: map[string]int{},
		fail: map[string]error{}, hang: map[string]chan struct{}{},
	}
}

func (ts *tenants) settingsFor(identity string) (tokenmanager.Settings, error) {
	ts.mu.Lock()
	ts.calls[identity]++
	err, gate := ts.fail[identity], ts.hang[identity]
	p := ts.providers[identity]
	if p == nil {
		p = &testutil.Provider{Prefix: identity + "-", ExpiresIn: ts.expiresIn}
		ts.providers[identity] = p
	}
	ts.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if err != nil {
		return tokenmanager.Settings{}, err
	}
	return tokenmanager.Settings{GetCredentials: p.Get, Clock: ts.clock}, nil
}

func (ts *tenants) provider(identity string) *testutil.Provider {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.providers[identity]
}

func (ts *tenants) settingsCalls(identity string) int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.calls[identity]
}

func (ts *tenants) fetches(identity string) int64 {
	if p := ts.provider(identity); p != nil {
		return p.Calls.Load()
	}
	return 0
}

func newMulti(t *testing.T, ts *tenants, base http.RoundTripper, s tokenmanager.OwnerSettings, opts ...transport.Option) *transport.MultiRoundTripper {
	t.Helper()
	s.SettingsFor = ts.settingsFor
	if s.Clock == nil {
		s.Clock = ts.clock
	}
	return testutil.NewMulti(t, s, base, opts...)
}

// sendAs sends a GET as identity and returns what came back.
func sendAs(ctx context.Context, rt http.RoundTripper, identity string) result {
	if identity != "" {
		ctx = transport.WithIdentity(ctx, identity)
	}
	return send(ctx, rt, "")
}

func mustOKAs(t *testing.T, rt http.RoundTripper, identity string) result {
	t.Helper()
	r := sendAs(context.Background(), rt, identity)
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("request as %q: status %d, err %v; want 200", identity, r.status, r.err)
	}
	return r
}

func TestMulti_eachIdentityCarriesItsOwnToken(t *testing.T) {
	ts := newTenants(clock.NewMock(), 3600)
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{})
	for range 3 {
		for _, id := range []string{"acme", "globex", "initech"} {
			if r := mustOKAs(t, m, id); r.auth != "Bearer "+id+"-1" {
				t.Errorf("request as %s carried %q; want %s-1", id, r.auth, id)
			}
		}
	}
	for _, id := range []string{"acme", "globex", "initech"} {
		if got := ts.settingsCalls(id); got != 1 {
			t.Errorf("SettingsFor(%s) called %d times; want 1", id, got)
		}
		if got := ts.fetches(id); got != 1 {
			t.Errorf("%s fetched %d times; want 1", id, got)
		}
	}
	if got := m.Live(); got != 3 {
		t.Errorf("Live() = %d; want 3", got)
	}
}

func TestMulti_singleFlightPerIdentity(t *testing.T) {
	ts := newTenants(clock.NewMock(), 3600)
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{})
	ids := []string{"a", "b", "c", "d"}
	results := concurrently(400, func(i int) result { return sendAs(context.Background(), m, ids[i%len(ids)]) })
	for i, r := range results {
		if r.err != nil || r.status != http.StatusOK || r.auth != "Bearer "+ids[i%len(ids)]+"-1" {
			t.Fatalf("request %d: %+v; want 200 with its identity's first token", i, r)
		}
	}
	for _, id := range ids {
		if got := ts.fetches(id); got != 1 {
			t.Errorf("%s: %d provider calls for 100 concurrent cold requests; want 1", id, got)
		}
	}
}

func TestMulti_resolverAndFor(t *testing.T) {
	ts := newTenants(clock.NewMock(), 3600)
	byHost := func(req *http.Request) (string, error) {
		if req.URL.Host == "api.test" {
			return "aud:api", nil
		}
		return "", fmt.Errorf("no audience for %s", req.URL.Host)
	}
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{}, transport.WithResolver(byHost))
	if r := mustOKAs(t, m, ""); r.auth != "Bearer aud:api-1" {
		t.Errorf("resolved request carried %q; want aud:api-1", r.auth)
	}
	// The context's identity wins over the resolver.
	if r := mustOKAs(t, m, "explicit"); r.auth != "Bearer explicit-1" {
		t.Errorf("request with WithIdentity carried %q; want explicit-1", r.auth)
	}
	// A per-identity RoundTripper ignores both.
	if r := mustOKAs(t, m.For("billing"), "explicit"); r.auth != "Bearer billing-1" {
		t.Errorf("For(billing) carried %q; want billing-1", r.auth)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://other.test/x", nil)
	if _, err := m.RoundTrip(req); !errors.Is(err, transport.ErrNoIdentity) || !strings.Contains(err.Error(), "no audience") {
		t.Errorf("unresolvable request: err %v; want ErrNoIdentity with the resolver's reason", err)
	}
}

func TestMulti_noIdentityFailsUnsent(t *testing.T) {
	ts := newTenants(clock.NewMock(), 3600)
	b := &testutil.Backend{}
	m := newMulti(t, ts, b, tokenmanager.OwnerSettings{})
	if r := sendAs(context.Background(), m, ""); !errors.Is(r.err, transport.ErrNoIdentity) {
		t.Errorf("err %v; want ErrNoIdentity", r.err)
	}
	if n := len(b.Requests()); n != 0 {
		t.Errorf("backend saw %d requests; want 0", n)
	}
}

func TestMulti_hangingProviderDoesNotSlowOthers(t *testing.T) {
	ts := newTenants(clock.NewMock(), 3600)
	slow := &testutil.Provider{Prefix: "slow-", ExpiresIn: 3600}
	slow.Hang.Store(true)
	ts.providers["slow"] = slow
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{})
	ctx, cancel := context.WithCancel(context.Background())
	slowDone := make(chan result, 1)
	go func() { slowDone <- sendAs(ctx, m, "slow") }()
	testutil.Eventually(t, "slow's provider to be called", func() bool { return slow.Calls.Load() == 1 })
	// Meanwhile other identities are served at once.
	for _, id := range []string{"fast-1", "fast-2", "fast-3"} {
		began := time.Now()
		mustOKAs(t, m, id)
		if took := time.Since(began); took > testutil.Patience/2 {
			t.Errorf("%s took %v while another identity's provider hangs", id, took)
		}
	}
	select {
	case r := <-slowDone:
		t.Fatalf("slow identity answered %+v while its provider hangs", r)
	default:
	}
	cancel()
	if r := <-slowDone; !errors.Is(r.err, context.Canceled) {
		t.Errorf("slow identity: err %v; want it to end with its context", r.err)
	}
}

func TestMulti_hangingSettingsDoNotSlowOthers(t *testing.T) {
	ts := newTenants(clock.NewMock(), 3600)
	gate := make(chan struct{})
	ts.hang["stuck"] = gate
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{})
	stuck := make(chan result, 1)
	go func() { stuck <- sendAs(context.Background(), m, "stuck") }()
	testutil.Eventually(t, "SettingsFor(stuck) to be called", func() bool { return ts.settingsCalls("stuck") == 1 })
	for _, id := range []string{"x", "y"} {
		mustOKAs(t, m, id)
	}
	select {
	case r := <-stuck:
		t.Fatalf("stuck identity answered %+v before its settings came", r)
	default:
	}
	close(gate)
	if r := <-stuck; r.err != nil || r.auth != "Bearer stuck-1" {
		t.Errorf("stuck identity after its settings came: %+v", r)
	}
}

func TestMulti_settingsErrorNamesIdentityWithoutHotLoop(t *testing.T) {
	mock := clock.NewMock()
	ts := newTenants(mock, 3600)
	errVault := errors.New("vault unreachable")
	ts.fail["broken"] = errVault
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{})
	for i := range 50 {
		r := sendAs(context.Background(), m, "broken")
		if !errors.Is(r.err, errVault) || !strings.Contains(r.err.Error(), `"broken"`) {
			t.Fatalf("request %d: err %v; want the SettingsFor error naming the identity", i, r.err)
		}
	}
	if got := ts.settingsCalls("broken"); got != 1 {
		t.Errorf("SettingsFor(broken) called %d times for 50 requests within its backoff; want 1", got)
	}
	mustOKAs(t, m, "healthy")
	// After the backoff, it is asked again; once fixed, the identity works.
	ts.mu.Lock()
	delete(ts.fail, "broken")
	ts.mu.Unlock()
	mock.Add(time.Minute)
	if r := mustOKAs(t, m, "broken"); r.auth != "Bearer broken-1" {
		t.Errorf("fixed identity carried %q", r.auth)
	}
	if got := ts.settingsCalls("broken"); got != 2 {
		t.Errorf("SettingsFor(broken) called %d times; want 2", got)
	}
}

func TestMulti_invalidSettingsNameIdentity(t *testing.T) {
	mock := clock.NewMock()
	m, err := transport.NewMulti(tokenmanager.OwnerSettings{
		Clock: mock,
		SettingsFor: func(id string) (tokenmanager.Settings, error) {
			return tokenmanager.Settings{}, nil // no GetCredentials
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	_, err = m.Token(context.Background(), "t1")
	if err == nil || !strings.Contains(err.Error(), `"t1"`) || !strings.Contains(err.Error(), "GetCredentials") {
		t.Errorf("err %v; want the validation error naming the identity", err)
	}
}

func TestMulti_revokedTokenRecoveredPerIdentity(t *testing.T) {
	ts := newTenants(clock.NewMock(), 3600)
	b := &testutil.Backend{}
	m := newMulti(t, ts, b, tokenmanager.OwnerSettings{})
	rec := &testutil.Recorder{}
	defer m.Subscribe(rec.Add)()
	mustOKAs(t, m, "a")
	mustOKAs(t, m, "b")
	b.Revoke("a-1")
	if r := mustOKAs(t, m, "a"); r.auth != "Bearer a-2" {
		t.Errorf("after revocation a carried %q; want a-2", r.auth)
	}
	if r := mustOKAs(t, m, "b"); r.auth != "Bearer b-1" {
		t.Errorf("b carried %q; want its token untouched", r.auth)
	}
	if ts.fetches("b") != 1 {
		t.Errorf("b fetched %d times; want 1", ts.fetches("b"))
	}
	tried := testutil.WaitEvents[messages.RecoveryTried](t, rec, 1)
	if tried[0].Identity != "a" {
		t.Errorf("RecoveryTried.Identity = %q; want a", tried[0].Identity)
	}
	failed := testutil.WaitEvents[messages.AuthFailed](t, rec, 1)
	if failed[0].Identity != "a" {
		t.Errorf("AuthFailed.Identity = %q; want a", failed[0].Identity)
	}
	for _, ev := range testutil.WaitEvents[messages.TokenRefreshed](t, rec, 3) {
		if ev.Identity != "a" && ev.Identity != "b" {
			t.Errorf("TokenRefreshed.Identity = %q", ev.Identity)
		}
	}
}

func TestMulti_ownerProtocolRoutesByIdentity(t *testing.T) {
	system := testutil.NewSystem(t)
	ts := newTenants(clock.NewMock(), 3600)
	props, err := actor.NewOwnerProps(tokenmanager.OwnerSettings{SettingsFor: ts.settingsFor, Clock: ts.clock})
	if err != nil {
		t.Fatal(err)
	}
	pid := system.Root.Spawn(props)
	t.Cleanup(func() { system.Root.StopFuture(pid).Wait() })
	get := func(id string) *messages.TokenResult {
		t.Helper()
		reply, err := system.Root.RequestFuture(pid, messages.Get{Identity: id}, testutil.Patience).Result()
		if err != nil {
			t.Fatalf("Get{%s}: %v", id, err)
		}
		return reply.(*messages.TokenResult)
	}
	if r := get("a"); r.Token.AccessToken != "a-1" {
		t.Fatalf("Get{a} = %+v; want a-1", r)
	}
	if r := get("b"); r.Token.AccessToken != "b-1" {
		t.Fatalf("Get{b} = %+v; want b-1", r)
	}
	// Conditional invalidation per identity: b's token does not drop a's,
	// nor does a stale token.
	system.Root.Send(pid, messages.Invalidate{Identity: "a", AccessToken: "b-1"})
	system.Root.Send(pid, messages.Invalidate{Identity: "a", AccessToken: "a-0"})
	if r := get("a"); r.Token.AccessToken != "a-1" {
		t.Errorf("after foreign and stale invalidations Get{a} = %v; want a-1 kept", r.Token)
	}
	system.Root.Send(pid, messages.Invalidate{Identity: "a", AccessToken: "a-1"})
	if r := get("a"); r.Token.AccessToken != "a-2" {
		t.Errorf("after invalidating a-1 Get{a} = %v; want a-2", r.Token)
	}
	if r := get("b"); r.Token.AccessToken != "b-1" {
		t.Errorf("Get{b} = %v; want b-1 untouched", r.Token)
	}
	// A push reaches its identity only.
	system.Root.Send(pid, messages.Refreshed{Identity: "b", Token: tokenmanager.Token{AccessToken: "pushed-b", ExpiresIn: 60}})
	if r := get("b"); r.Token.AccessToken != "pushed-b" {
		t.Errorf("after a push Get{b} = %v; want pushed-b", r.Token)
	}
	ts.fail["bad"] = errors.New("no such tenant")
	if r := get("bad"); r.Err == nil || !strings.Contains(r.Err.Error(), `"bad"`) {
		t.Errorf("Get{bad} = %+v; want the settings error naming the identity", r)
	}
}

func TestMulti_passivationAndReactivation(t *testing.T) {
	mock := clock.NewMock()
	ts := newTenants(mock, 3600)
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{IdleTimeout: time.Minute})
	rec := &testutil.Recorder{}
	defer m.Subscribe(rec.Add)()
	mustOKAs(t, m, "a")
	mustOKAs(t, m, "b")
	before := runtime.NumGoroutine()
	// b stays busy, a goes idle.
	for range 8 {
		mock.Add(15 * time.Second)
		mustOKAs(t, m, "b")
	}
	testutil.Eventually(t, "a passivated", func() bool { return m.Live() == 1 })
	ev := testutil.WaitEvents[messages.IdentityPassivated](t, rec, 1)[0]
	if ev.Identity != "a" || ev.Evicted {
		t.Errorf("IdentityPassivated = %+v; want a, idle", ev)
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("goroutines %d after passivation; want at most %d", after, before)
	}
	// Its next request starts it again: settings and token anew.
	if r := mustOKAs(t, m, "a"); r.auth != "Bearer a-2" {
		t.Errorf("reactivated a carried %q; want a-2 (a new fetch)", r.auth)
	}
	if got := ts.settingsCalls("a"); got != 2 {
		t.Errorf("SettingsFor(a) called %d times; want 2 (once more after passivation)", got)
	}
	if got := m.Live(); got != 2 {
		t.Errorf("Live() = %d; want 2", got)
	}
}

func TestMulti_passivationRacingRequestsLoseNothing(t *testing.T) {
	mock := clock.NewMock()
	ts := newTenants(mock, 3600)
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{IdleTimeout: time.Second})
	rec := &testutil.Recorder{}
	defer m.Subscribe(rec.Add)()
	// Workers move from identity to identity as epochs pass, so the ones
	// left behind are passivated while others are in use, and come back.
	var epoch atomic.Int64
	var failed, sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("t%d-%d", epoch.Load()%4, w%2)
				sent.Add(1)
				if r := sendAs(context.Background(), m, id); r.err != nil || r.status != http.StatusOK {
					failed.Add(1)
				}
			}
		})
	}
	for i := range 120 {
		mock.Add(700 * time.Millisecond)
		if i%3 == 0 {
			epoch.Add(1)
		}
		time.Sleep(time.Millisecond) // let the workers send at this time
	}
	close(stop)
	wg.Wait()
	passivated := len(testutil.EventsOf[messages.IdentityPassivated](rec))
	t.Logf("%d requests, %d passivations", sent.Load(), passivated)
	if passivated < 10 {
		t.Errorf("%d passivations; want identities passivated and started again many times", passivated)
	}
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d requests failed while identities were passivated and started again", n, sent.Load())
	}
}

func TestMulti_capEvictsLeastRecentlyUsed(t *testing.T) {
	mock := clock.NewMock()
	ts := newTenants(mock, 3600)
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{MaxIdentities: 10})
	rec := &testutil.Recorder{}
	defer m.Subscribe(rec.Add)()
	for i := range 10 {
		mustOKAs(t, m, fmt.Sprintf("t%d", i))
		mock.Add(2 * time.Second)
	}
	// t0 is used again: t1 is now the least recently used.
	mustOKAs(t, m, "t0")
	mock.Add(2 * time.Second)
	mustOKAs(t, m, "t10")
	testutil.Eventually(t, "one eviction", func() bool { return len(testutil.EventsOf[messages.IdentityPassivated](rec)) == 1 })
	ev := testutil.EventsOf[messages.IdentityPassivated](rec)[0]
	if ev.Identity != "t1" || !ev.Evicted {
		t.Errorf("evicted %+v; want t1, the least recently used", ev)
	}
	testutil.Eventually(t, "Live back at the cap", func() bool { return m.Live() == 10 })
}

func TestMulti_unusedTokensAreNotRefreshed(t *testing.T) {
	mock := clock.NewMock()
	ts := newTenants(mock, 300) // 5-minute tokens
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{IdleTimeout: 2 * time.Hour})
	ids := []string{"a", "b", "c"}
	for _, id := range ids {
		mustOKAs(t, m, id)
	}
	for range 60 { // an idle hour
		mock.Add(time.Minute)
	}
	testutil.Stays(t, "no fetch for unused tokens", func() bool {
		return ts.fetches("a")+ts.fetches("b")+ts.fetches("c") == 3
	})
	// A used identity refreshes before expiry, with no request waiting:
	// used at 295s of a fresh 300s token, it serves it and fetches anew.
	mustOKAs(t, m, "a") // expired: fetched on use (a-2 at t=60m)
	mock.Add(295 * time.Second)
	if r := mustOKAs(t, m, "a"); r.auth != "Bearer a-2" {
		t.Errorf("inside the refresh buffer a carried %q; want the still-valid a-2", r.auth)
	}
	testutil.Eventually(t, "a refreshed early on use", func() bool { return ts.fetches("a") == 3 })
	if r := mustOKAs(t, m, "a"); r.auth != "Bearer a-3" {
		t.Errorf("after the early refresh a carried %q; want a-3", r.auth)
	}
}

// Tokens of one second: requests take the miss path, so passivation races
// requests already waiting on the identity's actor; they must be answered
// through the owner again, never fail.
func TestMulti_passivationRacingTheMissPath(t *testing.T) {
	mock := clock.NewMock()
	ts := newTenants(mock, 1)
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{IdleTimeout: time.Second})
	rec := &testutil.Recorder{}
	defer m.Subscribe(rec.Add)()
	sent, failed, firstErr := whilePassivating(mock, func(w int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		r := sendAs(ctx, m, fmt.Sprintf("id%d", w%2))
		if r.err == nil && r.status != http.StatusOK {
			r.err = fmt.Errorf("status %d", r.status)
		}
		return r.err
	})
	t.Logf("%d requests, %d passivations, %d failed (%v)", sent, len(testutil.EventsOf[messages.IdentityPassivated](rec)), failed, firstErr)
	if failed != 0 {
		t.Errorf("%d requests failed", failed)
	}
}

func TestMulti_ownerGetsRacingPassivation(t *testing.T) {
	system := testutil.NewSystem(t)
	mock := clock.NewMock()
	ts := newTenants(mock, 3600)
	props, err := actor.NewOwnerProps(tokenmanager.OwnerSettings{SettingsFor: ts.settingsFor, Clock: mock, IdleTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	pid := system.Root.Spawn(props)
	t.Cleanup(func() { system.Root.StopFuture(pid).Wait() })
	sent, failed, firstErr := whilePassivating(mock, func(w int) error {
		res, err := system.Root.RequestFuture(pid, messages.Get{Identity: fmt.Sprintf("id%d", w%2)}, 2*time.Second).Result()
		if err != nil {
			return err
		}
		return res.(*messages.TokenResult).Err
	})
	t.Logf("%d gets, %d failed (%v)", sent, failed, firstErr)
	if failed != 0 {
		t.Errorf("%d gets failed", failed)
	}
}

// whilePassivating runs call from 8 workers, back to back, while the mock
// clock jumps 2s at a time 300 times (past a 1s IdleTimeout each time), so
// identities are passivated and started again under the calls. It returns
// how many calls were made and failed, and the first failure.
func whilePassivating(mock *clock.Mock, call func(worker int) error) (sent, failed int64, firstErr error) {
	var nSent, nFailed atomic.Int64
	var mu sync.Mutex // guards firstErr
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				nSent.Add(1)
				if err := call(w); err != nil {
					nFailed.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for range 300 {
		mock.Add(2 * time.Second)
		time.Sleep(200 * time.Microsecond) // let the workers call at this time
	}
	close(stop)
	// Time goes on until the last calls are answered: one that waits for
	// a retry on the mock clock would otherwise wait for good.
	finished := make(chan struct{})
	go func() {
		for {
			select {
			case <-finished:
				return
			case <-time.After(time.Millisecond):
				mock.Add(2 * time.Second)
			}
		}
	}()
	wg.Wait()
	close(finished)
	return nSent.Load(), nFailed.Load(), firstErr
}

func TestMulti_formatterPerIdentity(t *testing.T) {
	// Settings equal but for their Formatter must not share a request side.
	mock := clock.NewMock()
	ts := newTenants(mock, 3600)
	formats := map[string]tokenmanager.Formatter{
		"custom": func(tok string) string { return "Token " + tok },
		"plain":  nil,
	}
	m, err := transport.NewMulti(tokenmanager.OwnerSettings{
		Clock: mock,
		SettingsFor: func(id string) (tokenmanager.Settings, error) {
			s, err := ts.settingsFor(id)
			s.Formatter = formats[id]
			return s, err
		},
	}, transport.WithBase(&testutil.Backend{}))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for range 2 {
		if r := mustOKAs(t, m, "custom"); r.auth != "Token custom-1" {
			t.Errorf("custom identity carried %q; want its own format", r.auth)
		}
		if r := mustOKAs(t, m, "plain"); r.auth != "Bearer plain-1" {
			t.Errorf("plain identity carried %q; want the default format", r.auth)
		}
	}
}

func TestMulti_ownerGetPastRefreshTimeRefreshes(t *testing.T) {
	// Actor users of an owner get refresh on use too: a Get past the
	// token's refresh time answers the still-valid token at once and
	// starts the early refresh.
	system := testutil.NewSystem(t)
	mock := clock.NewMock()
	ts := newTenants(mock, 60) // refreshed 10s before expiry
	props, err := actor.NewOwnerProps(tokenmanager.OwnerSettings{SettingsFor: ts.settingsFor, Clock: mock, IdleTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pid := system.Root.Spawn(props)
	t.Cleanup(func() { system.Root.StopFuture(pid).Wait() })
	get := func() string {
		t.Helper()
		reply, err := system.Root.RequestFuture(pid, messages.Get{Identity: "a"}, testutil.Patience).Result()
		if err != nil {
			t.Fatal(err)
		}
		return reply.(*messages.TokenResult).Token.AccessToken
	}
	if tok := get(); tok != "a-1" {
		t.Fatalf("Get = %s; want a-1", tok)
	}
	mock.Add(30 * time.Second) // before the refresh time: nothing happens
	get()
	testutil.Stays(t, "no refresh before the refresh time", func() bool { return ts.fetches("a") == 1 })
	mock.Add(25 * time.Second) // past it, still valid
	if tok := get(); tok != "a-1" {
		t.Errorf("Get past the refresh time = %s; want the still-valid a-1 at once", tok)
	}
	testutil.Eventually(t, "the early refresh", func() bool { return ts.fetches("a") == 2 })
	testutil.Eventually(t, "the new token served", func() bool { return get() == "a-2" })
}

func TestMulti_callbacksBoundWhenPublished(t *testing.T) {
	// a's callback blocks the owner's callback goroutine while b is
	// refreshed and passivated: b's callback must still be called, with
	// b's settings, once a's returns.
	mock := clock.NewMock()
	gate := make(chan struct{})
	var bRefreshed, bAuthFailed atomic.Int64
	pa := &testutil.Provider{Prefix: "a-", ExpiresIn: 3600}
	pb := &testutil.Provider{Prefix: "b-", ExpiresIn: 3600}
	b := &testutil.Backend{}
	m, err := transport.NewMulti(tokenmanager.OwnerSettings{
		Clock: mock, IdleTimeout: time.Second,
		SettingsFor: func(id string) (tokenmanager.Settings, error) {
			if id == "a" {
				return tokenmanager.Settings{GetCredentials: pa.Get, Clock: mock, OnTokenRefresh: func(string) { <-gate }}, nil
			}
			return tokenmanager.Settings{GetCredentials: pb.Get, Clock: mock,
				OnTokenRefresh: func(string) { bRefreshed.Add(1) },
				OnAuthFail:     func(string) { bAuthFailed.Add(1) }}, nil
		},
	}, transport.WithBase(b))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer close(gate)
	mustOKAs(t, m, "a") // a's callback now blocks the owner's callback goroutine
	mustOKAs(t, m, "b") // b's TokenRefreshed waits behind it
	b.Revoke("b-1")
	mustOKAs(t, m, "b") // recovered: AuthFailed for b, on the request side
	testutil.Eventually(t, "b's OnAuthFail", func() bool { return bAuthFailed.Load() == 1 })
	testutil.AdvanceUntil(t, mock, time.Second, 0, "both passivated", func() bool { return m.Live() == 0 })
	gate <- struct{}{} // a's first callback returns
	testutil.Eventually(t, "b's OnTokenRefresh for both its tokens", func() bool { return bRefreshed.Load() == 2 })
}

func TestMulti_ownerGetsWithFailingSettingsDoNotHotLoop(t *testing.T) {
	system := testutil.NewSystem(t)
	ts := newTenants(clock.NewMock(), 3600)
	ts.fail["bad"] = errors.New("no such tenant")
	props, err := actor.NewOwnerProps(tokenmanager.OwnerSettings{SettingsFor: ts.settingsFor, Clock: ts.clock})
	if err != nil {
		t.Fatal(err)
	}
	pid := system.Root.Spawn(props)
	t.Cleanup(func() { system.Root.StopFuture(pid).Wait() })
	for i := range 20 {
		reply, err := system.Root.RequestFuture(pid, messages.Get{Identity: "bad"}, testutil.Patience).Result()
		if err != nil {
			t.Fatal(err)
		}
		if r := reply.(*messages.TokenResult); r.Err == nil || !strings.Contains(r.Err.Error(), `"bad"`) {
			t.Fatalf("Get %d = %+v; want the settings error naming the identity", i, r)
		}
	}
	if got := ts.settingsCalls("bad"); got != 1 {
		t.Errorf("SettingsFor(bad) called %d times for 20 Gets within its backoff; want 1", got)
	}
}

// A mock clock starts at the Unix epoch: a use at that very instant is a
// use like any other, and keeps the identity alive for IdleTimeout.
func TestMulti_useAtClockStartKeepsIdentity(t *testing.T) {
	mock := clock.NewMock()
	ts := newTenants(mock, 3*3600)
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{IdleTimeout: 2 * time.Hour})
	rec := &testutil.Recorder{}
	defer m.Subscribe(rec.Add)()
	mustOKAs(t, m, "a")
	mock.Add(61 * time.Minute) // past the first idle sweep (IdleTimeout/2)
	testutil.Stays(t, "identity a live", func() bool {
		return m.Live() == 1 && len(testutil.EventsOf[messages.IdentityPassivated](rec)) == 0
	})
	if r := mustOKAs(t, m, "a"); r.auth != "Bearer a-1" {
		t.Errorf("request 61 minutes after the first carried %q; want the cached a-1", r.auth)
	}
	if got := ts.settingsCalls("a"); got != 1 {
		t.Errorf("SettingsFor(a) called %d times; want 1", got)
	}
}

// A failing SettingsFor is reported: a SettingsFailed event naming the
// identity and the owner's log, not only the failed requests.
func TestMulti_settingsFailurePublishedAndLogged(t *testing.T) {
	mock := clock.NewMock()
	ts := newTenants(mock, 3600)
	errVault := errors.New("vault unreachable")
	ts.fail["broken"] = errVault
	var logs syncBuffer
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	rec := &testutil.Recorder{}
	defer m.Subscribe(rec.Add)()
	for range 2 { // the second within the backoff: no second SettingsFor call
		if r := sendAs(context.Background(), m, "broken"); !errors.Is(r.err, errVault) {
			t.Fatalf("err %v; want the SettingsFor error", r.err)
		}
	}
	ev := testutil.WaitEvents[messages.SettingsFailed](t, rec, 1)[0]
	if ev.Identity != "broken" || !errors.Is(ev.Err, errVault) || ev.ConsecutiveFailures != 1 || ev.RetryIn <= 0 {
		t.Errorf("SettingsFailed = %+v; want identity broken, the SettingsFor error, 1 failure, a backoff", ev)
	}
	testutil.Eventually(t, "the failure logged", func() bool { return strings.Contains(logs.String(), "SettingsFor failed") })
	if out := logs.String(); !strings.Contains(out, "identity=broken") || !strings.Contains(out, errVault.Error()) {
		t.Errorf("log %q; want the identity and the error", out)
	}
	mock.Add(time.Minute) // past the backoff: asked again, failing again
	sendAs(context.Background(), m, "broken")
	if ev := testutil.WaitEvents[messages.SettingsFailed](t, rec, 2)[1]; ev.ConsecutiveFailures != 2 {
		t.Errorf("second SettingsFailed.ConsecutiveFailures = %d; want 2", ev.ConsecutiveFailures)
	}
	testutil.Stays(t, "two SettingsFailed events", func() bool { return len(testutil.EventsOf[messages.SettingsFailed](rec)) == 2 })
}
