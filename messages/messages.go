// Package messages holds the token actor's protocol and the events the
// manager publishes.
//
// Users of their own protoactor system talk to the token actor (spawned
// from actor.NewProps) with [Get], [Invalidate] and [Refreshed]. Events are
// delivered to subscribers (transport.RoundTripper.Subscribe) and published
// on the actor system's EventStream.
//
// All types here are plain values, safe to copy and to share between
// goroutines once built.
package messages

import (
	"fmt"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
)

// Get asks the token actor for a valid token. Send it with
// RequestFuture (or Request from another actor); the reply is a
// *[TokenResult], never a TokenResult value.
//
// A cached, unexpired token is returned at once. Otherwise the actor starts
// a fetch (at most one at a time) and replies when it ends: with the new
// token, or at once with the error if that fetch fails. While the actor
// backs off after a failed fetch, Get is answered with the last error
// rather than starting another fetch. A Get sent without a sender (Send
// rather than Request) is ignored.
//
// Identity addresses one identity through an owner of many
// (actor.NewOwnerProps), which forwards the Get to that identity's token
// actor, starting it if needed; the reply comes from there. A token actor
// of its own (actor.NewProps) serves one identity and ignores the field.
type Get struct {
	Identity string
}

// TokenResult is the token actor's reply to [Get], sent as *TokenResult.
type TokenResult struct {
	// Token is the cached token; zero when Err is set.
	Token tokenmanager.Token
	// ExpiresAt is when Token expires on the actor's clock; zero when the
	// token has no expiry.
	ExpiresAt time.Time
	// Err is why no token could be had: a *tokenmanager.FetchError, or
	// tokenmanager.ErrClosed when the actor stopped first.
	Err error
}

// Invalidate tells the token actor a token was rejected. The cached token
// is dropped only if it is still AccessToken, so a late rejection of an
// old token cannot throw away a newer one; an empty AccessToken drops
// whatever is cached. No reply follows. The next [Get] fetches anew.
// Identity addresses one identity through an owner, as for [Get]; an
// owner ignores an Invalidate for an identity it does not hold.
type Invalidate struct {
	AccessToken string
	Identity    string
}

// Refreshed is the outcome of a token fetch. The actor delivers each of
// its own fetches to itself; other code may send a Refreshed too, to push
// a token obtained elsewhere (its lifetime counts from its arrival) or to
// report a failed fetch (Err set). No reply follows. Identity addresses
// one identity through an owner, as for [Get].
type Refreshed struct {
	Token    tokenmanager.Token
	Err      error
	Identity string
}

// Event is implemented by every event the manager publishes. Name returns
// a stable snake_case name for logs and metrics.
//
// Every event of this package also has a method GetIdentity, which
// returns the identity it concerns ("" for none); [IdentityOf] reads it
// from any Event. It is not part of this interface, so that event types
// of other code that predate it still implement Event.
type Event interface {
	Name() string
}

// RefreshReason says why a token was fetched.
type RefreshReason string

// The reasons a [TokenRefreshed] may give.
const (
	// ReasonColdStart: no token had been cached yet.
	ReasonColdStart RefreshReason = "cold_start"
	// ReasonEarlyRefresh: the cached token was close to expiry.
	ReasonEarlyRefresh RefreshReason = "early_refresh"
	// ReasonExpired: the cached token had expired before anyone refreshed it.
	ReasonExpired RefreshReason = "expired"
	// ReasonInvalidated: the cached token was invalidated (a response
	// status in RefreshOnStatus, or an Invalidate message).
	ReasonInvalidated RefreshReason = "invalidated"
	// ReasonPushed: the token arrived in a Refreshed message from other code.
	ReasonPushed RefreshReason = "pushed"
)

// TokenRefreshed is published by the token actor when a new token is
// cached.
type TokenRefreshed struct {
	// Identity is the identity the event concerns; empty for a manager
	// of a single identity.
	Identity string
	// ExpiresAt is when the token expires on the actor's clock; zero when
	// it has no expiry.
	ExpiresAt time.Time
	// Reason says why the token was fetched.
	Reason RefreshReason
	// FetchDuration is how long the provider took (zero for a pushed
	// token).
	FetchDuration time.Duration
	// Fingerprint identifies the token without revealing it
	// (tokenmanager.Fingerprint).
	Fingerprint string
	// Message describes the refresh; it holds the access token only when
	// Settings.AddTokenToLogs is set.
	Message string
}

// AuthFailed is published by the RoundTripper when a response status is in
// Settings.RefreshOnStatus, and by package grpcauth when a call or stream
// is answered codes.Unauthenticated.
type AuthFailed struct {
	// Identity is the identity the event concerns; empty for a manager
	// of a single identity.
	Identity string
	// Status is the HTTP status, or for gRPC the status code
	// (16, Unauthenticated).
	Status int
	// Host is the request's host (no path or query, which may hold
	// secrets), or for gRPC the call's full method.
	Host string
	// Fingerprint identifies the rejected token without revealing it.
	Fingerprint string
	// Message describes the failure; it holds the access token only when
	// Settings.AddTokenToLogs is set.
	Message string
}

// TokenRequestFailed is published by the token actor when a fetch fails.
type TokenRequestFailed struct {
	// Identity is the identity the event concerns; empty for a manager
	// of a single identity.
	Identity string
	// Err is a *tokenmanager.FetchError wrapping the provider's error.
	Err error
	// Permanent says the failure will not go away by retrying
	// (tokenmanager.IsPermanent): everyone waiting for a token was failed
	// at once, and the next fetch waits for the next request after the
	// backoff.
	Permanent bool
	// ConsecutiveFailures counts failed fetches since the last success,
	// this one included.
	ConsecutiveFailures int
	// RetryIn is the backoff before the next fetch; zero when none is
	// scheduled because nobody needs a token.
	RetryIn time.Duration
}

// PushRejected is published by the token actor when a [Refreshed] message
// from other code carries a token it cannot use (an empty access token,
// say). The cached token, if any, stays; the push does not count as a
// failed fetch.
type PushRejected struct {
	// Identity is the identity the event concerns; empty for a manager
	// of a single identity.
	Identity string
	// Err says why the token was refused; it never holds the token.
	Err error
}

// Closed is published once when a manager closes: by a RoundTripper's
// Close, and by the token actor (or owner of many) when it stops; not
// when an owner passivates one identity (see [IdentityPassivated]). It is the last event its
// publisher sends; observers holding state about the manager (gauges, say)
// drop it.
type Closed struct{}

// RecoveryTried is published by the RoundTripper when a request is resent
// with a fresh token.
type RecoveryTried struct {
	// Identity is the identity the event concerns; empty for a manager
	// of a single identity.
	Identity string
	// Attempt counts resends of this request, from 1.
	Attempt int
	// Fingerprint identifies the fresh token without revealing it.
	Fingerprint string
	// Message describes the try; it holds the new access token only when
	// Settings.AddTokenToLogs is set.
	Message string
}

// TokenTryThresholdReached is published by the token actor when
// consecutive failed fetches reach a multiple of
// Settings.TokenTryThreshold (10, 20, ... by default).
type TokenTryThresholdReached struct {
	// Identity is the identity the event concerns; empty for a manager
	// of a single identity.
	Identity    string
	FailedTries int
}

// RecoveryAborted is published by the RoundTripper when a request is
// given back with a status in Settings.RefreshOnStatus: its recovery tries
// are used up, none was allowed, or its body cannot be replayed.
type RecoveryAborted struct {
	// Identity is the identity the event concerns; empty for a manager
	// of a single identity.
	Identity string
	// Attempts is how many times this request was resent.
	Attempts int
	// Status is the status given back to the caller.
	Status int
	// Message says why recovery stopped.
	Message string
}

// DPoPNonceRetried is published by the RoundTripper when a request is
// resent because its server asked for a DPoP nonce (RFC 9449 §9): a 401
// with a DPoP challenge error="use_dpop_nonce" and a DPoP-Nonce header.
// The request is resent with the same token and a proof carrying the
// nonce; the token is not invalidated and no recovery try is used.
// A request is resent this way at most twice.
type DPoPNonceRetried struct {
	// Identity is the identity the event concerns; empty for a manager
	// of a single identity.
	Identity string
	// Host is the host of the request.
	Host string
	// Attempt counts this request's nonce resends, from 1.
	Attempt int
}

// Name implements [Event].
func (DPoPNonceRetried) Name() string { return "dpop_nonce_retried" }

// GetIdentity returns e.Identity.
func (e DPoPNonceRetried) GetIdentity() string { return e.Identity }

// Name implements [Event].
func (TokenRefreshed) Name() string { return "token_refreshed" }

// Name implements [Event].
func (AuthFailed) Name() string { return "auth_failed" }

// Name implements [Event].
func (TokenRequestFailed) Name() string { return "token_request_failed" }

// Name implements [Event].
func (RecoveryTried) Name() string { return "recovery_tried" }

// Name implements [Event].
func (TokenTryThresholdReached) Name() string { return "token_try_threshold_reached" }

// Name implements [Event].
func (RecoveryAborted) Name() string { return "recovery_aborted" }

// Name implements [Event].
func (PushRejected) Name() string { return "push_rejected" }

// Name implements [Event].
func (Closed) Name() string { return "closed" }

// IdentityPassivated is published by an owner of many identities when it
// stops the token actor of an identity that was idle, or evicted it to
// stay within its cap. Its token is forgotten; the next request for the
// identity starts a new actor and fetches anew.
type IdentityPassivated struct {
	Identity string
	// Evicted is true when the identity was stopped to stay within
	// OwnerSettings.MaxIdentities, false when it was idle for
	// OwnerSettings.IdleTimeout.
	Evicted bool
}

// Name implements [Event].
func (IdentityPassivated) Name() string { return "identity_passivated" }

// SettingsFailed is published by an owner of many identities when
// OwnerSettings.SettingsFor fails for an identity: it returned an error,
// panicked, or gave settings that fail Settings.Validate. The identity's
// waiting requests and Gets fail with Err; until RetryIn has passed, its
// new ones fail with Err too, without calling SettingsFor again.
type SettingsFailed struct {
	Identity string
	// Err is why there are no settings; it names the identity.
	Err error
	// ConsecutiveFailures counts the failed SettingsFor calls for the
	// identity since its settings last came, this one included.
	ConsecutiveFailures int
	// RetryIn is how long SettingsFor is not called again for the
	// identity (0.5s, doubling up to 30s, with jitter).
	RetryIn time.Duration
}

// Name implements [Event].
func (SettingsFailed) Name() string { return "settings_failed" }

// RefreshTokenRotated is published by a refresh-token provider
// (providers.RefreshToken) when the authorization server answered a
// refresh with a new refresh token and the store holds it durably, before
// the new access token is handed to the manager. It never holds either
// token.
type RefreshTokenRotated struct {
	Identity string
	// Version is the stored record's version after the rotation; it
	// grows by one with every write.
	Version uint64
	// KeyID names the encryption key that sealed the new refresh token.
	KeyID string
}

// Name implements [Event].
func (RefreshTokenRotated) Name() string { return "refresh_token_rotated" }

// RefreshTokenRevoked is published by a refresh-token provider when the
// identity's refresh token is gone for good: the authorization server
// answered invalid_grant (revoked, expired, or reused after a rotation),
// or nothing is stored for the identity. The user must sign in again
// (tokenmanager.ErrReauthRequired); the refresh token is not sent again.
type RefreshTokenRevoked struct {
	Identity string
	// Err says why; it never holds a token.
	Err error
}

// Name implements [Event].
func (RefreshTokenRevoked) Name() string { return "refresh_token_revoked" }

// GetIdentity returns e.Identity.
func (e RefreshTokenRotated) GetIdentity() string { return e.Identity }

// GetIdentity returns e.Identity.
func (e RefreshTokenRevoked) GetIdentity() string { return e.Identity }

// SignedIn is published by a sign-in helper (providers.AuthCode,
// providers.DeviceFlow) once the user's first refresh token is sealed and
// stored for the identity. It never holds a token.
type SignedIn struct {
	Identity string
	// Flow is "authorization_code" or "device_code".
	Flow string
	// Version is the stored entry's version after the write.
	Version uint64
	// KeyID names the encryption key that sealed the refresh token.
	KeyID string
}

// Name implements [Event].
func (SignedIn) Name() string { return "signed_in" }

// GetIdentity returns e.Identity.
func (e SignedIn) GetIdentity() string { return e.Identity }

// DeviceCodeIssued is published by providers.DeviceFlow when the server
// answered the device authorization request (RFC 8628 §3.2): show
// UserCode and VerificationURI to the user. It holds the user code, which
// the user is shown anyway, and never the device code.
type DeviceCodeIssued struct {
	Identity string
	// UserCode is the code the user enters at VerificationURI.
	UserCode string
	// VerificationURI is where the user goes; VerificationURIComplete,
	// when the server gave one, carries the user code already.
	VerificationURI         string
	VerificationURIComplete string
	// ExpiresAt is when the codes expire, on the flow's clock.
	ExpiresAt time.Time
	// Interval is how long the flow waits between polls.
	Interval time.Duration
}

// Name implements [Event].
func (DeviceCodeIssued) Name() string { return "device_code_issued" }

// GetIdentity returns e.Identity.
func (e DeviceCodeIssued) GetIdentity() string { return e.Identity }

// DevicePollPending is published by providers.DeviceFlow after each poll
// of the token endpoint that did not end the flow: the user has not
// answered yet (authorization_pending), the server asked to poll slower
// (slow_down), or the poll failed in a way worth trying again. It never
// holds the device code.
type DevicePollPending struct {
	Identity string
	// Attempt counts the polls, from 1.
	Attempt int
	// Reason is the server's error code ("authorization_pending",
	// "slow_down") or "retry" for a temporary failure.
	Reason string
	// Interval is the wait before the next poll: 5 seconds longer after
	// each slow_down (RFC 8628 §3.5).
	Interval time.Duration
}

// Name implements [Event].
func (DevicePollPending) Name() string { return "device_poll_pending" }

// GetIdentity returns e.Identity.
func (e DevicePollPending) GetIdentity() string { return e.Identity }

// ClusterFallback is published by an owner of many identities whose
// settings come from tokengrain.SettingsFor, each time the cluster did not
// serve one of its identities' fetches and the member fetched from the
// identity provider itself (the fetch's outcome follows as a
// [TokenRefreshed] or [TokenRequestFailed]). It is the event beside
// tokengrain's Options.OnFallback callback, which is still called.
type ClusterFallback struct {
	Identity string
	// Reason says why: "unreachable" (no answer within the ask bound),
	// "insecure" (the cluster's remote may not carry tokens: nothing was
	// asked), "refused" (the grain refused, e.g. other settings) or
	// "short_lived" (the grain's token had under a second left, twice);
	// tokengrain's Reason constants.
	Reason string
	// Err is the cluster's error or the grain's refusal. It never holds a
	// token or a secret.
	Err error
}

// Name implements [Event].
func (ClusterFallback) Name() string { return "cluster_fallback" }

// IdentityOf returns the identity ev concerns: its GetIdentity, for an
// event that has one (every event of this package does, and an event type
// of other code may). It is empty for the events of a single-identity
// manager, for [Closed], and for an event without GetIdentity.
func IdentityOf(ev Event) string {
	if e, ok := ev.(interface{ GetIdentity() string }); ok {
		return e.GetIdentity()
	}
	return ""
}

// GetIdentity returns e.Identity. The events carry their identity as a
// field, so the method that lets code read it without a type switch
// ([IdentityOf]) cannot share its name.
func (e TokenRefreshed) GetIdentity() string { return e.Identity }

// GetIdentity returns e.Identity.
func (e AuthFailed) GetIdentity() string { return e.Identity }

// GetIdentity returns e.Identity.
func (e TokenRequestFailed) GetIdentity() string { return e.Identity }

// GetIdentity returns e.Identity.
func (e RecoveryTried) GetIdentity() string { return e.Identity }

// GetIdentity returns e.Identity.
func (e TokenTryThresholdReached) GetIdentity() string { return e.Identity }

// GetIdentity returns e.Identity.
func (e RecoveryAborted) GetIdentity() string { return e.Identity }

// GetIdentity returns e.Identity.
func (e PushRejected) GetIdentity() string { return e.Identity }

// GetIdentity returns e.Identity.
func (e IdentityPassivated) GetIdentity() string { return e.Identity }

// GetIdentity returns e.Identity.
func (e SettingsFailed) GetIdentity() string { return e.Identity }

// GetIdentity returns e.Identity.
func (e ClusterFallback) GetIdentity() string { return e.Identity }

// GetIdentity returns "": a manager closes as a whole.
func (Closed) GetIdentity() string { return "" }

// The protocol messages carry tokens, so none of them is ever printed in
// full: String and GoString show a fingerprint instead, and protoactor
// does not log them when they end up as dead letters (a late reply to a
// future that timed out, say).

// String describes r without its access token.
func (r TokenResult) String() string {
	return fmt.Sprintf("TokenResult{Token:%v ExpiresAt:%v Err:%v}", r.Token, r.ExpiresAt, r.Err)
}

// GoString is like String.
func (r TokenResult) GoString() string { return r.String() }

// String describes i by the fingerprint of its token.
func (i Invalidate) String() string {
	return fmt.Sprintf("Invalidate{AccessToken:%s Identity:%q}", fingerprint(i.AccessToken), i.Identity)
}

// GoString is like String.
func (i Invalidate) GoString() string { return i.String() }

// String describes r without its access token.
func (r Refreshed) String() string {
	return fmt.Sprintf("Refreshed{Token:%v Err:%v Identity:%q}", r.Token, r.Err, r.Identity)
}

// GoString is like String.
func (r Refreshed) GoString() string { return r.String() }

func fingerprint(tok string) string {
	if tok == "" {
		return `""`
	}
	return "sha256:" + tokenmanager.Fingerprint(tok)
}

// IgnoreDeadLetterLogging keeps protoactor from logging the message.
func (Invalidate) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging keeps protoactor from logging the message.
func (Refreshed) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging keeps protoactor from logging the message.
func (*TokenResult) IgnoreDeadLetterLogging() {}
