package messages_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

func TestProtocolMessages_neverPrintTheToken(t *testing.T) {
	const secret = "s3cr3t-token"
	tok := tokenmanager.Token{AccessToken: secret, ExpiresIn: 60}
	values := []any{
		messages.Invalidate{AccessToken: secret},
		&messages.Invalidate{AccessToken: secret},
		messages.Refreshed{Token: tok},
		messages.TokenResult{Token: tok, ExpiresAt: time.Unix(60, 0)},
		&messages.TokenResult{Token: tok, Err: errors.New("x")},
	}
	for _, v := range values {
		for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
			if got := fmt.Sprintf(format, v); strings.Contains(got, secret) {
				t.Errorf("Sprintf(%q, %T) = %q; leaks the token", format, v, got)
			}
		}
	}
	if got := fmt.Sprint(messages.Invalidate{AccessToken: secret}); !strings.Contains(got, tokenmanager.Fingerprint(secret)) {
		t.Errorf("Invalidate prints %q; want the token's fingerprint", got)
	}
}

func TestEvents_haveStableNames(t *testing.T) {
	tests := []struct {
		ev   messages.Event
		want string
	}{
		{messages.TokenRefreshed{}, "token_refreshed"},
		{messages.AuthFailed{}, "auth_failed"},
		{messages.TokenRequestFailed{}, "token_request_failed"},
		{messages.RecoveryTried{}, "recovery_tried"},
		{messages.TokenTryThresholdReached{}, "token_try_threshold_reached"},
		{messages.RecoveryAborted{}, "recovery_aborted"},
		{messages.SettingsFailed{}, "settings_failed"},
		{messages.ClusterFallback{}, "cluster_fallback"},
	}
	for _, tt := range tests {
		if got := tt.ev.Name(); got != tt.want {
			t.Errorf("%T.Name() = %q; want %q", tt.ev, got, tt.want)
		}
	}
}

// protoactor skips dead-letter logging for messages with this method.
type ignoreDeadLetterLogging interface{ IgnoreDeadLetterLogging() }

func TestProtocolMessages_notLoggedAsDeadLetters(t *testing.T) {
	for _, v := range []any{messages.Invalidate{}, messages.Refreshed{}, &messages.TokenResult{}} {
		if _, ok := v.(ignoreDeadLetterLogging); !ok {
			t.Errorf("%T would be logged with its token if it became a dead letter", v)
		}
	}
}

func TestIdentityOf(t *testing.T) {
	tests := []struct {
		ev   messages.Event
		want string
	}{
		{messages.TokenRefreshed{Identity: "a"}, "a"},
		{messages.AuthFailed{Identity: "b"}, "b"},
		{messages.TokenRequestFailed{Identity: "c"}, "c"},
		{messages.RecoveryTried{Identity: "d"}, "d"},
		{messages.TokenTryThresholdReached{Identity: "e"}, "e"},
		{messages.RecoveryAborted{Identity: "f"}, "f"},
		{messages.PushRejected{Identity: "g"}, "g"},
		{messages.IdentityPassivated{Identity: "h"}, "h"},
		{messages.SettingsFailed{Identity: "i"}, "i"},
		{messages.ClusterFallback{Identity: "i"}, "i"},
		{messages.TokenRefreshed{}, ""},
		{messages.Closed{}, ""},
	}
	for _, tt := range tests {
		if got := messages.IdentityOf(tt.ev); got != tt.want {
			t.Errorf("IdentityOf(%T) = %q; want %q", tt.ev, got, tt.want)
		}
		e, ok := tt.ev.(interface{ GetIdentity() string })
		if !ok {
			t.Errorf("%T has no GetIdentity method", tt.ev)
			continue
		}
		if got := e.GetIdentity(); got != tt.want {
			t.Errorf("%T.GetIdentity() = %q; want %q", tt.ev, got, tt.want)
		}
	}
}
