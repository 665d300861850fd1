// Package backoff holds the retry backoff and the settings backoff (SettingsOf, SettingsFailure) of the actor, owners and grains.
package backoff

import (
	"math/rand/v2"
	"time"
)

// MinRetryDelay keeps a failing call from being made in a loop, whatever
// the settings say.
const MinRetryDelay = 10 * time.Millisecond

// Backoff returns the delay after the n-th consecutive failure: base
// doubling per failure, capped at limit, with jitter drawn from its upper
// half so that many callers do not retry in step. It is at least
// MinRetryDelay.
func Backoff(n int, base, limit time.Duration) time.Duration {
	d := limit
	if n < 32 {
		if e := base << (n - 1); e > 0 && e < limit {
			d = e
		}
	}
	if half := d / 2; half > 0 {
		d = half + rand.N(half+1)
	}
	return max(d, MinRetryDelay)
}

// The settings backoff: 0.5s doubling to 30s (with jitter), between
// failed SettingsFor calls for one identity.
const (
	SettingsRetryBase = 500 * time.Millisecond
	SettingsRetryMax  = 30 * time.Second
)

// SettingsFailure is one identity's run of failed SettingsFor calls, as
// an owner and a cluster grain keep it: SettingsFor is not called again
// for the identity before NotBefore, so a broken entry is not called in
// a loop, and a fixed one is picked up after the backoff. The zero value
// holds no failure. Times are on the caller's clock.
type SettingsFailure struct {
	// Err is the last failure; nil when none.
	Err error
	// N counts failures in a row.
	N int
	// NotBefore is when SettingsFor may be called again.
	NotBefore time.Time
}

// Fail records err, failed at now, and returns how long until SettingsFor
// may be called again.
func (f *SettingsFailure) Fail(now time.Time, err error) (retryIn time.Duration) {
	f.N++
	f.Err = err
	retryIn = Backoff(f.N, SettingsRetryBase, SettingsRetryMax)
	f.NotBefore = now.Add(retryIn)
	return retryIn
}

// Blocking returns the last failure while, at now, its backoff lasts;
// nil when SettingsFor may be called.
func (f *SettingsFailure) Blocking(now time.Time) error {
	if f == nil || f.Err == nil || !now.Before(f.NotBefore) {
		return nil
	}
	return f.Err
}
