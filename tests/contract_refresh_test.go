package tests

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
)

func TestEarlyRefresh_atExpiryMinusBuffer(t *testing.T) {
	mock := clock.NewMock()
	p := &testutil.Provider{ExpiresIn: 60}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, Clock: mock, RefreshBuffer: 10 * time.Second}, &testutil.Backend{})
	mustOK(t, rt)

	mock.Add(49 * time.Second)
	testutil.Stays(t, "one provider call before expiry-buffer", func() bool { return p.Calls.Load() == 1 })
	mock.Add(2 * time.Second) // 51s: past expiry - RefreshBuffer
	testutil.Eventually(t, "the early refresh", func() bool { return p.Calls.Load() == 2 })
	testutil.Eventually(t, "the new token in use", func() bool { return mustOK(t, rt).auth == "Bearer tok-2" })
}

func TestEarlyRefresh_blocksNoOne(t *testing.T) {
	mock := clock.NewMock()
	p := &testutil.Provider{ExpiresIn: 60}
	b := &testutil.Backend{}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, Clock: mock, RefreshBuffer: 10 * time.Second}, b)
	mustOK(t, rt)

	release := p.Hold()
	defer release()
	mock.Add(51 * time.Second)
	testutil.Eventually(t, "the early refresh to start", func() bool { return p.Calls.Load() == 2 })

	// The refresh is held: requests must still go out at once with the
	// still-valid token, before the fetch is released.
	done := make(chan []result, 1)
	go func() { done <- concurrently(50, func(int) result { return send(context.Background(), rt, "") }) }()
	select {
	case results := <-done:
		allCarried(t, results, "Bearer tok-1")
	case <-time.After(testutil.Patience):
		t.Fatal("requests waited for the early refresh instead of using the still-valid token")
	}

	release()
	testutil.Eventually(t, "the refreshed token in use", func() bool { return mustOK(t, rt).auth == "Bearer tok-2" })
	if got := p.Calls.Load(); got != 2 {
		t.Errorf("provider calls = %d; want 2", got)
	}
}

func TestEarlyRefresh_shortLifetimeAtHalf(t *testing.T) {
	mock := clock.NewMock()
	p := &testutil.Provider{ExpiresIn: 4} // shorter than the buffer
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, Clock: mock, RefreshBuffer: 10 * time.Second}, &testutil.Backend{})
	mustOK(t, rt)

	testutil.Stays(t, "no immediate refresh", func() bool { return p.Calls.Load() == 1 })
	mock.Add(1900 * time.Millisecond)
	testutil.Stays(t, "no refresh before half the lifetime", func() bool { return p.Calls.Load() == 1 })
	if got := mustOK(t, rt).auth; got != "Bearer tok-1" {
		t.Errorf("request at 1.9s carried %q; want the cached tok-1", got)
	}
	mock.Add(200 * time.Millisecond) // 2.1s: past half of 4s
	testutil.Eventually(t, "the refresh at half the lifetime", func() bool { return p.Calls.Load() == 2 })
}

func TestEarlyRefresh_neverSoonerThanHalfTheLifetime(t *testing.T) {
	mock := clock.NewMock()
	p := &testutil.Provider{ExpiresIn: 60} // a buffer of 50s would say 10s
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, Clock: mock, RefreshBuffer: 50 * time.Second}, &testutil.Backend{})
	mustOK(t, rt)

	mock.Add(29 * time.Second)
	testutil.Stays(t, "no refresh before half the lifetime", func() bool { return p.Calls.Load() == 1 })
	mock.Add(2 * time.Second) // 31s: past half of 60s
	testutil.Eventually(t, "the refresh at half the lifetime", func() bool { return p.Calls.Load() == 2 })
}

func TestEarlyRefresh_noExpiryCachedUntilRejected(t *testing.T) {
	for _, expiresIn := range []int64{0, -30} {
		t.Run(fmt.Sprintf("expires_in=%d", expiresIn), func(t *testing.T) {
			mock := clock.NewMock()
			p := &testutil.Provider{ExpiresIn: expiresIn}
			b := &testutil.Backend{}
			rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, Clock: mock}, b)
			mustOK(t, rt)
			for range 30 {
				mock.Add(24 * time.Hour)
			}
			testutil.Stays(t, "one provider call after 30 days", func() bool { return p.Calls.Load() == 1 })
			if got := mustOK(t, rt).auth; got != "Bearer tok-1" {
				t.Errorf("after 30 days the request carried %q; want the cached tok-1", got)
			}
			b.Revoke("tok-1")
			if got := mustOK(t, rt).auth; got != "Bearer tok-2" {
				t.Errorf("after rejection the request carried %q; want tok-2", got)
			}
			if got := p.Calls.Load(); got != 2 {
				t.Errorf("provider calls = %d; want 2", got)
			}
		})
	}
}

func TestEarlyRefresh_noHotLoop(t *testing.T) {
	tests := []struct {
		name      string
		expiresIn int64
		buffer    time.Duration
	}{
		{"one-second token, 10s buffer", 1, 10 * time.Second},
		{"buffer equal to lifetime", 60, 60 * time.Second},
		{"huge buffer", 3600, 1000 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mock := clock.NewMock()
			p := &testutil.Provider{ExpiresIn: tt.expiresIn}
			rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, Clock: mock, RefreshBuffer: tt.buffer}, &testutil.Backend{})
			mustOK(t, rt)

			// With the clock standing still, nothing may be fetched.
			testutil.Stays(t, "one provider call with the clock standing still", func() bool { return p.Calls.Load() == 1 })

			// Over ten lifetimes in 200 steps each token is refreshed at
			// half its lifetime: about twenty fetches, not one per step.
			life := time.Duration(tt.expiresIn) * time.Second
			for range 200 {
				mock.Add(life / 20)
				time.Sleep(time.Millisecond) // let a fired timer's fetch run
			}
			settled := p.Calls.Load()
			t.Logf("provider calls over ten lifetimes: %d", settled)
			testutil.Stays(t, "no fetch while the clock stands still", func() bool { return p.Calls.Load() == settled })
			if settled > 30 {
				t.Errorf("provider calls over ten token lifetimes = %d; want about 20 (no hot loop)", settled)
			}
			if settled < 5 {
				t.Errorf("provider calls over ten token lifetimes = %d; want the token kept fresh", settled)
			}
		})
	}
}

// No setting makes the manager fetch in a hot loop: even the smallest
// backoff the settings accept must not turn a failing token endpoint into
// thousands of calls while one request waits.
func TestNoHotLoop_tinyRetryDelays(t *testing.T) {
	const window = 200 * time.Millisecond
	p := &testutil.Provider{}
	p.Always.Store(true)
	rt := testutil.NewRT(t, tokenmanager.Settings{
		GetCredentials: p.Get, // real clock: the loop would run on real time
		RetryBaseDelay: time.Nanosecond,
		RetryMaxDelay:  time.Nanosecond,
	}, &testutil.Backend{})
	ctx, cancel := context.WithTimeout(context.Background(), window)
	defer cancel()
	send(ctx, rt, "")
	// One fetch per millisecond is already far more than any token
	// endpoint should see from one client.
	if got := p.Calls.Load(); got > int64(window/time.Millisecond) {
		t.Errorf("provider calls while one request waited %v = %d; want at most %d (no hot loop)", window, got, window/time.Millisecond)
	}
}
