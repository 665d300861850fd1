// Package protocol holds the private messages between transports, internal/core, the token actor, owners and grains.
package protocol

import (
	"context"
	"errors"

	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// ErrPassivated ends a wait whose identity was passivated for being idle:
// the waiter asks the owner again.
var ErrPassivated = errors.New("tokenmanager: identity passivated")

// Attach asks the actor for its Handle; send it with RequestFuture, and
// the reply is the *Handle.
type Attach struct{}

// IgnoreDeadLetterLogging keeps protoactor from logging the message.
func (*Attach) IgnoreDeadLetterLogging() {}

// Rejected is messages.Invalidate for a token that was fetched for a
// recovery and rejected on its first use: the sign of an API that rejects
// every new token, which the actor answers by backing off.
type Rejected struct {
	// H is the handle the token came from: an owner finds the identity
	// by it (a token actor of its own ignores it).
	H           *link.Handle
	AccessToken string
	MaxTries    int // the sender's MaxRecoveryTries (>= 0)
}

// IgnoreDeadLetterLogging keeps protoactor from logging the message.
func (*Rejected) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging keeps protoactor from logging the message.
func (*Wait) IgnoreDeadLetterLogging() {}

// RefreshNow asks an actor that refreshes on use to refresh the token of
// generation Gen early (see [link.Snapshot.AskRefresh]).
type RefreshNow struct {
	H   *link.Handle // as for [Rejected]
	Gen uint64
}

// IgnoreDeadLetterLogging keeps protoactor from logging the message.
func (*RefreshNow) IgnoreDeadLetterLogging() {}

// Served tells the actor that a token was accepted by the API: new tokens
// are not all rejected, so any streak of rejections, and the hold it may
// have caused, ends. RoundTrippers send it only while [link.Handle.Streak]
// holds, so it costs nothing in normal operation.
type Served struct {
	H *link.Handle // as for [Rejected]
}

// IgnoreDeadLetterLogging keeps protoactor from logging the message.
func (*Served) IgnoreDeadLetterLogging() {}

// Wait asks the actor for a valid token on behalf of a request. Unlike
// messages.Get, a Wait outlives failed fetches: the actor keeps retrying
// (with backoff) until Ctx ends, then forgets it. Reply must have room for
// one result so the actor never blocks.
type Wait struct {
	H     *link.Handle // as for [Rejected]
	Ctx   context.Context
	Reply chan *messages.TokenResult
}
