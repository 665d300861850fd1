package core

import (
	"context"
	"fmt"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// Call is one request or RPC that the core may send again: its token
// was rejected, or the server asked for a DPoP nonce. The facade keeps
// the last answer.
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
	// Resend sends the call again with token and its header value (a
	// DPoP-bound token's proof is made anew by the facade). It reports
	// the answer's status and verdict; err is a failure to obtain any
	// answer.
	Resend(token, value string) (status int, v Verdict, err error)
}

// Verdict is what an answer says of the token a call carried.
type Verdict uint8

const (
	// Accepted: the answer is the call's, whatever its status.
	Accepted Verdict = iota
	// Rejected: the status is in RefreshOnStatus; the token is
	// invalidated and the call resent with a fresh one.
	Rejected
	// NonceNeeded: the server asked for a DPoP nonce (a 401 with a DPoP
	// challenge error="use_dpop_nonce" and a DPoP-Nonce header, which the
	// facade has recorded). The call is resent with the same token and a
	// proof that carries the nonce.
	NonceNeeded
)

// MaxNonceResends bounds how often one call is resent because its server
// asked for a DPoP nonce, apart from MaxRecoveryTries: a server hands out
// a nonce with its challenge, so one resend answers it; the second
// covers a nonce that rotated in between.
const MaxNonceResends = 2

// Recover runs the recovery loop for call, whose answer with status and
// verdict v (Rejected or NonceNeeded) came back for token used, sent as
// value. A rejection invalidates that token (only if it is still the
// cached one), waits for a fresh one and resends the call, at most b's
// MaxTries times, publishing AuthFailed, RecoveryTried and
// RecoveryAborted as it goes. While the actor holds because new tokens
// keep being rejected, a first rejection is given back at once, the token
// kept. A nonce request resends the call with the same token, at most
// MaxNonceResends times, publishing DPoPNonceRetried; it invalidates
// nothing and uses no recovery try. Recover returns the error of the last
// Resend, if any; otherwise the call holds the answer to give back.
func (c *Core) Recover(ctx context.Context, b Binding, call Call, used, value string, status int, v Verdict) error {
	where := call.Where()
	attempt, nonces := 0, 0 // recovery tries and nonce resends made
	for {
		switch v {
		case Accepted:
			c.Served(b)
			return nil
		case NonceNeeded:
			why := call.Unreplayable()
			if why == "" && nonces >= MaxNonceResends {
				why = fmt.Sprintf("the server asked for a DPoP nonce again after %d resends with one", nonces)
			}
			if why == "" {
				if err := call.Prepare(); err != nil {
					why = fmt.Sprintf("no body: %v", err)
				}
			}
			if why != "" {
				c.Bus.PublishWith(messages.RecoveryAborted{
					Identity: b.H.Identity,
					Attempts: attempt + nonces,
					Status:   status,
					Message:  fmt.Sprintf("recovery aborted for request to %s with status %d: %s", where, status, why),
				}, b.Req.Callbacks)
				return nil
			}
			call.Discard()
			nonces++
			c.Bus.PublishWith(messages.DPoPNonceRetried{
				Identity: b.H.Identity,
				Host:     where,
				Attempt:  nonces,
			}, b.Req.Callbacks)
		default: // Rejected
			attempt++
			var ok bool
			if used, value, ok = c.renew(ctx, b, call, used, status, attempt, nonces); !ok {
				return nil
			}
		}
		var err error
		status, v, err = call.Resend(used, value)
		if err != nil {
			return err
		}
	}
}

// renew handles the rejection of token used by the call's answer with
// status: it publishes AuthFailed, has the token dropped, and gets a
// fresh token and its header value for recovery try attempt, publishing
// RecoveryTried; or it publishes RecoveryAborted and reports false,
// leaving the call's answer in hand.
func (c *Core) renew(ctx context.Context, b Binding, call Call, used string, status, attempt, nonces int) (token, value string, ok bool) {
	where, maxTries := call.Where(), b.Req.MaxTries
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
			Attempts: nonces,
			Status:   status,
			Message:  fmt.Sprintf("recovery aborted for request to %s with status %d: new tokens keep being rejected, so the manager is backing off", where, status),
		}, b.Req.Callbacks)
		return "", "", false
	}
	why := call.Unreplayable()
	switch {
	case why != "":
	case attempt > maxTries && maxTries == 0:
		why = "no recovery tries are allowed"
	case attempt > maxTries:
		why = fmt.Sprintf("all %d recovery tries were used", maxTries)
	}
	if why == "" {
		iss, err := c.Token(ctx, &b, used)
		if err == nil {
			value, err = c.HeaderValue(b, iss.Token)
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
			Attempts: attempt - 1 + nonces,
			Status:   status,
			Message:  fmt.Sprintf("recovery aborted for request to %s with status %d: %s", where, status, why),
		}, b.Req.Callbacks)
		return "", "", false
	}
	call.Discard()
	c.Bus.PublishWith(messages.RecoveryTried{
		Identity:    b.H.Identity,
		Attempt:     attempt,
		Fingerprint: tokenmanager.Fingerprint(used),
		Message:     withTokenf(b, used, "resending request to %s with a fresh token (recovery try %d of %d)", where, attempt, maxTries),
	}, b.Req.Callbacks)
	return used, value, true
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
