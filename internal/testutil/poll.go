package testutil

import (
	"testing"
	"time"

	"github.com/benbjohnson/clock"
)

// Patience bounds every wait for something that should happen promptly.
const Patience = 5 * time.Second

// Eventually polls cond every millisecond until it holds, failing the
// test once Patience has passed.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Patience, what, cond)
}

// Within polls cond every millisecond until it holds, failing the test
// once d of real time has passed.
func Within(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Stays checks that cond keeps holding for a short while: it shows that
// something does not happen (a fetch that must not start).
func Stays(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(100 * time.Millisecond)
	for time.Now().Before(deadline) {
		if !cond() {
			t.Fatalf("%s no longer holds", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// AdvanceUntil advances mock by step, again and again, until cond holds,
// giving the code under test up to 20ms of real time after each step to
// react. cond is checked once before the first step. It fails the test
// after maxSteps steps, or when maxSteps is 0 once Patience has passed.
// cond is not called again once it holds.
func AdvanceUntil(t testing.TB, mock *clock.Mock, step time.Duration, maxSteps int, what string, cond func() bool) {
	t.Helper()
	if cond() {
		return
	}
	deadline := time.Now().Add(Patience)
	for i := 1; maxSteps == 0 || i <= maxSteps; i++ {
		if maxSteps == 0 && time.Now().After(deadline) {
			t.Fatalf("timed out advancing the clock by %v until %s", step, what)
		}
		mock.Add(step)
		for wait := time.Now().Add(20 * time.Millisecond); time.Now().Before(wait); {
			if cond() {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	t.Fatalf("%s: not reached after advancing the clock %d x %v", what, maxSteps, step)
}
