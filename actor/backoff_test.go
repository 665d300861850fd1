package actor

import (
	"testing"
	"time"
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
			if got := backoff(tt.n, base, maxDelay); got < tt.min || got > tt.max {
				t.Fatalf("backoff(%d) = %v; want in [%v, %v]", tt.n, got, tt.min, tt.max)
			}
		}
	}
	if got := backoff(1, time.Nanosecond, time.Nanosecond); got != minRetryDelay {
		t.Errorf("backoff with 1ns delays = %v; want the %v floor", got, minRetryDelay)
	}
}
