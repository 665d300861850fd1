package tests

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
)

// blockingHandler is a slog.Handler whose Handle blocks the goroutine
// logging a failed SettingsFor until open is closed, once entered is
// closed; it drops every other record.
type blockingHandler struct {
	entered, open chan struct{}
	once          sync.Once
}

func (h *blockingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *blockingHandler) Handle(_ context.Context, r slog.Record) error {
	if !strings.Contains(r.Message, "SettingsFor failed") {
		return nil
	}
	h.once.Do(func() { close(h.entered) })
	<-h.open
	return nil
}
func (h *blockingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *blockingHandler) WithGroup(string) slog.Handler      { return h }

// TestMulti_firstTokenDoesNotWaitForTheOwner: a new identity's first
// request is sent with the token its first fetch brought, without waiting
// for the owner to cache it. The owner is held in its logger (it logs a
// failed SettingsFor on its own goroutine) while a new identity's first
// request goes through; the owner then caches that token, so the next
// request fetches nothing.
func TestMulti_firstTokenDoesNotWaitForTheOwner(t *testing.T) {
	ts := newTenants(clock.NewMock(), 3600)
	ts.fail["broken"] = errors.New("no such tenant")
	h := &blockingHandler{entered: make(chan struct{}), open: make(chan struct{})}
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{Logger: slog.New(h)})
	broken := make(chan result, 1)
	go func() { broken <- sendAs(context.Background(), m, "broken") }()
	select {
	case <-h.entered: // the owner is held, logging broken's failure
	case <-time.After(testutil.Patience):
		t.Fatal("the owner never logged the failed SettingsFor")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience)
	defer cancel()
	r := sendAs(ctx, m, "fresh")
	close(h.open)
	if r.err != nil || r.auth != "Bearer fresh-1" {
		t.Fatalf("first request of a new identity while the owner is busy: %+v; want it sent with fresh-1", r)
	}
	if r := <-broken; r.err == nil || !strings.Contains(r.err.Error(), "no such tenant") {
		t.Errorf("broken identity: err %v; want its SettingsFor error", r.err)
	}
	if got := m.Live(); got != 1 {
		t.Errorf("Live() = %d after fresh's first request; want 1", got)
	}
	if r := mustOKAs(t, m, "fresh"); r.auth != "Bearer fresh-1" || ts.fetches("fresh") != 1 || ts.settingsCalls("fresh") != 1 {
		t.Errorf("second request carried %q after %d fetches, %d SettingsFor calls; want fresh-1, 1, 1",
			r.auth, ts.fetches("fresh"), ts.settingsCalls("fresh"))
	}
}

// TestMulti_firstRequestsWaitWhileTheOwnerIsBehind: while the owner is
// busy, at most 64 new identities' first requests go through without it;
// the others wait for it, so that a flood of new identities runs at the
// owner's pace instead of queueing without bound in its mailbox. Once the
// owner goes on, every one is served, each identity fetched once.
func TestMulti_firstRequestsWaitWhileTheOwnerIsBehind(t *testing.T) {
	ts := newTenants(clock.NewMock(), 3600)
	ts.fail["broken"] = errors.New("no such tenant")
	h := &blockingHandler{entered: make(chan struct{}), open: make(chan struct{})}
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{Logger: slog.New(h)})
	go sendAs(context.Background(), m, "broken")
	select {
	case <-h.entered:
	case <-time.After(testutil.Patience):
		t.Fatal("the owner never logged the failed SettingsFor")
	}
	const n, early = 100, 64
	var served atomic.Int64
	results := make(chan result, n)
	for i := range n {
		go func() {
			r := sendAs(context.Background(), m, fmt.Sprintf("flood-%d", i))
			served.Add(1)
			results <- r
		}()
	}
	testutil.Eventually(t, "the first 64 served", func() bool { return served.Load() >= early })
	testutil.Stays(t, "no more served while the owner is held", func() bool { return served.Load() == early })
	close(h.open)
	for range n {
		if r := <-results; r.err != nil || r.status != 200 {
			t.Errorf("request after the owner went on: %+v", r)
		}
	}
	for i := range n {
		if id := fmt.Sprintf("flood-%d", i); ts.fetches(id) != 1 || ts.settingsCalls(id) != 1 {
			t.Errorf("%s: %d fetches, %d SettingsFor calls; want 1 and 1", id, ts.fetches(id), ts.settingsCalls(id))
		}
	}
}

// TestMulti_firstRequestsStartEachIdentityOnce: many new identities, each
// asked by several requests at once, as others are hosted meanwhile: each
// identity's SettingsFor and provider are called once, and every request
// carries its identity's first token.
func TestMulti_firstRequestsStartEachIdentityOnce(t *testing.T) {
	ts := newTenants(clock.NewMock(), 3600)
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{})
	const identities, each = 200, 6
	results := concurrently(identities*each, func(i int) result {
		return sendAs(context.Background(), m, fmt.Sprintf("id-%d", i%identities))
	})
	for i, r := range results {
		id := fmt.Sprintf("id-%d", i%identities)
		if r.err != nil || r.auth != "Bearer "+id+"-1" {
			t.Fatalf("request %d: %+v; want %s-1", i, r, id)
		}
	}
	for i := range identities {
		id := fmt.Sprintf("id-%d", i)
		if s, f := ts.settingsCalls(id), ts.fetches(id); s != 1 || f != 1 {
			t.Errorf("%s: %d SettingsFor calls, %d provider calls; want 1 and 1", id, s, f)
		}
	}
	if got := m.Live(); got != identities {
		t.Errorf("Live() = %d; want %d", got, identities)
	}
}

// TestMulti_failedFirstFetchIsRetried: when a new identity's first fetch
// fails, its first request waits through the retry, as any request for a
// failing identity does, and carries the retry's token.
func TestMulti_failedFirstFetchIsRetried(t *testing.T) {
	mock := clock.NewMock()
	ts := newTenants(mock, 3600)
	p := &testutil.Provider{Prefix: "flaky-", ExpiresIn: 3600}
	p.FailN.Store(1)
	ts.providers["flaky"] = p
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{})
	done := make(chan result, 1)
	go func() { done <- sendAs(context.Background(), m, "flaky") }()
	testutil.AdvanceUntil(t, mock, 100*time.Millisecond, 600, "the retry", func() bool { return p.Calls.Load() >= 2 })
	select {
	case r := <-done:
		if r.err != nil || r.auth != "Bearer flaky-2" {
			t.Errorf("first request after a failed first fetch: %+v; want flaky-2", r)
		}
	case <-time.After(testutil.Patience):
		t.Fatal("the first request never got the retry's token")
	}
	if got := p.Calls.Load(); got != 2 {
		t.Errorf("%d provider calls; want 2 (the failure, the retry)", got)
	}
}

// TestMulti_firstRequestLeavesWithItsContext: a new identity's first
// request whose context ends while its first fetch runs returns at once
// with the context's error; the fetch goes on, and its token serves the
// next request.
func TestMulti_firstRequestLeavesWithItsContext(t *testing.T) {
	ts := newTenants(clock.NewMock(), 3600)
	p := &testutil.Provider{Prefix: "gated-", ExpiresIn: 3600}
	release := p.Hold()
	ts.providers["gated"] = p
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() { done <- sendAs(ctx, m, "gated") }()
	testutil.Eventually(t, "the first fetch to start", func() bool { return p.Calls.Load() == 1 })
	cancel()
	select {
	case r := <-done:
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("first request whose context ended: err %v; want context.Canceled", r.err)
		}
	case <-time.After(testutil.Patience):
		t.Fatal("the first request did not leave when its context ended")
	}
	release()
	if r := mustOKAs(t, m, "gated"); r.auth != "Bearer gated-1" || p.Calls.Load() != 1 {
		t.Errorf("next request carried %q after %d provider calls; want gated-1 from the first fetch, 1 call", r.auth, p.Calls.Load())
	}
}

// TestMulti_endedRequestStartsNothing: a request whose context has ended
// before it is sent starts no identity: no SettingsFor call, no fetch.
func TestMulti_endedRequestStartsNothing(t *testing.T) {
	ts := newTenants(clock.NewMock(), 3600)
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := sendAs(ctx, m, "late"); !errors.Is(r.err, context.Canceled) {
		t.Errorf("err %v; want context.Canceled", r.err)
	}
	testutil.Stays(t, "no SettingsFor call for an ended request", func() bool { return ts.settingsCalls("late") == 0 })
}
