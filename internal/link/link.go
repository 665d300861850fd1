// Package link holds the handle a token's host publishes its snapshot on: the actor writes it, internal/core and transports read it.
package link

import (
	"sync/atomic"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/eventbus"
	"github.com/go-tokenmanager/tokenmanager/internal/request"
)

// Snapshot is an immutable view of the cached token. The actor replaces
// it, never changes it (asked aside).
//
// What a request reads on a cached token comes first, within one cache
// line.
type Snapshot struct {
	// ExpiresAt is zero when the token has no expiry.
	ExpiresAt time.Time
	// RefreshAt, when set, is when a reader should ask the actor for an
	// early refresh (protocol.RefreshNow): an actor that refreshes on use arms no
	// timer. Zero for an actor with a refresh timer of its own.
	// It is UnixNano on the handle's Clock, so that the snapshot fits
	// in fewer bytes; 0: none.
	RefreshAt int64
	// Header is the header value for Token under the handle's Request
	// (its Formatter), made by the owner for its identities; empty
	// otherwise, or when the Formatter panicked.
	Header string
	Token  tokenmanager.Token
	// Gen is the actor's generation when the snapshot was published.
	Gen   uint64
	asked atomic.Bool // RefreshNow was sent for this snapshot
}

// FreshAt reports whether the snapshot's token is still valid at now.
func (s *Snapshot) FreshAt(now time.Time) bool {
	return s != nil && (s.ExpiresAt.IsZero() || now.Before(s.ExpiresAt))
}

// AskRefresh reports whether the reader, at now, should send the actor a
// protocol.RefreshNow: the snapshot's refresh time has come and nobody asked yet.
// It returns true once per snapshot.
func (s *Snapshot) AskRefresh(now time.Time) bool {
	return s.RefreshAt != 0 && now.UnixNano() >= s.RefreshAt && !s.asked.Load() && s.asked.CompareAndSwap(false, true)
}

// Handle is what a token's host (a token actor, or an owner for one of
// its identities) shares with the transports attached to it. It
// is safe for concurrent use by multiple goroutines.
//
// The fields a request reads on a cached token come first, so that they
// share a cache line: with thousands of identities, each request's
// identity is usually cold.
type Handle struct {
	snapshot atomic.Pointer[Snapshot]
	lastUse  atomic.Int64 // UnixNano on Clock, coarse (see Touch); valid once used is set
	used     atomic.Bool  // Touch was called: lastUse holds a time
	streak   atomic.Bool  // fresh tokens are being rejected on first use
	// passivated: the identity was passivated (see SetPassivated).
	passivated atomic.Bool
	// Clock is the token's clock, against which snapshots expire.
	Clock clock.Clock
	// PID is the host's, where messages about the token go: the owner's
	// for its identities (set before the handle is published).
	PID *proto.PID
	// Request is the request side of the identity's settings, for an
	// owner's identities; nil for a token actor of its own, whose
	// RoundTrippers bring their own.
	Request *request.Request

	lastErr   atomic.Pointer[error]
	holdUntil atomic.Int64 // UnixNano on Clock; 0: not holding
	// Bus carries the actor's events (TokenRefreshed, TokenRequestFailed,
	// TokenTryThresholdReached). An owner's identities share the owner's.
	Bus *eventbus.Bus
	// Done is closed when the host stops: the token actor, or the owner
	// (shared by its identities; a passivated identity's waits are
	// answered with protocol.ErrPassivated instead).
	Done chan struct{}
	// Identity is the identity served; empty for a token actor of its
	// own (actor.NewProps).
	Identity string
	// State is the request side's per-identity state, for an owner's
	// identities.
	State request.State
}

// NewHandle returns a handle whose bus queues buffer events per subscriber.
func NewHandle(buffer int, clk clock.Clock) *Handle {
	return &Handle{Bus: eventbus.New(buffer), Done: make(chan struct{}), Clock: clk}
}

// touchGrain is how coarsely a Handle records its last use: a request
// writes the shared word at most once per grain, so concurrent requests
// do not fight over its cache line.
const touchGrain = int64(100 * time.Millisecond)

// Touch records that the identity was used at now. Any instant is a use,
// the Unix epoch (where a mock clock starts) included: "never used" is
// a flag of its own, not a time.
func (h *Handle) Touch(now time.Time) {
	n := now.UnixNano()
	if n-h.lastUse.Load() >= touchGrain || !h.used.Load() {
		h.lastUse.Store(n)
		h.used.Store(true)
	}
}

// LastUse returns when the identity was last used, to within 100ms;
// zero if never.
func (h *Handle) LastUse() time.Time {
	if !h.used.Load() {
		return time.Time{}
	}
	return time.Unix(0, h.lastUse.Load())
}

// SetPassivated marks the handle's actor as stopping because it was idle:
// readers that find Done closed ask the owner again rather than fail.
func (h *Handle) SetPassivated() { h.passivated.Store(true) }

// Passivated reports whether the actor stopped (or is stopping) because
// it was idle, not because its owner closed.
func (h *Handle) Passivated() bool { return h.passivated.Load() }

// Snapshot returns the current snapshot, nil when nothing is cached.
func (h *Handle) Snapshot() *Snapshot { return h.snapshot.Load() }

// Store publishes s (nil: nothing cached). Only the actor calls it.
func (h *Handle) Store(s *Snapshot) { h.snapshot.Store(s) }

// Drop withdraws the snapshot if it still holds token, so that readers stop
// using a token a response just rejected, before the actor has handled the
// Invalidate that follows. It never withdraws a newer snapshot.
func (h *Handle) Drop(token string) {
	if s := h.snapshot.Load(); s != nil && s.Token.AccessToken == token {
		h.snapshot.CompareAndSwap(s, nil)
	}
}

// SetHoldUntil records until when requests should not recover from a
// rejection because new tokens keep being rejected (zero: no hold). Only
// the actor calls it.
func (h *Handle) SetHoldUntil(t time.Time) {
	if t.IsZero() {
		h.holdUntil.Store(0)
		return
	}
	h.holdUntil.Store(t.UnixNano())
}

// Holding reports whether, at now, requests should not recover from a
// rejection because new tokens keep being rejected.
func (h *Handle) Holding(now time.Time) bool {
	u := h.holdUntil.Load()
	return u != 0 && now.UnixNano() < u
}

// SetStreak records whether fresh tokens are being rejected on first use,
// the run that may end in a hold. Only the actor calls it.
func (h *Handle) SetStreak(on bool) { h.streak.Store(on) }

// Streak reports whether fresh tokens are being rejected on first use; a
// RoundTripper then tells the actor (with protocol.Served) when a token works.
func (h *Handle) Streak() bool { return h.streak.Load() }

// LastError returns the last failed fetch's error, nil after a success.
func (h *Handle) LastError() error {
	if p := h.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// SetLastError records err (nil clears). Only the actor calls it.
func (h *Handle) SetLastError(err error) {
	if err == nil {
		h.lastErr.Store(nil)
		return
	}
	h.lastErr.Store(&err)
}
