package providers_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/users"
)

var ann = users.Identity{User: "ann", Client: "app"}

// signInFixture is a SignInServer behind an httptest server that keeps
// every request form it got, with metadata, a file store and keys.
type signInFixture struct {
	srv   *testutil.SignInServer
	url   string
	store *users.FileStore
	keys  *users.Keys

	failPolls atomic.Int64 // device code polls to answer 503

	mu    sync.Mutex
	forms []url.Values // the /token and /device request bodies
	dpop  []string     // the DPoP headers of token requests
}

func newSignInFixture(t *testing.T) *signInFixture {
	t.Helper()
	f := &signInFixture{srv: &testutil.SignInServer{ClientID: "app"}}
	var hs *httptest.Server
	hs = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.well-known/openid-configuration" {
			fmt.Fprintf(w, `{"issuer":%q,"authorization_endpoint":"%[1]s/authorize","token_endpoint":"%[1]s/token","device_authorization_endpoint":"%[1]s/device"}`, hs.URL)
			return
		}
		if r.Method == http.MethodPost {
			_ = r.ParseForm()
			f.mu.Lock()
			f.forms = append(f.forms, r.PostForm)
			if r.URL.Path == "/token" {
				f.dpop = append(f.dpop, r.Header.Get("DPoP"))
			}
			f.mu.Unlock()
			if r.PostForm.Get("grant_type") == "urn:ietf:params:oauth:grant-type:device_code" && f.failPolls.Add(-1) >= 0 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
		}
		f.srv.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	f.url = hs.URL
	f.store = testutil.OpenFileStore(t, filepath.Join(t.TempDir(), "tokens.db"))
	var err error
	if f.keys, err = users.NewKeys("k1", map[string][]byte{"k1": bytes.Repeat([]byte{7}, users.KeySize)}); err != nil {
		t.Fatal(err)
	}
	return f
}

// sent returns every value of the parameter name the server received.
func (f *signInFixture) sent(name string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, v := range f.forms {
		if s := v.Get(name); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (f *signInFixture) authCode(t *testing.T, rec *testutil.Recorder) *providers.AuthCode {
	t.Helper()
	cfg := providers.AuthCodeConfig{
		AuthURL: f.url + "/authorize", TokenURL: f.url + "/token", RedirectURL: "https://app.example/callback",
		Scopes: []string{"openid", "offline_access"}, Auth: providers.NoClientAuth("app"),
		Store: f.store, Keys: f.keys,
	}
	if rec != nil {
		cfg.Events = rec.Add
	}
	a, err := providers.NewAuthCode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// browse plays the user's browser: it opens the authorization URL and
// returns the query of the redirect to the callback.
func browse(t *testing.T, authURL string) url.Values {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("authorization endpoint answered %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query()
}

// stored opens the refresh token stored for id.
func (f *signInFixture) stored(t *testing.T, id string) string {
	t.Helper()
	e, err := f.store.Load(context.Background(), id)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	rt, _, err := f.keys.Open(id, e.Sealed)
	if err != nil {
		t.Fatal(err)
	}
	return string(rt)
}

func TestAuthCode_signsInAndSeeds(t *testing.T) {
	f := newSignInFixture(t)
	rec := &testutil.Recorder{}
	a := f.authCode(t, rec)
	ctx := context.Background()
	req, err := a.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(req.URL)
	q := u.Query()
	for k, want := range map[string]string{"response_type": "code", "client_id": "app", "redirect_uri": "https://app.example/callback",
		"scope": "openid offline_access", "state": req.State, "code_challenge_method": "S256"} {
		if q.Get(k) != want {
			t.Errorf("authorization URL %s = %q; want %q", k, q.Get(k), want)
		}
	}
	if q.Get("code_challenge") == "" || strings.Contains(req.URL, req.Verifier) || len(req.Verifier) != 43 {
		t.Errorf("challenge %q, verifier of %d characters, or the verifier in the URL", q.Get("code_challenge"), len(req.Verifier))
	}
	tok, err := a.Exchange(ctx, req, browse(t, req.URL), ann)
	if err != nil {
		t.Fatal(err)
	}
	if !f.srv.Refresh.Live(tok.AccessToken) {
		t.Errorf("Exchange returned %q, not a token the server issued", tok.AccessToken)
	}
	if got := f.sent("code_verifier"); len(got) != 1 || got[0] != req.Verifier {
		t.Errorf("the token request carried code_verifier %q; want the request's verifier", got)
	}
	if got := f.sent("redirect_uri"); len(got) != 1 || got[0] != "https://app.example/callback" {
		t.Errorf("redirect_uri sent %q", got)
	}
	rt := f.stored(t, ann.String())
	ev := testutil.EventsOf[messages.SignedIn](rec)
	if len(ev) != 1 || ev[0].Identity != ann.String() || ev[0].Flow != "authorization_code" || ev[0].Version != 1 || ev[0].KeyID != "k1" {
		t.Errorf("events %+v; want one SignedIn for ann, version 1, key k1", ev)
	}

	// The refresh token provider takes it from there, rotating it.
	p := providers.RefreshToken(providers.RefreshTokenConfig{TokenURL: f.url + "/token", Identity: ann.String(),
		Store: f.store, Keys: f.keys, Auth: providers.NoClientAuth("app")})
	tok2, err := p(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !f.srv.Refresh.Live(tok2.AccessToken) || tok2.AccessToken == tok.AccessToken {
		t.Errorf("refresh gave %q", tok2.AccessToken)
	}
	if next := f.stored(t, ann.String()); next == rt {
		t.Error("the seeded refresh token was not rotated by the first refresh")
	}
}

func TestAuthCode_stateMismatchRefused(t *testing.T) {
	f := newSignInFixture(t)
	a := f.authCode(t, nil)
	ctx := context.Background()
	req, err := a.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cb := browse(t, req.URL)
	for name, state := range map[string]string{"other": "forged", "missing": "", "prefix": req.State[:10]} {
		bad := url.Values{"code": {cb.Get("code")}}
		if state != "" {
			bad.Set("state", state)
		}
		_, err := a.Exchange(ctx, req, bad, ann)
		if !errors.Is(err, providers.ErrStateMismatch) || !tokenmanager.IsPermanent(err) {
			t.Errorf("%s state: %v; want a permanent ErrStateMismatch", name, err)
		}
	}
	if n := f.srv.CodeExchanges(); n != 0 {
		t.Errorf("%d code exchanges with a wrong state; want none sent", n)
	}
	// A second sign-in's state does not fit the first's request.
	req2, _ := a.Start(ctx)
	if req2.State == req.State || req2.Verifier == req.Verifier {
		t.Error("two sign-ins share a state or a verifier")
	}
	if _, err := a.Exchange(ctx, req2, cb, ann); !errors.Is(err, providers.ErrStateMismatch) {
		t.Errorf("callback of another sign-in: %v", err)
	}
}

func TestAuthCode_verifierCheckedByServer(t *testing.T) {
	f := newSignInFixture(t)
	a := f.authCode(t, nil)
	ctx := context.Background()
	req, _ := a.Start(ctx)
	other, _ := a.Start(ctx)
	cb := browse(t, req.URL)
	forged := providers.AuthRequest{URL: req.URL, State: req.State, Verifier: other.Verifier}
	_, err := a.Exchange(ctx, forged, cb, ann)
	var re *providers.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("wrong verifier: %v; want invalid_grant", err)
	}
	if _, err := f.store.Load(ctx, ann.String()); !errors.Is(err, users.ErrNotFound) {
		t.Errorf("a refused exchange stored something: %v", err)
	}
	for _, secret := range []string{cb.Get("code"), other.Verifier} {
		if strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprintf("%+v", err), secret) {
			t.Errorf("the error shows a secret: %v", err)
		}
	}
}

func TestAuthCode_codeReuseRefused(t *testing.T) {
	f := newSignInFixture(t)
	a := f.authCode(t, nil)
	ctx := context.Background()
	req, _ := a.Start(ctx)
	cb := browse(t, req.URL)
	if _, err := a.Exchange(ctx, req, cb, ann); err != nil {
		t.Fatal(err)
	}
	first := f.stored(t, ann.String())
	_, err := a.Exchange(ctx, req, cb, ann)
	var re *providers.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" || !tokenmanager.IsPermanent(err) {
		t.Fatalf("second exchange of a code: %v; want a permanent invalid_grant", err)
	}
	if strings.Contains(fmt.Sprintf("%v %+v", err, err), cb.Get("code")) {
		t.Errorf("the error shows the code: %v", err)
	}
	if got := f.stored(t, ann.String()); got != first {
		t.Error("the refused exchange changed the stored token")
	}
}

func TestAuthCode_serverErrorAtCallback(t *testing.T) {
	f := newSignInFixture(t)
	a := f.authCode(t, nil)
	req, _ := a.Start(context.Background())
	cb := url.Values{"state": {req.State}, "error": {"access_denied"}, "error_description": {"the user said no\n"}}
	_, err := a.Exchange(context.Background(), req, cb, ann)
	if err == nil || !strings.Contains(err.Error(), "access_denied: the user said no") || !tokenmanager.IsPermanent(err) {
		t.Errorf("callback with error: %v", err)
	}
	if f.srv.CodeExchanges() != 0 {
		t.Error("a token request was sent for a refused sign-in")
	}
}

func TestAuthCode_noRefreshToken(t *testing.T) {
	f := newSignInFixture(t)
	f.srv.Refresh.NoRotation = true // answers without refresh_token
	a := f.authCode(t, nil)
	req, _ := a.Start(context.Background())
	_, err := a.Exchange(context.Background(), req, browse(t, req.URL), ann)
	if !errors.Is(err, providers.ErrNoRefreshToken) {
		t.Errorf("answer without a refresh token: %v", err)
	}
}

func TestAuthCode_issuerAndDPoP(t *testing.T) {
	f := newSignInFixture(t)
	iss, err := providers.NewIssuer(providers.IssuerConfig{Issuer: f.url})
	if err != nil {
		t.Fatal(err)
	}
	d, err := tokenmanager.NewDPoP(nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := providers.NewAuthCode(providers.AuthCodeConfig{Issuer: iss, RedirectURL: "http://127.0.0.1:9/cb",
		Scopes: []string{"offline_access"}, AuthParams: url.Values{"prompt": {"consent"}},
		Auth: providers.NoClientAuth("app"), Store: f.store, Keys: f.keys, DPoP: d})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req, err := a.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(req.URL, f.url+"/authorize?") || !strings.Contains(req.URL, "prompt=consent") {
		t.Errorf("authorization URL %q; want the metadata's endpoint with AuthParams", req.URL)
	}
	if _, err := a.Exchange(ctx, req, browse(t, req.URL), ann); err != nil {
		t.Fatal(err)
	}
	if f.srv.DPoPJKT() != d.Thumbprint() {
		t.Errorf("dpop_jkt %q; want the key's thumbprint", f.srv.DPoPJKT())
	}
	f.mu.Lock()
	proofs := append([]string(nil), f.dpop...)
	f.mu.Unlock()
	if len(proofs) != 1 {
		t.Fatalf("%d token requests", len(proofs))
	}
	p, err := testutil.ParseDPoP(proofs[0])
	if err != nil || p.JKT != d.Thumbprint() {
		t.Errorf("token request proof %v, %v; want one of the DPoP key", p, err)
	}
}

func TestAuthCode_validate(t *testing.T) {
	_, err := providers.NewAuthCode(providers.AuthCodeConfig{TokenURL: "http://auth.example/token", AuthURL: "",
		AuthParams: url.Values{"state": {"x"}}})
	for _, want := range []string{"plain http", "AuthURL is empty", "RedirectURL is empty", `AuthParams sets "state"`, "Auth is nil", "Store is nil", "Keys is nil"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v; want it to say %q", err, want)
		}
	}
}

func TestAuthRequest_formatHidesVerifier(t *testing.T) {
	r := providers.AuthRequest{URL: "https://a/authorize", State: "st", Verifier: "the-verifier-secret"}
	for _, s := range []string{fmt.Sprint(r), fmt.Sprintf("%+v", r), fmt.Sprintf("%#v", r), fmt.Sprintf("%v", &r)} {
		if strings.Contains(s, "the-verifier-secret") || !strings.Contains(s, "[redacted]") {
			t.Errorf("printed %q", s)
		}
	}
}

// waits records the waits a DeviceFlow asks its clock for.
type waits struct {
	*clock.Mock
	mu sync.Mutex
	d  []time.Duration
}

func (w *waits) Timer(d time.Duration) *clock.Timer {
	w.mu.Lock()
	w.d = append(w.d, d)
	w.mu.Unlock()
	return w.Mock.Timer(d)
}

func (w *waits) all() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Duration(nil), w.d...)
}

func (f *signInFixture) deviceFlow(t *testing.T, rec *testutil.Recorder, c clock.Clock) *providers.DeviceFlow {
	t.Helper()
	d, err := providers.NewDeviceFlow(providers.DeviceFlowConfig{
		DeviceAuthURL: f.url + "/device", TokenURL: f.url + "/token", Scopes: []string{"offline_access"},
		Auth: providers.NoClientAuth("app"), Store: f.store, Keys: f.keys, Events: rec.Add, Clock: c,
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type waitResult struct {
	tok tokenmanager.Token
	err error
}

// wait runs Wait in a goroutine and returns where its result arrives.
func wait(ctx context.Context, d *providers.DeviceFlow, a *providers.DeviceAuthorization) chan waitResult {
	done := make(chan waitResult, 1)
	go func() {
		tok, err := d.Wait(ctx, a)
		done <- waitResult{tok, err}
	}()
	return done
}

func arrived(done chan waitResult, got *waitResult) func() bool {
	return func() bool {
		select {
		case r := <-done:
			*got = r
			return true
		default:
			return false
		}
	}
}

// noDeviceCode fails the test if the device code shows in what the flow
// published or in s.
func noDeviceCode(t *testing.T, f *signInFixture, rec *testutil.Recorder, s ...string) {
	t.Helper()
	codes := f.sent("device_code")
	if len(codes) == 0 {
		t.Fatal("no device code was polled with")
	}
	for _, ev := range rec.All() {
		s = append(s, fmt.Sprintf("%v %+v %#v", ev, ev, ev))
	}
	for _, text := range s {
		if strings.Contains(text, codes[0]) {
			t.Errorf("the device code shows in %q", text)
		}
	}
}

func TestDeviceFlow_pollsUntilApproved(t *testing.T) {
	f := newSignInFixture(t)
	mock := clock.NewMock()
	rec := &testutil.Recorder{}
	d := f.deviceFlow(t, rec, mock)
	a, err := d.Start(context.Background(), ann)
	if err != nil {
		t.Fatal(err)
	}
	if a.UserCode == "" || a.VerificationURI == "" || !strings.Contains(a.VerificationURIComplete, a.UserCode) ||
		a.Interval != 5*time.Second || !a.ExpiresAt.Equal(mock.Now().Add(600*time.Second)) {
		t.Errorf("device authorization %+v", a)
	}
	issued := testutil.EventsOf[messages.DeviceCodeIssued](rec)
	if len(issued) != 1 || issued[0].UserCode != a.UserCode || issued[0].Identity != ann.String() {
		t.Errorf("DeviceCodeIssued events %+v", issued)
	}
	done := wait(context.Background(), d, a)
	testutil.AdvanceUntil(t, mock, time.Second, 30, "two polls", func() bool { return f.srv.Polls() >= 2 })
	if !f.srv.Approve(a.UserCode) {
		t.Fatal("unknown user code")
	}
	var got waitResult
	testutil.AdvanceUntil(t, mock, time.Second, 30, "Wait to return", arrived(done, &got))
	if got.err != nil {
		t.Fatal(got.err)
	}
	if !f.srv.Refresh.Live(got.tok.AccessToken) || f.stored(t, ann.String()) == "" {
		t.Errorf("Wait gave %q", got.tok.AccessToken)
	}
	pending := testutil.EventsOf[messages.DevicePollPending](rec)
	if len(pending) < 2 || pending[0].Reason != "authorization_pending" || pending[0].Attempt != 1 || pending[1].Attempt != 2 {
		t.Errorf("DevicePollPending events %+v", pending)
	}
	if ev := testutil.EventsOf[messages.SignedIn](rec); len(ev) != 1 || ev[0].Flow != "device_code" {
		t.Errorf("SignedIn events %+v", ev)
	}
	if gt := f.sent("grant_type"); gt[len(gt)-1] != "urn:ietf:params:oauth:grant-type:device_code" {
		t.Errorf("grant types sent %q", gt)
	}
	noDeviceCode(t, f, rec, fmt.Sprintf("%v %+v %#v", a, a, a))
}

func TestDeviceFlow_slowDownRaisesInterval(t *testing.T) {
	f := newSignInFixture(t)
	f.srv.SlowDown.Store(2)
	w := &waits{Mock: clock.NewMock()}
	rec := &testutil.Recorder{}
	d := f.deviceFlow(t, rec, w)
	a, err := d.Start(context.Background(), ann)
	if err != nil {
		t.Fatal(err)
	}
	done := wait(context.Background(), d, a)
	testutil.AdvanceUntil(t, w.Mock, time.Second, 60, "four polls", func() bool { return f.srv.Polls() >= 4 })
	f.srv.Deny(a.UserCode)
	var got waitResult
	testutil.AdvanceUntil(t, w.Mock, time.Second, 30, "Wait to return", arrived(done, &got))
	if !errors.Is(got.err, providers.ErrAccessDenied) || !tokenmanager.IsPermanent(got.err) {
		t.Errorf("denied: %v; want a permanent ErrAccessDenied", got.err)
	}
	want := []time.Duration{5 * time.Second, 10 * time.Second, 15 * time.Second, 15 * time.Second}
	if ws := w.all(); len(ws) < len(want) || fmt.Sprint(ws[:len(want)]) != fmt.Sprint(want) {
		t.Errorf("waits %v; want %v first (two slow_down, +5s each)", ws, want)
	}
	pending := testutil.EventsOf[messages.DevicePollPending](rec)
	if len(pending) < 3 || pending[0].Reason != "slow_down" || pending[0].Interval != 10*time.Second ||
		pending[1].Interval != 15*time.Second || pending[2].Reason != "authorization_pending" {
		t.Errorf("DevicePollPending events %+v", pending)
	}
	noDeviceCode(t, f, rec, got.err.Error(), fmt.Sprintf("%+v", got.err))
}

func TestDeviceFlow_expiryEndsPolling(t *testing.T) {
	f := newSignInFixture(t)
	f.srv.ExpiresIn = 12
	w := &waits{Mock: clock.NewMock()}
	rec := &testutil.Recorder{}
	d := f.deviceFlow(t, rec, w)
	a, err := d.Start(context.Background(), ann)
	if err != nil {
		t.Fatal(err)
	}
	done := wait(context.Background(), d, a)
	var got waitResult
	testutil.AdvanceUntil(t, w.Mock, time.Second, 60, "Wait to return", arrived(done, &got))
	if !errors.Is(got.err, providers.ErrDeviceCodeExpired) || !strings.Contains(got.err.Error(), "did not sign in") {
		t.Errorf("expired: %v; want ErrDeviceCodeExpired", got.err)
	}
	if n := f.srv.Polls(); n != 2 {
		t.Errorf("%d polls within 12 s at 5 s; want 2", n)
	}
	// The last wait ends at the expiry: 2 s after the second poll, less
	// if the clock moved on before the flow read it.
	if ws := w.all(); len(ws) != 3 || ws[0] != 5*time.Second || ws[1] != 5*time.Second || ws[2] > 2*time.Second {
		t.Errorf("waits %v; want 5s 5s and at most 2s (up to the expiry)", ws)
	}

	// The server's expired_token ends it too.
	a, err = d.Start(context.Background(), ann)
	if err != nil {
		t.Fatal(err)
	}
	f.srv.Expire(a.UserCode)
	done = wait(context.Background(), d, a)
	testutil.AdvanceUntil(t, w.Mock, time.Second, 30, "Wait to return", arrived(done, &got))
	if !errors.Is(got.err, providers.ErrDeviceCodeExpired) || !strings.Contains(got.err.Error(), "expired_token") {
		t.Errorf("expired_token: %v", got.err)
	}
	noDeviceCode(t, f, rec, got.err.Error())
}

func TestDeviceFlow_contextCancelStopsPolling(t *testing.T) {
	f := newSignInFixture(t)
	mock := clock.NewMock()
	rec := &testutil.Recorder{}
	d := f.deviceFlow(t, rec, mock)
	a, err := d.Start(context.Background(), ann)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := wait(ctx, d, a)
	testutil.AdvanceUntil(t, mock, time.Second, 30, "a poll", func() bool { return f.srv.Polls() >= 1 })
	cancel()
	got := <-done // no clock advance: the cancel alone ends it
	if !errors.Is(got.err, context.Canceled) {
		t.Errorf("cancelled: %v", got.err)
	}
	polls := f.srv.Polls()
	mock.Add(time.Minute)
	if f.srv.Polls() != polls {
		t.Error("polled after the cancel")
	}
}

func TestDeviceFlow_issuerDiscovery(t *testing.T) {
	f := newSignInFixture(t)
	iss, err := providers.NewIssuer(providers.IssuerConfig{Issuer: f.url})
	if err != nil {
		t.Fatal(err)
	}
	mock := clock.NewMock()
	d, err := providers.NewDeviceFlow(providers.DeviceFlowConfig{Issuer: iss, Auth: providers.NoClientAuth("app"),
		Store: f.store, Keys: f.keys, Clock: mock})
	if err != nil {
		t.Fatal(err)
	}
	a, err := d.Start(context.Background(), ann)
	if err != nil {
		t.Fatal(err)
	}
	f.srv.Approve(a.UserCode)
	done := wait(context.Background(), d, a)
	var got waitResult
	testutil.AdvanceUntil(t, mock, time.Second, 30, "Wait to return", arrived(done, &got))
	if got.err != nil {
		t.Fatal(got.err)
	}
}

func TestDeviceFlow_validate(t *testing.T) {
	_, err := providers.NewDeviceFlow(providers.DeviceFlowConfig{TokenURL: "https://a/token",
		EndpointParams: url.Values{"device_code": {"x"}}})
	for _, want := range []string{"DeviceAuthURL is empty", `EndpointParams sets "device_code"`, "Auth is nil", "Store is nil"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v; want it to say %q", err, want)
		}
	}
}

func TestSignIn_printingShowsNoSecret(t *testing.T) {
	f := newSignInFixture(t)
	const secret = "client-secret-value"
	auth := providers.ClientSecret("app", secret, providers.AuthStyleInHeader)
	ac := providers.AuthCodeConfig{AuthURL: f.url + "/authorize", TokenURL: f.url + "/token", RedirectURL: "https://app/cb",
		Auth: auth, Store: f.store, Keys: f.keys}
	a, err := providers.NewAuthCode(ac)
	if err != nil {
		t.Fatal(err)
	}
	dc := providers.DeviceFlowConfig{DeviceAuthURL: f.url + "/device", TokenURL: f.url + "/token", Auth: auth, Store: f.store, Keys: f.keys}
	d, err := providers.NewDeviceFlow(dc)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []any{ac, a, dc, d} {
		if s := fmt.Sprintf("%v %+v %#v", v, v, v); strings.Contains(s, secret) || strings.Contains(s, "\x07\x07\x07") || strings.Contains(s, "0x7, 0x7") {
			t.Errorf("%T prints a secret or a key: %s", v, s)
		}
	}
}

func TestDeviceFlow_retriesServerErrorsWithDPoP(t *testing.T) {
	f := newSignInFixture(t)
	f.failPolls.Store(2)
	key, err := tokenmanager.NewDPoP(nil)
	if err != nil {
		t.Fatal(err)
	}
	mock := clock.NewMock()
	rec := &testutil.Recorder{}
	d, err := providers.NewDeviceFlow(providers.DeviceFlowConfig{
		DeviceAuthURL: f.url + "/device", TokenURL: f.url + "/token", Auth: providers.NoClientAuth("app"),
		Store: f.store, Keys: f.keys, Events: rec.Add, Clock: mock, DPoP: key,
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := d.Start(context.Background(), ann)
	if err != nil {
		t.Fatal(err)
	}
	f.srv.Approve(a.UserCode)
	done := wait(context.Background(), d, a)
	var got waitResult
	testutil.AdvanceUntil(t, mock, time.Second, 30, "Wait to return", arrived(done, &got))
	if got.err != nil {
		t.Fatal(got.err)
	}
	pending := testutil.EventsOf[messages.DevicePollPending](rec)
	if len(pending) != 2 || pending[0].Reason != "retry" || pending[1].Interval != 5*time.Second {
		t.Errorf("DevicePollPending events %+v; want two retries at the same pace", pending)
	}
	f.mu.Lock()
	proofs := append([]string(nil), f.dpop...)
	f.mu.Unlock()
	if len(proofs) != 3 {
		t.Fatalf("%d polls", len(proofs))
	}
	for _, proof := range proofs {
		if p, err := testutil.ParseDPoP(proof); err != nil || p.JKT != key.Thumbprint() {
			t.Errorf("poll proof %v, %v; want one of the DPoP key", p, err)
		}
	}
}

func TestAuthCode_redirectURLs(t *testing.T) {
	f := newSignInFixture(t)
	for raw, ok := range map[string]bool{
		"https://app.example/cb": true, "http://127.0.0.1:8080/cb": true, "com.example.app:/callback": true,
		"/callback": false, "https:///cb": false,
	} {
		_, err := providers.NewAuthCode(providers.AuthCodeConfig{AuthURL: f.url + "/authorize", TokenURL: f.url + "/token",
			RedirectURL: raw, Auth: providers.NoClientAuth("app"), Store: f.store, Keys: f.keys})
		if (err == nil) != ok {
			t.Errorf("RedirectURL %q: %v", raw, err)
		}
	}
}

// Discovery refuses an authorization or device authorization endpoint in
// clear text to a host that is not loopback, as it does a token endpoint.
func TestSignIn_discoveryRefusesPlainHTTPEndpoints(t *testing.T) {
	f := newSignInFixture(t)
	var hs *httptest.Server
	hs = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"issuer":%q,"token_endpoint":"%[1]s/token","authorization_endpoint":"http://login.example/authorize",`+
			`"device_authorization_endpoint":"http://login.example/device"}`, hs.URL)
	}))
	t.Cleanup(hs.Close)
	iss, err := providers.NewIssuer(providers.IssuerConfig{Issuer: hs.URL})
	if err != nil {
		t.Fatal(err)
	}
	a, err := providers.NewAuthCode(providers.AuthCodeConfig{Issuer: iss, RedirectURL: "https://app/cb",
		Auth: providers.NoClientAuth("app"), Store: f.store, Keys: f.keys})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Start(context.Background()); !errors.Is(err, tokenmanager.ErrInsecureTransport) {
		t.Errorf("AuthCode.Start: %v; want ErrInsecureTransport", err)
	}
	d, err := providers.NewDeviceFlow(providers.DeviceFlowConfig{Issuer: iss, Auth: providers.NoClientAuth("app"), Store: f.store, Keys: f.keys})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Start(context.Background(), ann); !errors.Is(err, tokenmanager.ErrInsecureTransport) {
		t.Errorf("DeviceFlow.Start: %v; want ErrInsecureTransport", err)
	}
}
