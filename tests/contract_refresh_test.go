package tests

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
)

func TestEarlyRefresh_atExpiryMinusBuffer(t *testing.T) {
	mock := clock.NewMock()
	p := &provider{expiresIn: 60}
	rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: mock, RefreshBuffer: 10 * time.Second}, &backend{})
	mustOK(t, rt)

	mock.Add(49 * time.Second)
	stays(t, "one provider call before expiry-buffer", func() bool { return p.calls.Load() == 1 })
	mock.Add(2 * time.Second) // 51s: past expiry - RefreshBuffer
	eventually(t, "the early refresh", func() bool { return p.calls.Load() == 2 })
	eventually(t, "the new token in use", func() bool { return mustOK(t, rt).auth == "Bearer tok-2" })
}

func TestEarlyRefresh_blocksNoOne(t *testing.T) {
	mock := clock.NewMock()
	p := &provider{expiresIn: 60}
	b := &backend{}
	rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: mock, RefreshBuffer: 10 * time.Second}, b)
	mustOK(t, rt)

	release := p.hold()
	defer release()
	mock.Add(51 * time.Second)
	eventually(t, "the early refresh to start", func() bool { return p.calls.Load() == 2 })

	// The refresh is held: requests must still go out at once with the
	// still-valid token, before the fetch is released.
	done := make(chan []result, 1)
	go func() { done <- concurrently(50, func(int) result { return send(context.Background(), rt, "") }) }()
	select {
	case results := <-done:
		allCarried(t, results, "Bearer tok-1")
	case <-time.After(patience):
		t.Fatal("requests waited for the early refresh instead of using the still-valid token")
	}

	release()
	eventually(t, "the refreshed token in use", func() bool { return mustOK(t, rt).auth == "Bearer tok-2" })
	if got := p.calls.Load(); got != 2 {
		t.Errorf("provider calls = %d; want 2", got)
	}
}

func TestEarlyRefresh_shortLifetimeAtHalf(t *testing.T) {
	mock := clock.NewMock()
	p := &provider{expiresIn: 4} // shorter than the buffer
	rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: mock, RefreshBuffer: 10 * time.Second}, &backend{})
	mustOK(t, rt)

	stays(t, "no immediate refresh", func() bool { return p.calls.Load() == 1 })
	mock.Add(1900 * time.Millisecond)
	stays(t, "no refresh before half the lifetime", func() bool { return p.calls.Load() == 1 })
	if got := mustOK(t, rt).auth; got != "Bearer tok-1" {
		t.Errorf("request at 1.9s carried %q; want the cached tok-1", got)
	}
	mock.Add(200 * time.Millisecond) // 2.1s: past half of 4s
	eventually(t, "the refresh at half the lifetime", func() bool { return p.calls.Load() == 2 })
}

func TestEarlyRefresh_neverSoonerThanHalfTheLifetime(t *testing.T) {
	mock := clock.NewMock()
	p := &provider{expiresIn: 60} // a buffer of 50s would say 10s
	rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: mock, RefreshBuffer: 50 * time.Second}, &backend{})
	mustOK(t, rt)

	mock.Add(29 * time.Second)
	stays(t, "no refresh before half the lifetime", func() bool { return p.calls.Load() == 1 })
	mock.Add(2 * time.Second) // 31s: past half of 60s
	eventually(t, "the refresh at half the lifetime", func() bool { return p.calls.Load() == 2 })
}

func TestEarlyRefresh_noExpiryCachedUntilRejected(t *testing.T) {
	for _, expiresIn := range []int64{0, -30} {
		t.Run(fmt.Sprintf("expires_in=%d", expiresIn), func(t *testing.T) {
			mock := clock.NewMock()
			p := &provider{expiresIn: expiresIn}
			b := &backend{}
			rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: mock}, b)
			mustOK(t, rt)
			for range 30 {
				mock.Add(24 * time.Hour)
			}
			stays(t, "one provider call after 30 days", func() bool { return p.calls.Load() == 1 })
			if got := mustOK(t, rt).auth; got != "Bearer tok-1" {
				t.Errorf("after 30 days the request carried %q; want the cached tok-1", got)
			}
			b.revoke("tok-1")
			if got := mustOK(t, rt).auth; got != "Bearer tok-2" {
				t.Errorf("after rejection the request carried %q; want tok-2", got)
			}
			if got := p.calls.Load(); got != 2 {
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
			p := &provider{expiresIn: tt.expiresIn}
			rt := newRT(t, tokenmanager.Settings{GetCredentials: p.get, Clock: mock, RefreshBuffer: tt.buffer}, &backend{})
			mustOK(t, rt)

			// With the clock standing still, nothing may be fetched.
			stays(t, "one provider call with the clock standing still", func() bool { return p.calls.Load() == 1 })

			// Over ten lifetimes in 200 steps each token is refreshed at
			// half its lifetime: about twenty fetches, not one per step.
			life := time.Duration(tt.expiresIn) * time.Second
			for range 200 {
				mock.Add(life / 20)
				time.Sleep(time.Millisecond) // let a fired timer's fetch run
			}
			settled := p.calls.Load()
			t.Logf("provider calls over ten lifetimes: %d", settled)
			stays(t, "no fetch while the clock stands still", func() bool { return p.calls.Load() == settled })
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
	p := &provider{}
	p.always.Store(true)
	rt := newRT(t, tokenmanager.Settings{
		GetCredentials: p.get, // real clock: the loop would run on real time
		RetryBaseDelay: time.Nanosecond,
		RetryMaxDelay:  time.Nanosecond,
	}, &backend{})
	ctx, cancel := context.WithTimeout(context.Background(), window)
	defer cancel()
	send(ctx, rt, "")
	// One fetch per millisecond is already far more than any token
	// endpoint should see from one client.
	if got := p.calls.Load(); got > int64(window/time.Millisecond) {
		t.Errorf("provider calls while one request waited %v = %d; want at most %d (no hot loop)", window, got, window/time.Millisecond)
	}
}
