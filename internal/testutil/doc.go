// Package testutil holds the test fakes and helpers that the packages'
// tests share: a token provider, an in-memory API backend that rejects
// revoked tokens, RoundTripper and actor-system constructors that clean
// up after the test, an event recorder, and polling helpers. Only tests
// import it.
//
// Polling helpers wait for the effects of other goroutines (a counter, a
// recorded event), never for a timer: timers run on a mock clock that the
// test advances (AdvanceUntil).
package testutil
