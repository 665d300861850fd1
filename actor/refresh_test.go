package actor

import (
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager/internal/link"
)

// TestRefreshAt pins the early-refresh rule:
// start + max(lifetime - RefreshBuffer, lifetime/2), or half of what is
// left when the fetch took longer than that.
func TestRefreshAt(t *testing.T) {
	start := time.Unix(1_000_000, 0)
	tests := []struct {
		name   string
		life   time.Duration
		buffer time.Duration
		took   time.Duration // how long the fetch took: now = start + took
		want   time.Duration // refresh time, after start
	}{
		{"long token, default buffer", time.Hour, 10 * time.Second, 0, time.Hour - 10*time.Second},
		{"expiry minus buffer", 60 * time.Second, 10 * time.Second, 0, 50 * time.Second},
		{"buffer of exactly half", 60 * time.Second, 30 * time.Second, 0, 30 * time.Second},
		{"buffer over half: half the lifetime", 60 * time.Second, 50 * time.Second, 0, 30 * time.Second},
		{"lifetime a little over the buffer", 12 * time.Second, 10 * time.Second, 0, 6 * time.Second},
		{"lifetime equal to the buffer", 10 * time.Second, 10 * time.Second, 0, 5 * time.Second},
		{"lifetime shorter than the buffer", 4 * time.Second, 10 * time.Second, 0, 2 * time.Second},
		{"one-second token", time.Second, 10 * time.Second, 0, 500 * time.Millisecond},
		{"slow fetch within the rule", 60 * time.Second, 10 * time.Second, 20 * time.Second, 50 * time.Second},
		{"fetch past the refresh time: half of what is left", 60 * time.Second, 10 * time.Second, 56 * time.Second, 58 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &state{s: &fetchSettings{RefreshBuffer: tt.buffer}}
			a.cache.cur = &link.Snapshot{ExpiresAt: start.Add(tt.life)}
			at, ok := a.refreshAt(start.Add(tt.took), start)
			if !ok {
				t.Fatalf("refreshAt: ok = false for a token with expiry")
			}
			if got := at.Sub(start); got != tt.want {
				t.Errorf("lifetime %v, buffer %v, fetch %v: refresh at %v; want %v", tt.life, tt.buffer, tt.took, got, tt.want)
			}
		})
	}
	a := &state{s: &fetchSettings{RefreshBuffer: time.Second}}
	a.cache.cur = &link.Snapshot{}
	if _, ok := a.refreshAt(start, start); ok {
		t.Error("refreshAt: ok = true for a token without expiry")
	}
}
