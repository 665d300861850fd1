package observability

import (
	"context"
	"log/slog"

	"github.com/go-tokenmanager/tokenmanager/messages"
)

// Attribute keys SlogHandler uses. They are stable: dashboards and alerts
// may rely on them.
const (
	KeyEvent               = "event"                // the event's Name(), e.g. "token_refreshed"
	KeyIdentity            = "identity"             // the identity the event concerns; absent when empty (a single-identity manager, or the whole manager)
	KeyReason              = "reason"               // why a token was fetched (messages.RefreshReason); for cluster_fallback, why the cluster did not serve it
	KeyExpiresAt           = "expires_at"           // when the new token expires; absent when it has no expiry
	KeyFetchDuration       = "fetch_duration"       // how long the provider took
	KeyFingerprint         = "fingerprint"          // tokenmanager.Fingerprint of the token concerned
	KeyStatus              = "status"               // HTTP status of the rejected response
	KeyHost                = "host"                 // host of the rejected request
	KeyAttempt             = "attempt"              // recovery try number, from 1
	KeyAttempts            = "attempts"             // recovery tries used before giving up
	KeyConsecutiveFailures = "consecutive_failures" // failed fetches since the last success (for settings_failed, failed SettingsFor calls)
	KeyRetryIn             = "retry_in"             // backoff before the next fetch (or SettingsFor call); 0 when none is scheduled
	KeyPermanent           = "permanent"            // whether a failed fetch will not go away by retrying; always present for token_request_failed
	KeyFailedTries         = "failed_tries"         // consecutive failed fetches at a threshold
	KeyError               = "error"                // why a fetch failed, why a pushed token was refused, why an identity's settings failed, or the cluster's error at a fallback
	KeyDetail              = "detail"               // the event's Message (holds the token only with AddTokenToLogs)
	KeyEvicted             = "evicted"              // whether a passivated identity was evicted to stay within the cap (false: it was idle)
	KeyVersion             = "version"              // the stored refresh token's version after a rotation
	KeyKeyID               = "key_id"               // the id of the key that sealed a rotated refresh token
)

// SlogHandler returns an event subscriber, for the Subscribe of
// transport.RoundTripper or transport.MultiRoundTripper, that writes each event to logger as one record with the
// attributes listed with [KeyEvent] and its siblings ([Attrs]) at the
// level [Level] gives. If logger is nil, slog.Default() is used.
//
// Records never hold an access token, except in the detail attribute
// (the event's Message) when Settings.AddTokenToLogs is set. The returned
// func is safe for concurrent use as far as logger's handler is (every
// slog handler in the standard library is).
func SlogHandler(logger *slog.Logger) func(messages.Event) {
	return func(ev messages.Event) {
		if ev == nil {
			return
		}
		l := logger
		if l == nil {
			l = slog.Default()
		}
		ctx := context.Background()
		level := Level(ev)
		if !l.Enabled(ctx, level) {
			return
		}
		l.LogAttrs(ctx, level, logMessage(ev), Attrs(ev)...)
	}
}

// Level returns the level SlogHandler logs ev at: Info for a refreshed
// token, a passivated identity (idle or evicted: either is routine, and
// the identity starts afresh on its next request) and a closed manager;
// Warn for a rejected token, a failed fetch, a resent request (each is
// recovered from on its own), a refused pushed token and a cluster
// fallback (the member fetched on its own); Error when
// fetches keep failing (a token try threshold), a request is given back
// rejected (recovery aborted) or an identity's settings cannot be had
// (settings failed: its requests fail until they can). A rotated refresh
// token is Info; a revoked one, whose user must sign in again, is Warn.
// Unknown events are Info.
func Level(ev messages.Event) slog.Level {
	switch ev.(type) {
	case messages.AuthFailed, messages.TokenRequestFailed, messages.RecoveryTried, messages.PushRejected, messages.ClusterFallback,
		messages.RefreshTokenRevoked:
		return slog.LevelWarn
	case messages.TokenTryThresholdReached, messages.RecoveryAborted, messages.SettingsFailed:
		return slog.LevelError
	}
	return slog.LevelInfo
}

// logMessage is the record's message for ev.
func logMessage(ev messages.Event) string {
	switch ev.(type) {
	case messages.TokenRefreshed:
		return "token refreshed"
	case messages.AuthFailed:
		return "token rejected"
	case messages.TokenRequestFailed:
		return "token request failed"
	case messages.RecoveryTried:
		return "request resent with a fresh token"
	case messages.TokenTryThresholdReached:
		return "token requests keep failing"
	case messages.RecoveryAborted:
		return "recovery aborted"
	case messages.PushRejected:
		return "pushed token rejected"
	case messages.DPoPNonceRetried:
		return "request resent with a DPoP nonce"
	case messages.IdentityPassivated:
		return "identity passivated"
	case messages.SettingsFailed:
		return "identity settings failed"
	case messages.ClusterFallback:
		return "cluster fallback: fetched directly"
	case messages.Closed:
		return "token manager closed"
	case messages.RefreshTokenRotated:
		return "refresh token rotated"
	case messages.RefreshTokenRevoked:
		return "refresh token revoked; the user must sign in again"
	case messages.SignedIn:
		return "user signed in; refresh token stored"
	case messages.DeviceCodeIssued:
		return "device code issued; waiting for the user"
	case messages.DevicePollPending:
		return "device sign-in pending"
	}
	return "token manager event"
}

// Attrs returns the attributes SlogHandler logs for ev, [KeyEvent] first,
// then [KeyIdentity] when the event names an identity (events of a
// manager of many identities, transport.MultiRoundTripper or
// actor.NewOwnerProps, do; those of a single-identity manager, and
// [messages.Closed], do not, so their records are as before). An event
// type this package does not know gets only [KeyEvent].
func Attrs(ev messages.Event) []slog.Attr {
	attrs := []slog.Attr{slog.String(KeyEvent, ev.Name())}
	if id := messages.IdentityOf(ev); id != "" {
		attrs = append(attrs, slog.String(KeyIdentity, id))
	}
	detail := func(msg string) {
		if msg != "" {
			attrs = append(attrs, slog.String(KeyDetail, msg))
		}
	}
	switch e := ev.(type) {
	case messages.TokenRefreshed:
		attrs = append(attrs, slog.String(KeyReason, string(e.Reason)))
		if !e.ExpiresAt.IsZero() {
			attrs = append(attrs, slog.Time(KeyExpiresAt, e.ExpiresAt))
		}
		attrs = append(attrs,
			slog.Duration(KeyFetchDuration, e.FetchDuration),
			slog.String(KeyFingerprint, e.Fingerprint))
		detail(e.Message)
	case messages.AuthFailed:
		attrs = append(attrs,
			slog.Int(KeyStatus, e.Status),
			slog.String(KeyHost, e.Host),
			slog.String(KeyFingerprint, e.Fingerprint))
		detail(e.Message)
	case messages.TokenRequestFailed:
		if e.Err != nil {
			attrs = append(attrs, slog.String(KeyError, e.Err.Error()))
		}
		attrs = append(attrs,
			slog.Bool(KeyPermanent, e.Permanent),
			slog.Int(KeyConsecutiveFailures, e.ConsecutiveFailures),
			slog.Duration(KeyRetryIn, e.RetryIn))
	case messages.DPoPNonceRetried:
		attrs = append(attrs,
			slog.String(KeyHost, e.Host),
			slog.Int(KeyAttempt, e.Attempt))
	case messages.RecoveryTried:
		attrs = append(attrs,
			slog.Int(KeyAttempt, e.Attempt),
			slog.String(KeyFingerprint, e.Fingerprint))
		detail(e.Message)
	case messages.TokenTryThresholdReached:
		attrs = append(attrs, slog.Int(KeyFailedTries, e.FailedTries))
	case messages.RecoveryAborted:
		attrs = append(attrs,
			slog.Int(KeyAttempts, e.Attempts),
			slog.Int(KeyStatus, e.Status))
		detail(e.Message)
	case messages.PushRejected:
		if e.Err != nil {
			attrs = append(attrs, slog.String(KeyError, e.Err.Error()))
		}
	case messages.IdentityPassivated:
		attrs = append(attrs, slog.Bool(KeyEvicted, e.Evicted))
	case messages.SettingsFailed:
		if e.Err != nil {
			attrs = append(attrs, slog.String(KeyError, e.Err.Error()))
		}
		attrs = append(attrs,
			slog.Int(KeyConsecutiveFailures, e.ConsecutiveFailures),
			slog.Duration(KeyRetryIn, e.RetryIn))
	case messages.ClusterFallback:
		attrs = append(attrs, slog.String(KeyReason, e.Reason))
		if e.Err != nil {
			attrs = append(attrs, slog.String(KeyError, e.Err.Error()))
		}
	case messages.RefreshTokenRotated:
		attrs = append(attrs, slog.Uint64(KeyVersion, e.Version), slog.String(KeyKeyID, e.KeyID))
	case messages.RefreshTokenRevoked:
		if e.Err != nil {
			attrs = append(attrs, slog.String(KeyError, e.Err.Error()))
		}
	case messages.SignedIn:
		attrs = append(attrs, slog.String(KeyReason, e.Flow), slog.Uint64(KeyVersion, e.Version), slog.String(KeyKeyID, e.KeyID))
	case messages.DeviceCodeIssued:
		// The user code is shown to the user anyway, but logs need not
		// keep it: the identity and expiry say enough.
		attrs = append(attrs, slog.Time(KeyExpiresAt, e.ExpiresAt), slog.Duration(KeyRetryIn, e.Interval))
	case messages.DevicePollPending:
		attrs = append(attrs, slog.String(KeyReason, e.Reason), slog.Int(KeyAttempt, e.Attempt), slog.Duration(KeyRetryIn, e.Interval))
	case messages.Closed:
		// KeyEvent alone.
	}
	return attrs
}
