package reliability

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"go.uber.org/goleak"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
)

// seqProvider hands out tok-1, tok-2, ... valid for an hour. When gate
// is set, every call after the first waits for a receive from it.
type seqProvider struct {
	calls atomic.Int64
	gate  chan struct{}
}

func (p *seqProvider) get(ctx context.Context) (tokenmanager.Token, error) {
	n := p.calls.Add(1)
	if n > 1 && p.gate != nil {
		select {
		case <-p.gate:
		case <-ctx.Done():
			return tokenmanager.Token{}, ctx.Err()
		}
	}
	return tokenmanager.Token{AccessToken: fmt.Sprintf("tok-%d", n), ExpiresIn: 3600}, nil
}

// trackedBody is a response body that records bytes read and Close
// calls, and fails reads with readErr once its data is used up (or at
// once when data is empty and readErr is set).
type trackedBody struct {
	r       io.Reader
	readErr error
	read    atomic.Int64
	closes  atomic.Int64
}

func newTrackedBody(data string, readErr error) *trackedBody {
	return &trackedBody{r: strings.NewReader(data), readErr: readErr}
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read.Add(int64(n))
	if err == io.EOF && b.readErr != nil {
		err = b.readErr
	}
	return n, err
}

func (b *trackedBody) Close() error {
	b.closes.Add(1)
	return nil
}

// TestBaseFaults_connectionError: the base transport fails; the caller
// gets its error unchanged, the token is neither dropped nor refetched,
// and the next request works.
func TestBaseFaults_connectionError(t *testing.T) {
	p := &seqProvider{}
	injected := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	var fail atomic.Bool
	fail.Store(true)
	base := testutil.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
		if fail.Load() {
			return nil, injected
		}
		return testutil.TextResponse(req, http.StatusOK, "ok"), nil
	})
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: clock.NewMock()}, base)
	for range 10 {
		if _, err := doGet(context.Background(), rt, "https://api.test/x"); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("err = %v; want the base's ECONNREFUSED", err)
		}
	}
	fail.Store(false)
	if status, err := doGet(context.Background(), rt, "https://api.test/x"); err != nil || status != http.StatusOK {
		t.Fatalf("after the fault: %d, %v", status, err)
	}
	if got := p.calls.Load(); got != 1 {
		t.Errorf("provider calls = %d; want 1 (a connection error says nothing about the token)", got)
	}
}

// TestBaseFaults_closedListener: a real TCP connection refused on
// 127.0.0.1.
func TestBaseFaults_closedListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	p := &seqProvider{}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: clock.NewMock()}, tr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = doGet(ctx, rt, "http://"+addr+"/x")
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Fatalf("err = %v; want a *net.OpError", err)
	}
	if strings.Contains(err.Error(), "tok-1") {
		t.Errorf("error %q carries the token", err)
	}
	if got := p.calls.Load(); got != 1 {
		t.Errorf("provider calls = %d; want 1", got)
	}
}

// TestBaseFaults_unreadable401DuringRecovery: the 401 that starts a
// recovery has a body whose Read fails. The recovery goes on; the broken
// body is closed exactly once; the caller gets the 200.
func TestBaseFaults_unreadable401DuringRecovery(t *testing.T) {
	p := &seqProvider{}
	var bodies []*trackedBody
	var mu sync.Mutex
	base := testutil.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
		if testutil.Bearer(req) == "tok-1" {
			b := newTrackedBody("partial", errors.New("connection reset mid-body"))
			mu.Lock()
			bodies = append(bodies, b)
			mu.Unlock()
			resp := testutil.TextResponse(req, http.StatusUnauthorized, "")
			resp.Body = b
			return resp, nil
		}
		return testutil.TextResponse(req, http.StatusOK, "ok"), nil
	})
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: clock.NewMock()}, base)
	status, err := doGet(context.Background(), rt, "https://api.test/x")
	if err != nil || status != http.StatusOK {
		t.Fatalf("got %d, %v; want 200 after recovery", status, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 1 {
		t.Fatalf("base saw %d rejected requests; want 1", len(bodies))
	}
	if got := bodies[0].closes.Load(); got != 1 {
		t.Errorf("unreadable 401 body closed %d times; want 1", got)
	}
}

// TestBaseFaults_unreadableFinal401: recovery gives up; the caller gets
// the last 401 with its (failing) body untouched, and closes it.
func TestBaseFaults_unreadableFinal401(t *testing.T) {
	p := &seqProvider{}
	var last atomic.Pointer[trackedBody]
	base := testutil.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
		b := newTrackedBody("denied", errors.New("connection reset mid-body"))
		last.Store(b)
		resp := testutil.TextResponse(req, http.StatusUnauthorized, "")
		resp.Body = b
		return resp, nil
	})
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: clock.NewMock(), MaxRecoveryTries: 2}, base)
	req, _ := http.NewRequest(http.MethodGet, "https://api.test/x", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status = %d; want 401", resp.StatusCode)
	}
	if b := last.Load(); resp.Body != io.ReadCloser(b) || b.read.Load() != 0 || b.closes.Load() != 0 {
		t.Errorf("last response body was touched before the caller got it")
	}
	data, err := io.ReadAll(resp.Body)
	if string(data) != "denied" || err == nil {
		t.Errorf("ReadAll = %q, %v; want the body and its read error", data, err)
	}
	resp.Body.Close()
	if got := p.calls.Load(); got != 3 {
		t.Errorf("provider calls = %d; want 3 (first token + 2 recovery tries)", got)
	}
}

// TestBaseFaults_bodiesNeverClosed: callers that never close response
// bodies leave nothing behind once the RoundTripper is closed.
func TestBaseFaults_bodiesNeverClosed(t *testing.T) {
	before := goleak.IgnoreCurrent()
	p := &seqProvider{}
	var revoked atomic.Value // string
	revoked.Store("")
	base := testutil.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
		if testutil.Bearer(req) == revoked.Load().(string) {
			return testutil.TextResponse(req, http.StatusUnauthorized, "revoked"), nil
		}
		return testutil.TextResponse(req, http.StatusOK, strings.Repeat("x", 1024)), nil
	})
	rt, err := newUnmanagedRT(tokenmanager.Settings{GetCredentials: p.get, Clock: clock.NewMock()}, base)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				if w == 0 && i%50 == 0 {
					tok, _ := rt.Token(context.Background())
					revoked.Store(tok.AccessToken)
				}
				req, _ := http.NewRequest(http.MethodGet, "https://api.test/x", nil)
				resp, err := rt.RoundTrip(req)
				if err != nil {
					t.Errorf("RoundTrip: %v", err)
					return
				}
				_ = resp // body never read nor closed
			}
		}()
	}
	wg.Wait()
	if err := rt.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	goleak.VerifyNone(t, before)
}

// TestBaseFaults_cancelMidRecovery: the caller's context is cancelled
// after the first 401, while the refetch is held at the provider. The
// request returns promptly, either with an error wrapping
// context.Canceled (the 401 then drained and closed) or with the 401 it
// already obtained, body unread, and RecoveryAborted; releasing the
// provider later does no harm.
func TestBaseFaults_cancelMidRecovery(t *testing.T) {
	p := &seqProvider{gate: make(chan struct{})}
	got401 := make(chan struct{})
	rejected := newTrackedBody("revoked", nil)
	base := testutil.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
		if testutil.Bearer(req) == "tok-1" {
			resp := testutil.TextResponse(req, http.StatusUnauthorized, "")
			resp.Body = rejected
			close(got401)
			return resp, nil
		}
		return testutil.TextResponse(req, http.StatusOK, "ok"), nil
	})
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: clock.NewMock()}, base)
	ev := testutil.Record(t, rt)
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.test/x", nil)
		resp, err := rt.RoundTrip(req)
		done <- result{resp, err}
	}()
	<-got401
	testutil.Within(t, 5*time.Second, "the refetch to reach the provider", func() bool { return p.calls.Load() == 2 })
	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("request did not return after its context was cancelled")
	}
	switch {
	case r.err != nil:
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("err = %v; want one wrapping context.Canceled", r.err)
		}
		if got := rejected.closes.Load(); got != 1 {
			t.Errorf("discarded 401 body closed %d times; want 1", got)
		}
		t.Logf("cancelled mid-recovery: error %v", r.err)
	case r.resp.StatusCode == http.StatusUnauthorized:
		if rejected.closes.Load() != 0 || rejected.read.Load() != 0 {
			t.Errorf("the 401 given back was read or closed before the caller got it")
		}
		data, _ := io.ReadAll(r.resp.Body)
		r.resp.Body.Close()
		if string(data) != "revoked" {
			t.Errorf("401 body = %q; want %q", data, "revoked")
		}
		testutil.Within(t, 5*time.Second, "RecoveryAborted", func() bool { return ev.Count("recovery_aborted") == 1 })
		t.Logf("cancelled mid-recovery: the 401 obtained is given back")
	default:
		t.Errorf("status = %d; want an error or the 401", r.resp.StatusCode)
	}
	p.gate <- struct{}{} // the refetch completes for nobody
	if status, err := doGet(context.Background(), rt, "https://api.test/x"); err != nil || status != http.StatusOK {
		t.Errorf("next request: %d, %v; want 200 with the refetched token", status, err)
	}
	if got := p.calls.Load(); got != 2 {
		t.Errorf("provider calls = %d; want 2", got)
	}
}
