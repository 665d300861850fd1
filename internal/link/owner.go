package link

import (
	"sync/atomic"
	"time"

	"github.com/go-tokenmanager/tokenmanager"

	"github.com/go-tokenmanager/tokenmanager/internal/eventbus"
)

// Owner is what an owner of many identities shares with the transports
// attached to it. It is safe for concurrent use by multiple goroutines.
type Owner struct {
	// Index finds the handle of each hosted identity (the owner's
	// Registry). Only
	// the owner writes it; transports read it on every request.
	Index Index
	// Bus carries the events of every identity.
	Bus *eventbus.Bus
	// Done is closed when the owner has stopped.
	Done chan struct{}
	// Live counts the identities hosted, and those whose first token a
	// request has been handed (Start) while the owner hosts them. Only
	// the owner and its workers write it.
	Live atomic.Int64
	// Start starts identity, which the owner neither hosts nor is
	// starting, for a request that wants its token, and returns where
	// the request gets it: SettingsFor and the first fetch run at once
	// on one of the owner's workers, which reports them to the owner and
	// then hands the request the token (a First with a nil H when there
	// is none: the request then asks the owner, as others do). It returns
	// nil when the request should ask the owner: the identity is hosted
	// or being started, its settings are backing off, the owner has
	// stopped, or is behind (64 identities started so are not handled
	// yet). Safe for concurrent use.
	Start func(identity string) <-chan First
}

// First is the outcome of an identity's first fetch, handed to the request
// that started it (Owner.Start) while the owner caches it: the request
// sends it without waiting for the owner. H is the identity's handle,
// nil when the fetch brought no usable token.
type First struct {
	H *Handle
	// Token expires at ExpiresAt on H's clock (zero: never).
	Token     tokenmanager.Token
	ExpiresAt time.Time
}

// Lookup returns the handle of identity while it is hosted, or nil.
func (o *Owner) Lookup(identity string) *Handle { return o.Index.Lookup(identity) }

// Index finds the handles of an owner's identities.
type Index interface {
	// Lookup returns identity's handle while it is hosted, or nil.
	Lookup(identity string) *Handle
}
