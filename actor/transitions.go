package actor

import (
	"errors"
	"fmt"
	"slices"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/backoff"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// The transitions of a token's state (see the table in doc.go). Each
// takes the time on the host's clock and returns what the host must do.

// fetchDone is a provider call's outcome, sent back to the host.
type fetchDone struct {
	id       uint32
	token    tokenmanager.Token
	err      error
	duration time.Duration
	// lifetime is the token's lifetime as its provider told it more
	// precisely than ExpiresIn (protocol.SetLifetime); 0 if it did not.
	lifetime time.Duration
}

// usable returns when d's token expires (zero: never), for a fetch
// started at start and done at now, or why the token cannot be cached:
// the fetch failed, the token is malformed, or it expired on arrival.
// It is the state's rule for a fetch's outcome (see fetched), before
// the state's own reasons (a token rejected while it was fetched).
func (d *fetchDone) usable(start, now time.Time) (time.Time, error) {
	if d.err != nil {
		return time.Time{}, d.err
	}
	if err := tokenmanager.CheckToken(d.token); err != nil {
		return time.Time{}, err
	}
	return d.expiry(start, now)
}

// expiry returns when d's well-formed token expires (zero: never), or
// ErrExpiredOnArrival.
func (d *fetchDone) expiry(start, now time.Time) (time.Time, error) {
	life, ok := d.token.Lifetime()
	if !ok {
		return time.Time{}, nil
	}
	if d.lifetime > 0 {
		life = d.lifetime
	}
	expires := start.Add(life)
	if !now.Before(expires) {
		return time.Time{}, fmt.Errorf("%w (expires_in %d, fetch took %v)",
			tokenmanager.ErrExpiredOnArrival, d.token.ExpiresIn, now.Sub(start))
	}
	return expires, nil
}

func (st *state) result() *messages.TokenResult {
	return &messages.TokenResult{Token: st.cache.cur.Token, ExpiresAt: st.cache.cur.ExpiresAt}
}

// get handles a messages.Get from sender: the cached token, the last
// failure while backing off, or a place among the askers of a fetch.
func (st *state) get(now time.Time, sender *proto.PID) (e effects) {
	st.h.Touch(now)
	if st.cache.cur.FreshAt(now) {
		e.reply = st.result()
		if st.cache.cur.AskRefresh(now) {
			e.merge(st.refreshDue(now, st.cache.gen))
		}
		return e
	}
	if err := st.lastErr(); !st.fetch.running && err != nil && now.Before(st.notBefore()) {
		// Backing off: an actor asker hears the last failure at once.
		e.reply = &messages.TokenResult{Err: err}
		return e
	}
	wl := st.waitList()
	wl.askers = append(wl.askers, sender)
	return st.ensureFetch(now)
}

// wait handles a request's protocol.Wait: the cached token, the last
// permanent failure while backing off, or a place among the waits.
func (st *state) wait(now time.Time, w *protocol.Wait) (e effects) {
	if w.Ctx.Err() != nil {
		return e
	}
	if st.cache.cur.FreshAt(now) {
		e.reply = st.result()
		return e
	}
	if err := st.lastErr(); !st.fetch.running && now.Before(st.notBefore()) && tokenmanager.IsPermanent(err) {
		// The last fetch failed for good and the backoff is not over:
		// answer with that failure rather than hold the request.
		e.reply = &messages.TokenResult{Err: err}
		return e
	}
	wl := st.waitList()
	if n := len(wl.waits); n >= 64 && n&(n-1) == 0 {
		st.pruneWaits() // amortised: forget requests that gave up
		wl = st.waitList()
	}
	wl.waits = append(wl.waits, w)
	return st.ensureFetch(now)
}

func (st *state) pruneWaits() {
	wl := st.waiters
	if wl == nil {
		return
	}
	live := wl.waits[:0]
	for _, w := range wl.waits {
		if w.Ctx.Err() == nil {
			live = append(live, w)
		}
	}
	clear(wl.waits[len(live):])
	wl.waits = live
	if len(live) == 0 {
		wl.waits = nil
		if len(wl.askers) == 0 {
			st.waiters = nil // an idle state holds no buffer
		}
	}
}

// waitList returns the waiters, allocated on first use.
func (st *state) waitList() *waitersState {
	if st.waiters == nil {
		st.waiters = &waitersState{}
	}
	return st.waiters
}

// handOver returns the askers, and the waits too when all, forgetting
// them.
func (st *state) handOver(all bool) (askers []*proto.PID, waits []*protocol.Wait) {
	wl := st.waiters
	if wl == nil {
		return nil, nil
	}
	askers, wl.askers = wl.askers, nil
	if all {
		waits, wl.waits = wl.waits, nil
	}
	if len(wl.waits) == 0 {
		st.waiters = nil
	}
	return askers, waits
}

// lastErr returns the last failed fetch's error while failures last.
func (st *state) lastErr() error {
	if st.backoff == nil {
		return nil
	}
	return st.backoff.lastErr
}

// notBefore returns when the backoff ends; zero without failures.
func (st *state) notBefore() time.Time {
	if st.backoff == nil {
		return time.Time{}
	}
	return st.backoff.notBefore
}

// needed reports whether anyone needs a fetch: an asker, a live wait, or
// a still-valid token whose early refresh is due.
func (st *state) needed(now time.Time) bool {
	st.pruneWaits()
	return st.waiters != nil || (st.cache.refreshDue && st.cache.cur.FreshAt(now))
}

// ensureFetch starts a fetch now, or arms the retry for when the backoff
// ends.
func (st *state) ensureFetch(now time.Time) (e effects) {
	if st.fetch.running {
		return e
	}
	if nb := st.notBefore(); now.Before(nb) {
		if !st.fetch.retryArmed {
			e = st.armRetry(nb.Sub(now))
		}
		return e
	}
	return st.startFetch(now)
}

func (st *state) armRetry(d time.Duration) (e effects) {
	st.fetch.retrySeq++
	st.fetch.retryArmed = true
	e.arm, e.armIn, e.armSeq = retryTimer, d, uint64(st.fetch.retrySeq)
	return e
}

func (st *state) startFetch(now time.Time) (e effects) {
	if st.fetch.retryArmed {
		st.fetch.retryArmed = false
		e.stopRetry = true
	}
	st.fetch.running = true
	st.fetch.id++
	st.fetch.start = now
	switch {
	case st.cache.gen == 0: // nothing was ever cached (every change bumps gen)
		st.fetch.why = reasonColdStart
	case st.cache.cur.FreshAt(now):
		st.fetch.why = reasonEarlyRefresh
	case st.cache.cur != nil:
		st.fetch.why = reasonExpired
	default: // dropped by an invalidation
		st.fetch.why = reasonInvalidated
	}
	e.fetch = true
	return e
}

// begin starts, as of start, a fetch its host has run already (an
// owner's first fetch for an identity, run with its SettingsFor call),
// and returns its id: the host hands its outcome to fetched. Only for a
// state that never fetched, so that it is a cold start.
func (st *state) begin(start time.Time) uint32 {
	st.startFetch(start) // nothing to stop or arm on a new state; the fetch ran
	return st.fetch.id
}

// fetched handles the outcome of the fetch m.id: cache the token, or
// count the failure. A stale outcome (another id) is ignored.
func (st *state) fetched(now time.Time, m *fetchDone) (e effects) {
	if !st.fetch.running || m.id != st.fetch.id {
		return e
	}
	st.fetch.running = false
	st.fetch.cancel = nil // its goroutine has called it
	err := m.err
	if err == nil {
		err = tokenmanager.CheckToken(m.token)
	}
	rejected := false
	if d := st.drops; d != nil {
		rejected = err == nil && slices.Contains(d.rejected, m.token.AccessToken)
		d.rejected = nil
		if d.last == "" {
			st.drops = nil
		}
	}
	if rejected {
		// The fetch brought back a token rejected while it ran: never
		// cache it again. Fetch anew if needed.
		if st.needed(now) {
			e = st.startFetch(now)
		}
		return e
	}
	var expires time.Time
	if err == nil {
		expires, err = m.expiry(st.fetch.start, now)
	}
	if err != nil {
		var pe *tokenmanager.PanicError
		if errors.As(err, &pe) {
			e.panicked = pe
		}
		e.merge(st.fail(now, err))
		return e
	}
	return st.store(now, st.fetch.start, m.token, expires, st.fetch.why.reason(), m.duration)
}

// store caches tok, fetched from start on, answers everyone waiting and
// arms the early refresh.
func (st *state) store(now, start time.Time, tok tokenmanager.Token, expires time.Time,
	why messages.RefreshReason, took time.Duration) (e effects) {
	st.cache.gen++
	cur := &link.Snapshot{Token: tok, ExpiresAt: expires, Gen: st.cache.gen}
	if st.h.Request != nil && st.h.Request.Bearer && !tokenmanager.IsDPoP(tok) {
		// The default formatter only: a user's Formatter runs on request
		// goroutines, never on the host's.
		cur.Header = tokenmanager.BearerFormatter(tok.AccessToken)
	}
	st.cache.cur = cur
	if st.cache.refreshArmed {
		st.cache.refreshArmed = false
		e.stopRefresh = true
	}
	if at, ok := st.refreshAt(now, start); ok {
		if st.pol.refresh == refreshOnUse {
			cur.RefreshAt = at.UnixNano() // readers ask when they use it past then
		} else {
			st.cache.refreshArmed = true
			e.arm, e.armIn, e.armSeq = refreshTimer, at.Sub(now), st.cache.gen
		}
	}
	st.h.Store(cur)
	st.cache.cachedAt = now.UnixNano()
	st.cache.refreshDue = false
	if d := st.drops; d != nil {
		d.last = ""
		if len(d.rejected) == 0 { // none, unless pushed while fetching
			st.drops = nil
		}
	}
	st.backoff = nil
	st.h.SetLastError(nil)
	if st.fetch.retryArmed {
		st.fetch.retryArmed = false
		e.stopRetry = true
	}

	e.answer = st.result()
	e.askers, e.waits = st.handOver(true)

	msg := "token refreshed (" + string(why) + ")"
	if !expires.IsZero() {
		msg += ", expires in " + expires.Sub(now).Round(time.Second).String()
	}
	if st.s.AddTokenToLogs {
		msg += ": " + tok.AccessToken
	}
	e.emit(messages.TokenRefreshed{
		Identity:      st.h.Identity,
		ExpiresAt:     expires,
		Reason:        why,
		FetchDuration: took,
		Fingerprint:   tokenmanager.Fingerprint(tok.AccessToken),
		Message:       msg,
	})
	return e
}

// refreshAt returns when the current token, fetched from start on, is
// refreshed early: at expiry - RefreshBuffer, but never sooner than half
// its lifetime after start, so a buffer as long as the token's life (or
// longer) cannot make the actor fetch far more often than the token
// needs:
//
//	at = start + max(lifetime - RefreshBuffer, lifetime/2)
//
// When that time has already passed (its fetch took more than half the
// lifetime), the token is refreshed at half of what is left of it. ok is
// false for a token without expiry.
func (st *state) refreshAt(now, start time.Time) (at time.Time, ok bool) {
	exp := st.cache.cur.ExpiresAt
	if exp.IsZero() {
		return time.Time{}, false
	}
	life := exp.Sub(start)
	at = start.Add(max(life-st.s.RefreshBuffer, life/2))
	if !at.After(now) {
		at = now.Add(exp.Sub(now) / 2)
	}
	return at, true
}

// refreshDue handles the early refresh of generation gen coming due: by
// the host's timer, or asked by a reader (protocol.RefreshNow).
func (st *state) refreshDue(now time.Time, gen uint64) (e effects) {
	if gen != st.cache.gen {
		return e
	}
	st.cache.refreshArmed = false
	st.cache.refreshDue = true
	st.endStreak() // the token lived to its refresh
	return st.ensureFetch(now)
}

// retryDue handles the retry timer seq firing: fetch if someone still
// needs a token.
func (st *state) retryDue(now time.Time, seq uint64) (e effects) {
	if seq != uint64(st.fetch.retrySeq) {
		return e
	}
	st.fetch.retryArmed = false
	if st.fetch.running {
		return e
	}
	if st.needed(now) {
		e = st.startFetch(now)
	}
	return e
}

// fail counts a failed fetch (or a pushed failure): backoff, answers and
// events.
func (st *state) fail(now time.Time, err error) (e effects) {
	if st.backoff == nil {
		st.backoff = &backoffState{}
	}
	b := st.backoff
	b.failures++
	fe := &tokenmanager.FetchError{Attempt: b.failures, Err: err}
	b.lastErr = fe
	st.h.SetLastError(fe)
	delay := backoff.Backoff(b.failures, st.s.RetryBaseDelay, st.s.RetryMaxDelay)
	if d := min(retryAfter(err), tokenmanager.MaxRetryAfter); d > delay {
		delay = d
	}
	b.notBefore = now.Add(delay)

	// Waiting cannot help after a permanent failure: fail every request
	// now. The next one after the backoff tries again (see wait).
	permanent := tokenmanager.IsPermanent(err)
	e.answer = &messages.TokenResult{Err: fe}
	e.askers, e.waits = st.handOver(permanent)

	var retryIn time.Duration
	if st.needed(now) {
		r := st.armRetry(delay)
		e.arm, e.armIn, e.armSeq = r.arm, r.armIn, r.armSeq
		retryIn = delay
	}
	e.emit(messages.TokenRequestFailed{Identity: st.h.Identity, Err: fe, Permanent: permanent,
		ConsecutiveFailures: b.failures, RetryIn: retryIn})
	if b.failures%st.s.TokenTryThreshold == 0 {
		e.emit(messages.TokenTryThresholdReached{Identity: st.h.Identity, FailedTries: b.failures})
	}
	return e
}

// invalidate drops the cached token if it is still token (any, if
// empty). tries >= 0 says the token was fetched for a recovery and
// rejected on its first use by a RoundTripper allowing tries recoveries
// (protocol.Rejected); tries < 0 is a plain Invalidate.
func (st *state) invalidate(now time.Time, token string, tries int) (e effects) {
	cur := st.cache.cur
	if cur == nil || (token != "" && token != cur.Token.AccessToken) {
		return e
	}
	cachedAt := time.Unix(0, st.cache.cachedAt)
	window := st.s.RetryMaxDelay
	if !cur.ExpiresAt.IsZero() {
		window = min(window, cur.ExpiresAt.Sub(cachedAt)/2)
	}
	if now.Sub(cachedAt) >= window {
		// This token served for a while: any streak is over.
		st.endStreak()
	} else if tries >= 0 {
		// Fetched for a recovery and rejected on first use; tries is the
		// sending RoundTripper's own MaxRecoveryTries.
		st.holdIfRejectedTooOften(now, tries)
	}
	if st.drops == nil {
		st.drops = &dropState{}
	}
	if st.fetch.running {
		st.drops.rejected = append(st.drops.rejected, cur.Token.AccessToken)
	}
	st.drops.last = cur.Token.AccessToken
	st.cache.gen++
	st.cache.cur = nil
	st.h.Store(nil)
	st.cache.refreshDue = false
	if st.cache.refreshArmed {
		st.cache.refreshArmed = false
		e.stopRefresh = true
	}
	return e
}

// holdIfRejectedTooOften protects the token endpoint from an API that
// rejects every new token (a wrong audience, say), where each request
// would otherwise cost MaxRecoveryTries + 1 fetches. It counts tokens
// fetched for a recovery and rejected on first use within RetryMaxDelay
// of being cached (or half their lifetime, if shorter). After a streak of
// them far longer than any recovery needs (four times the sender's
// MaxRecoveryTries + 1, at least 8), it declares a hold for a backoff that
// grows with the streak: a request first rejected during the hold is given
// back its response at once, without recovery and without dropping the
// token, so the hold costs the endpoint no fetch (requests already
// recovering finish their tries). Any token serving a request
// successfully (protocol.Served), a token rejected after serving longer than
// the window, or one living to its early refresh ends the streak and the
// hold: tokens that work, however briefly, never lock requests out.
func (st *state) holdIfRejectedTooOften(now time.Time, tries int) {
	if st.hold == nil {
		st.hold = &holdState{}
	}
	st.hold.quickRejects++
	st.h.SetStreak(true)
	limit := max(4*(tries+1), 8)
	if st.hold.quickRejects < limit {
		return
	}
	d := backoff.Backoff(st.hold.quickRejects-limit+1, st.s.RetryBaseDelay, st.s.RetryMaxDelay)
	st.h.SetHoldUntil(now.Add(d))
}

// endStreak forgets the tokens rejected on first use and lifts any hold:
// the transition of protocol.Served.
func (st *state) endStreak() {
	if st.hold == nil {
		return
	}
	st.hold = nil
	st.h.SetStreak(false)
	st.h.SetHoldUntil(time.Time{})
}

// pushed handles a messages.Refreshed: a token (or a failure) obtained
// elsewhere.
func (st *state) pushed(now time.Time, m messages.Refreshed) (e effects) {
	if m.Err != nil {
		return st.fail(now, m.Err)
	}
	if err := tokenmanager.CheckToken(m.Token); err != nil {
		// Not the provider's failure: keep what is cached, count nothing.
		e.emit(messages.PushRejected{Identity: st.h.Identity, Err: fmt.Errorf("tokenmanager: pushed token refused: %w", err)})
		return e
	}
	var expires time.Time
	if life, ok := m.Token.Lifetime(); ok {
		expires = now.Add(life)
	}
	return st.store(now, now, m.Token, expires, messages.ReasonPushed, 0)
}

// idle reports whether the state may be passivated: its policy allows
// it, no fetch runs, nobody waits, and it was not used after cutoff.
func (st *state) idle(cutoff time.Time) bool {
	st.pruneWaits()
	return st.pol.passivate && !st.fetch.running && st.waiters == nil && !st.h.LastUse().After(cutoff)
}

// stop ends the state: the running fetch is cancelled, timers stopped,
// everyone waiting answered with res, and the snapshot withdrawn.
func (st *state) stop(res *messages.TokenResult) (e effects) {
	if st.fetch.cancel != nil {
		st.fetch.cancel()
		st.fetch.cancel = nil
	}
	e.stopRefresh, e.stopRetry = st.cache.refreshArmed, st.fetch.retryArmed
	st.cache.refreshArmed, st.fetch.retryArmed = false, false
	e.answer = res
	e.askers, e.waits = st.handOver(true)
	st.h.Store(nil)
	return e
}
