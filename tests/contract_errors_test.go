package tests

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// errBadSecret stands for a token endpoint's "invalid_client".
var errBadSecret = errors.New("invalid_client: bad secret")

// switchable is a provider that fails permanently until fixed.
type switchable struct {
	Calls  atomic.Int64
	broken atomic.Bool
}

func (p *switchable) Get(context.Context) (tokenmanager.Token, error) {
	n := p.Calls.Add(1)
	if p.broken.Load() {
		return tokenmanager.Token{}, tokenmanager.Permanent(errBadSecret)
	}
	return tokenmanager.Token{AccessToken: fmt.Sprintf("tok-%d", n), ExpiresIn: 3600}, nil
}

func TestPermanentError_failsWaitingRequestsAtOnce(t *testing.T) {
	p := &switchable{}
	p.broken.Store(true)
	mock := clock.NewMock()
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, Clock: mock, WaitTimeout: time.Minute}, &testutil.Backend{})
	rec := testutil.Record(t, rt)

	began := time.Now()
	results := concurrently(20, func(int) result { return send(context.Background(), rt, "") })
	if took := time.Since(began); took > testutil.Patience {
		t.Fatalf("requests took %v; a permanent failure must end them at once", took)
	}
	for i, r := range results {
		var fe *tokenmanager.FetchError
		if !errors.Is(r.err, errBadSecret) || !errors.As(r.err, &fe) || !fe.Permanent() {
			t.Fatalf("request %d: err %v; want a permanent *FetchError wrapping the provider's error", i, r.err)
		}
	}
	if got := p.Calls.Load(); got != 1 {
		t.Errorf("provider calls = %d; want 1 for 20 concurrent requests", got)
	}
	failed := testutil.WaitEvents[messages.TokenRequestFailed](t, rec, 1)
	if !failed[0].Permanent || failed[0].RetryIn != 0 {
		t.Errorf("TokenRequestFailed = %+v; want Permanent and no retry scheduled for nobody", failed[0])
	}

	// During the backoff, a request fails at once without a fetch.
	if r := send(context.Background(), rt, ""); !errors.Is(r.err, errBadSecret) {
		t.Errorf("request during backoff: err %v; want the permanent error", r.err)
	}
	if got := p.Calls.Load(); got != 1 {
		t.Errorf("provider calls = %d after a request during the backoff; want still 1", got)
	}
	// An idle manager does not retry on its own, however long it waits.
	mock.Add(10 * time.Minute)
	testutil.Stays(t, "no fetch for nobody", func() bool { return p.Calls.Load() == 1 })

	// Once the secret is fixed, the next request after the backoff works.
	p.broken.Store(false)
	if r := mustOK(t, rt); r.auth != "Bearer tok-2" {
		t.Errorf("after the fix: carried %q; want tok-2", r.auth)
	}
}

func TestPermanentError_oneFetchPerBackoffStep(t *testing.T) {
	p := &switchable{}
	p.broken.Store(true)
	mock := clock.NewMock()
	rt := testutil.NewRT(t, tokenmanager.Settings{
		GetCredentials: p.Get, Clock: mock,
		RetryBaseDelay: time.Second, RetryMaxDelay: 8 * time.Second,
	}, &testutil.Backend{})
	for step := 1; step <= 6; step++ {
		for range 50 {
			if r := send(context.Background(), rt, ""); !errors.Is(r.err, errBadSecret) {
				t.Fatalf("step %d: err %v; want the permanent error", step, r.err)
			}
		}
		if got := p.Calls.Load(); got != int64(step) {
			t.Fatalf("step %d: provider calls = %d; want one per backoff step, not one per request", step, got)
		}
		mock.Add(8 * time.Second) // past the capped backoff
	}
}

func TestPermanentError_pushedTokenRecovers(t *testing.T) {
	system := testutil.NewSystem(t)
	p := &switchable{}
	p.broken.Store(true)
	mock := clock.NewMock()
	s := tokenmanager.Settings{GetCredentials: p.Get, Clock: mock}
	pid := spawn(t, system, s)
	if res := ask(t, system, pid); !tokenmanager.IsPermanent(res.Err) {
		t.Fatalf("Get: %v; want a permanent error", res.Err)
	}
	system.Root.Send(pid, messages.Refreshed{Token: tokenmanager.Token{AccessToken: "pushed", ExpiresIn: 60}})
	if res := ask(t, system, pid); res.Err != nil || res.Token.AccessToken != "pushed" {
		t.Errorf("Get after a push: %+v; want the pushed token", res)
	}
}

func TestWaitError_wrapsProviderErrorAndContext(t *testing.T) {
	p := &testutil.Provider{}
	p.Always.Store(true) // temporary: requests wait through retries
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, &testutil.Backend{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	r := send(ctx, rt, "")
	if !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("err %v; want it to wrap context.DeadlineExceeded", r.err)
	}
	if !errors.Is(r.err, testutil.ErrEndpointDown) {
		t.Errorf("err %v; want it to wrap the provider's error", r.err)
	}
	var fe *tokenmanager.FetchError
	if !errors.As(r.err, &fe) || fe.Permanent() {
		t.Errorf("err %v; want errors.As to find a temporary *FetchError", r.err)
	}
}

var errGaveUp = errors.New("my provider gave up")

func TestFetchTimeout_providerOwnErrorKept(t *testing.T) {
	// The provider returns its own error when its context ends; that error,
	// not "did not return", is what requests and events see.
	for run := range 5 {
		t.Run(fmt.Sprint(run), func(t *testing.T) {
			provider := func(ctx context.Context) (tokenmanager.Token, error) {
				<-ctx.Done()
				return tokenmanager.Token{}, fmt.Errorf("%w: %w", errGaveUp, ctx.Err())
			}
			rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: provider, FetchTimeout: 20 * time.Millisecond}, &testutil.Backend{})
			rec := testutil.Record(t, rt)
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			send(ctx, rt, "")
			ev := testutil.WaitEvents[messages.TokenRequestFailed](t, rec, 1)[0]
			if !errors.Is(ev.Err, errGaveUp) || strings.Contains(ev.Err.Error(), "did not return") {
				t.Errorf("TokenRequestFailed.Err = %v; want the provider's own error", ev.Err)
			}
		})
	}
}

func TestFetchTimeout_didNotReturnOnlyWhenItDidNot(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	provider := func(context.Context) (tokenmanager.Token, error) {
		<-release // ignores its context
		return tokenmanager.Token{}, errors.New("late")
	}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: provider, FetchTimeout: 20 * time.Millisecond}, &testutil.Backend{})
	rec := testutil.Record(t, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	send(ctx, rt, "")
	ev := testutil.WaitEvents[messages.TokenRequestFailed](t, rec, 1)[0]
	if !errors.Is(ev.Err, context.DeadlineExceeded) || !strings.Contains(ev.Err.Error(), "did not return") {
		t.Errorf("TokenRequestFailed.Err = %v; want 'did not return' wrapping DeadlineExceeded", ev.Err)
	}
}

func TestPushedBadToken_isABadPushNotAFailedFetch(t *testing.T) {
	system := testutil.NewSystem(t)
	p := &testutil.Provider{ExpiresIn: 3600}
	pid := spawn(t, system, tokenmanager.Settings{GetCredentials: p.Get, Clock: clock.NewMock(), TokenTryThreshold: 1})
	var mu sync.Mutex
	var seen []messages.Event
	sub := system.EventStream.Subscribe(func(ev any) {
		if e, ok := ev.(messages.Event); ok {
			mu.Lock()
			seen = append(seen, e)
			mu.Unlock()
		}
	})
	defer system.EventStream.Unsubscribe(sub)
	if res := ask(t, system, pid); res.Token.AccessToken != "tok-1" {
		t.Fatalf("Get: %+v; want tok-1", res)
	}
	system.Root.Send(pid, messages.Refreshed{Token: tokenmanager.Token{}})
	events := func() []messages.Event {
		mu.Lock()
		defer mu.Unlock()
		return append([]messages.Event(nil), seen...)
	}
	testutil.Eventually(t, "a PushRejected event", func() bool {
		for _, ev := range events() {
			if pr, ok := ev.(messages.PushRejected); ok {
				return errors.Is(pr.Err, tokenmanager.ErrInvalidToken)
			}
		}
		return false
	})
	for _, ev := range events() {
		switch ev.(type) {
		case messages.TokenRequestFailed, messages.TokenTryThresholdReached:
			t.Errorf("a bad push published %T; want only PushRejected", ev)
		}
	}
	// The cached token is kept.
	if res := ask(t, system, pid); res.Token.AccessToken != "tok-1" || p.Calls.Load() != 1 {
		t.Errorf("Get after a bad push: %+v, %d provider calls; want tok-1 still cached", res, p.Calls.Load())
	}
}

// countingBase counts requests and answers 200.
type countingBase struct{ n atomic.Int64 }

func (c *countingBase) RoundTrip(req *http.Request) (*http.Response, error) {
	c.n.Add(1)
	if req.Body != nil {
		req.Body.Close()
	}
	return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("ok")), Header: http.Header{}, Request: req}, nil
}

func TestInsecureTransport_tokenOnlyOverTLSOrLoopback(t *testing.T) {
	tests := []struct {
		url      string
		allow    bool
		wantSent bool
	}{
		{"https://api.example.com/x", false, true},
		{"http://api.example.com/x", false, false},
		{"http://10.1.2.3:8080/x", false, false},
		{"http://127.0.0.1:8080/x", false, true},
		{"http://localhost:8080/x", false, true},
		{"http://[::1]:8080/x", false, true},
		{"http://api.example.com/x", true, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s allow=%v", tt.url, tt.allow), func(t *testing.T) {
			base := &countingBase{}
			p := &testutil.Provider{ExpiresIn: 3600}
			rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get, AllowInsecureHTTP: tt.allow}, base)
			body := testutil.NewTrackedBody("payload")
			req, _ := http.NewRequest(http.MethodPost, tt.url, body)
			resp, err := rt.RoundTrip(req)
			if resp != nil {
				resp.Body.Close()
			}
			if sent := base.n.Load() == 1; sent != tt.wantSent {
				t.Fatalf("sent = %v (err %v); want %v", sent, err, tt.wantSent)
			}
			if !tt.wantSent {
				if !errors.Is(err, tokenmanager.ErrInsecureTransport) || !strings.Contains(err.Error(), "AllowInsecureHTTP") {
					t.Errorf("err %v; want ErrInsecureTransport naming the setting", err)
				}
				if body.Closes() != 1 {
					t.Errorf("body closed %d times; want once", body.Closes())
				}
				if p.Calls.Load() != 0 {
					t.Errorf("provider called %d times for a refused request; want 0", p.Calls.Load())
				}
			}
		})
	}
}

// flakyAPI rejects odd-numbered tokens always, and accepts even-numbered
// ones for their first few uses, then rejects them: an API on which new
// tokens are often, but not always, rejected.
type flakyAPI struct {
	mu   sync.Mutex
	uses map[string]int
}

func (f *flakyAPI) RoundTrip(req *http.Request) (*http.Response, error) {
	tok := strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer tok-")
	var n int
	fmt.Sscan(tok, &n)
	f.mu.Lock()
	f.uses[tok]++
	uses := f.uses[tok]
	f.mu.Unlock()
	status := http.StatusOK
	if n%2 == 1 || uses > 3 {
		status = http.StatusUnauthorized
	}
	return &http.Response{StatusCode: status, Body: io.NopCloser(strings.NewReader("")), Header: http.Header{}, Request: req}, nil
}

func TestHold_workingTokensEndTheStreak(t *testing.T) {
	// No time passes: before a token that served a request ended the
	// streak, the rejected odd tokens added up to a hold within a few
	// dozen requests, and every request during it failed.
	p := &testutil.Provider{ExpiresIn: 60}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, &flakyAPI{uses: map[string]int{}})
	var ok, failed int
	for range 400 {
		if r := send(context.Background(), rt, ""); r.err == nil && r.status == http.StatusOK {
			ok++
		} else {
			failed++
		}
	}
	if failed != 0 {
		t.Errorf("%d ok, %d failed; want every request recovered while some new tokens work", ok, failed)
	}
}
