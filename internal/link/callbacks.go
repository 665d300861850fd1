package link

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
)

// IsRequestSide reports whether the RoundTripper (not the actor) publishes ev.
func IsRequestSide(ev messages.Event) bool {
	switch ev.(type) {
	case messages.AuthFailed, messages.RecoveryTried, messages.RecoveryAborted:
		return true
	}
	return false
}

// Callbacks returns an event subscriber that calls the settings' callbacks
// of one side, or nil when none of them is set.
func Callbacks(s tokenmanager.Settings, side Side) func(messages.Event) {
	if side == ActorSide {
		if s.OnTokenRefresh == nil && s.OnTokenRequestFail == nil && s.OnTokenTryThreshold == nil {
			return nil
		}
		return func(ev messages.Event) {
			switch e := ev.(type) {
			case messages.TokenRefreshed:
				if s.OnTokenRefresh != nil {
					s.OnTokenRefresh(e.Message)
				}
			case messages.TokenRequestFailed:
				if s.OnTokenRequestFail != nil {
					s.OnTokenRequestFail(e.Err)
				}
			case messages.TokenTryThresholdReached:
				if s.OnTokenTryThreshold != nil {
					s.OnTokenTryThreshold(e.FailedTries)
				}
			}
		}
	}
	if s.OnAuthFail == nil && s.OnRecoveryTry == nil && s.OnRecoveryAbort == nil {
		return nil
	}
	return func(ev messages.Event) {
		switch e := ev.(type) {
		case messages.AuthFailed:
			if s.OnAuthFail != nil {
				s.OnAuthFail(e.Message)
			}
		case messages.RecoveryTried:
			if s.OnRecoveryTry != nil {
				s.OnRecoveryTry(e.Message)
			}
		case messages.RecoveryAborted:
			if s.OnRecoveryAbort != nil {
				s.OnRecoveryAbort(e.Message)
			}
		}
	}
}
