package request

import (
	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// Side says which of the settings' callbacks a subscriber calls.
type Side int

const (
	// ActorSide: OnTokenRefresh, OnTokenRequestFail, OnTokenTryThreshold.
	ActorSide Side = iota
	// RequestSide: OnAuthFail, OnRecoveryTry, OnRecoveryAbort.
	RequestSide
	// BothSides: all six.
	BothSides
)

// WithoutActorCallbacks returns s without the actor-side callbacks, for an
// actor whose RoundTripper calls all six from one goroutine.
func WithoutActorCallbacks(s tokenmanager.Settings) tokenmanager.Settings {
	s.OnTokenRefresh, s.OnTokenRequestFail, s.OnTokenTryThreshold = nil, nil, nil
	return s
}

// IsRequestSide reports whether the RoundTripper (not the actor) publishes ev.
func IsRequestSide(ev messages.Event) bool {
	switch ev.(type) {
	case messages.AuthFailed, messages.RecoveryTried, messages.RecoveryAborted, messages.DPoPNonceRetried:
		return true
	}
	return false
}

// Callbacks returns an event subscriber that calls the settings' callbacks
// of one side, or nil when none of them is set.
func Callbacks(s tokenmanager.Settings, side Side) func(messages.Event) {
	actorSide := side != RequestSide &&
		(s.OnTokenRefresh != nil || s.OnTokenRequestFail != nil || s.OnTokenTryThreshold != nil)
	requestSide := side != ActorSide &&
		(s.OnAuthFail != nil || s.OnRecoveryTry != nil || s.OnRecoveryAbort != nil)
	if !actorSide && !requestSide {
		return nil
	}
	return func(ev messages.Event) {
		switch e := ev.(type) {
		case messages.TokenRefreshed:
			if actorSide && s.OnTokenRefresh != nil {
				s.OnTokenRefresh(e.Message)
			}
		case messages.TokenRequestFailed:
			if actorSide && s.OnTokenRequestFail != nil {
				s.OnTokenRequestFail(e.Err)
			}
		case messages.TokenTryThresholdReached:
			if actorSide && s.OnTokenTryThreshold != nil {
				s.OnTokenTryThreshold(e.FailedTries)
			}
		case messages.AuthFailed:
			if requestSide && s.OnAuthFail != nil {
				s.OnAuthFail(e.Message)
			}
		case messages.RecoveryTried:
			if requestSide && s.OnRecoveryTry != nil {
				s.OnRecoveryTry(e.Message)
			}
		case messages.RecoveryAborted:
			if requestSide && s.OnRecoveryAbort != nil {
				s.OnRecoveryAbort(e.Message)
			}
		}
	}
}
