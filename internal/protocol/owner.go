package protocol

import (
	"context"

	"github.com/go-tokenmanager/tokenmanager/internal/link"
)

// AttachOwner asks an owner for its *Owner; send it with RequestFuture.
type AttachOwner struct{}

// IgnoreDeadLetterLogging keeps protoactor from logging the message.
func (*AttachOwner) IgnoreDeadLetterLogging() {}

// Resolve asks an owner for identity's handle, starting to host it if
// needed. Reply must have room for one answer; the owner forgets the
// request once Ctx ends.
type Resolve struct {
	Ctx      context.Context
	Identity string
	Reply    chan Resolved
	// Fetch says the request goes on to ask for the identity's token:
	// an owner starting the identity may fetch its first token with
	// SettingsFor and answer once it is cached. A facade that may refuse
	// the identity once it sees its settings (gRPC, a DPoP identity)
	// leaves it false.
	Fetch bool
}

// Resolved answers a [Resolve]: the handle, or why there is none.
type Resolved struct {
	H   *link.Handle
	Err error
}

// IgnoreDeadLetterLogging keeps protoactor from logging the message.
func (*Resolve) IgnoreDeadLetterLogging() {}
