package core

import (
	"context"
	"fmt"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// Call is one request or RPC whose token was rejected and that the core
// may send again with a fresh one. The facade keeps the last answer.
type Call interface {
	// Where names the call in events: the request's host, or the gRPC
	// method.
	Where() string
	// Unreplayable says why the call can never be sent again (a body
	// without GetBody, say); "" when it can.
	Unreplayable() string
	// Prepare readies one more attempt (a fresh copy of the body); an
	// error stops recovery with the answer in hand.
	Prepare() error
	// Discard releases the answer in hand before it is replaced.
	Discard()
	// Resend sends the call again with the header value of token. It
	// reports the answer's status and whether it rejected the token
	// again; err is a failure to obtain any answer.
	Resend(token, value string) (status int, rejected bool, err error)
}

// Recover runs the recovery loop for call, whose answer with status
// rejected the token used: it invalidates that token (only if it is still
// the cached one), waits for a fresh one and resends the call, at most
// b's MaxTries times, publishing AuthFailed, RecoveryTried and
// RecoveryAborted as it goes. While the actor holds because new tokens
// keep being rejected, a first rejection is given back at once, the token
// kept. Recover returns the error of the last Resend, if any; otherwise
// the call holds the answer to give back.
func (c *Core) Recover(ctx context.Context, b Binding, call Call, used string, status int) error {
	where, maxTries := call.Where(), b.Req.MaxTries
	for attempt := 1; ; attempt++ {
		c.Bus.PublishWith(messages.AuthFailed{
			Identity:    b.H.Identity,
			Status:      status,
			Host:        where,
			Fingerprint: tokenmanager.Fingerprint(used),
			Message:     withTokenf(b, used, "request to %s got status %d", where, status),
		}, b.Req.Callbacks)
		if !c.reject(b, used, attempt == 1) {
			c.Bus.PublishWith(messages.RecoveryAborted{
				Identity: b.H.Identity,
				Status:   status,
				Message:  fmt.Sprintf("recovery aborted for request to %s with status %d: new tokens keep being rejected, so the manager is backing off", where, status),
			}, b.Req.Callbacks)
			return nil
		}
		why := call.Unreplayable()
		switch {
		case why != "":
		case attempt > maxTries && maxTries == 0:
			why = "no recovery tries are allowed"
		case attempt > maxTries:
			why = fmt.Sprintf("all %d recovery tries were used", maxTries)
		}
		var value string
		if why == "" {
			iss, err := c.Token(ctx, &b, used)
			if err == nil {
				value, err = c.HeaderValue(b, iss.Token.AccessToken)
			}
			if err == nil {
				err = call.Prepare()
			}
			if err != nil {
				// Keep the answer we have rather than trading it for an
				// error: the call obtained an answer.
				why = fmt.Sprintf("no fresh token or body: %v", err)
			} else {
				used = iss.Token.AccessToken
			}
		}
		if why != "" {
			c.Bus.PublishWith(messages.RecoveryAborted{
				Identity: b.H.Identity,
				Attempts: attempt - 1,
				Status:   status,
				Message:  fmt.Sprintf("recovery aborted for request to %s with status %d: %s", where, status, why),
			}, b.Req.Callbacks)
			return nil
		}
		call.Discard()
		c.Bus.PublishWith(messages.RecoveryTried{
			Identity:    b.H.Identity,
			Attempt:     attempt,
			Fingerprint: tokenmanager.Fingerprint(used),
			Message:     withTokenf(b, used, "resending request to %s with a fresh token (recovery try %d of %d)", where, attempt, maxTries),
		}, b.Req.Callbacks)
		var rejected bool
		var err error
		status, rejected, err = call.Resend(used, value)
		if err != nil || !rejected {
			if err == nil {
				c.Served(b)
			}
			return err
		}
	}
}

// reject handles a rejection of token used: unless the actor holds (new
// tokens keep being rejected) and this is the call's first rejection, it
// withdraws the token from the fast path at once and has the actor drop
// it if it is still the cached one, and reports true. A later rejection
// (first is false) is of a token fetched for this recovery and rejected
// on first use, which the actor counts towards its hold.
func (c *Core) reject(b Binding, used string, first bool) bool {
	if first && b.H.Holding(b.H.Clock.Now()) {
		return false // keep the token: the token endpoint is spared
	}
	b.H.Drop(used)
	if first {
		c.Root.Send(b.PID, messages.Invalidate{Identity: b.H.Identity, AccessToken: used})
	} else {
		c.Root.Send(b.PID, &protocol.Rejected{H: b.H, AccessToken: used, MaxTries: b.Req.MaxTries})
	}
	return true
}

// Invalidate reports that token was rejected outside any call the core
// runs (the token API, a gRPC stream). While the actor holds because new
// tokens keep being rejected, it keeps the token and reports false: the
// caller should give its answer back rather than try again. Otherwise it
// withdraws the token from the fast path, has the actor drop it if it is
// still the cached one, and reports true. A token rejected soon after it
// was cached counts towards the hold (the actor judges "soon"), since the
// core cannot tell a fresh token's first use here. where and status, when
// set, publish AuthFailed.
func (c *Core) Invalidate(b Binding, token, where string, status int) bool {
	if where != "" {
		c.Bus.PublishWith(messages.AuthFailed{
			Identity:    b.H.Identity,
			Status:      status,
			Host:        where,
			Fingerprint: tokenmanager.Fingerprint(token),
			Message:     withTokenf(b, token, "request to %s got status %d", where, status),
		}, b.Req.Callbacks)
	}
	if b.H.Holding(b.H.Clock.Now()) {
		return false
	}
	b.H.Drop(token)
	c.Root.Send(b.PID, &protocol.Rejected{H: b.H, AccessToken: token, MaxTries: b.Req.MaxTries})
	return true
}

// FromNow returns iss's token with ExpiresIn counted from now on the
// clock: the whole seconds it has left, at least 1 while it is valid;
// 0 for a token without expiry.
func FromNow(iss Issued, now time.Time) tokenmanager.Token {
	tok := iss.Token
	tok.ExpiresIn = 0
	if !iss.ExpiresAt.IsZero() {
		tok.ExpiresIn = max(int64(iss.ExpiresAt.Sub(now)/time.Second), 1)
	}
	return tok
}

// withTokenf formats a message and appends token when AddTokenToLogs is
// set.
func withTokenf(b Binding, token, format string, args ...any) string {
	msg := fmt.Sprintf(format, args...)
	if b.Req.WithToken {
		msg += ": " + token
	}
	return msg
}
