package link

import (
	"sync/atomic"

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
	// Live counts the identities hosted. Only the owner
	// writes it.
	Live atomic.Int64
}

// Lookup returns the handle of identity while it is hosted, or nil.
func (o *Owner) Lookup(identity string) *Handle { return o.Index.Lookup(identity) }

// Index finds the handles of an owner's identities.
type Index interface {
	// Lookup returns identity's handle while it is hosted, or nil.
	Lookup(identity string) *Handle
}
