package backoff

import (
	"errors"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
)

func TestBackoff(t *testing.T) {
	base, maxDelay := 500*time.Millisecond, 30*time.Second
	tests := []struct {
		n        int
		min, max time.Duration
	}{
		{1, 250 * time.Millisecond, 500 * time.Millisecond},
		{2, 500 * time.Millisecond, time.Second},
		{4, 2 * time.Second, 4 * time.Second},
		{7, 15 * time.Second, 30 * time.Second},
		{8, 15 * time.Second, 30 * time.Second},
		{1000, 15 * time.Second, 30 * time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			if got := Backoff(tt.n, base, maxDelay); got < tt.min || got > tt.max {
				t.Fatalf("Backoff(%d) = %v; want in [%v, %v]", tt.n, got, tt.min, tt.max)
			}
		}
	}
	if got := Backoff(1, time.Nanosecond, time.Nanosecond); got != MinRetryDelay {
		t.Errorf("Backoff with 1ns delays = %v; want the %v floor", got, MinRetryDelay)
	}
}

// TestSettingsFailure pins the settings backoff an owner and a grain
// share: jittered, 0.5s doubling to 30s, on the caller's clock.
func TestSettingsFailure(t *testing.T) {
	mock := clock.NewMock()
	broken := errors.New("no such tenant")
	var f SettingsFailure
	if err := f.Blocking(mock.Now()); err != nil {
		t.Fatalf("a fresh SettingsFailure blocks with %v", err)
	}
	tests := []struct {
		n        int
		min, max time.Duration
	}{
		{1, 250 * time.Millisecond, 500 * time.Millisecond},
		{2, 500 * time.Millisecond, time.Second},
		{3, time.Second, 2 * time.Second},
		{7, 15 * time.Second, 30 * time.Second},
		{20, 15 * time.Second, 30 * time.Second},
	}
	jittered := false
	for _, tt := range tests {
		var first time.Duration
		for i := range 50 {
			g := SettingsFailure{N: tt.n - 1}
			in := g.Fail(mock.Now(), broken)
			if in < tt.min || in > tt.max || g.N != tt.n || !g.NotBefore.Equal(mock.Now().Add(in)) {
				t.Fatalf("failure %d: retry in %v, N %d, NotBefore %v; want in [%v, %v]", tt.n, in, g.N, g.NotBefore, tt.min, tt.max)
			}
			if i == 0 {
				first = in
			} else if in != first {
				jittered = true
			}
		}
	}
	if !jittered {
		t.Error("every retry delay was the same: no jitter")
	}
	in := f.Fail(mock.Now(), broken)
	mock.Add(in - time.Millisecond)
	if err := f.Blocking(mock.Now()); !errors.Is(err, broken) {
		t.Errorf("Blocking before NotBefore = %v; want the failure", err)
	}
	mock.Add(time.Millisecond)
	if err := f.Blocking(mock.Now()); err != nil {
		t.Errorf("Blocking at NotBefore = %v; want nil", err)
	}
	var none *SettingsFailure
	if err := none.Blocking(mock.Now()); err != nil {
		t.Errorf("nil SettingsFailure blocks with %v", err)
	}
}
