package observability_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/observability"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// otherEvent is an event type the package does not know.
type otherEvent struct{}

func (otherEvent) Name() string { return "something_new" }

// logged runs ev through SlogHandler into a JSON handler and decodes the
// record.
func logged(t *testing.T, ev messages.Event) map[string]any {
	t.Helper()
	var buf bytes.Buffer
	observability.SlogHandler(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))(ev)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("decoding %q: %v", buf.String(), err)
	}
	delete(rec, "time")
	return rec
}

func TestSlogHandler(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	fetchErr := &tokenmanager.FetchError{Attempt: 3, Err: errors.New("dial tcp: connection refused")}
	tests := []struct {
		name string
		ev   messages.Event
		want map[string]any
	}{
		{
			name: "token refreshed",
			ev: messages.TokenRefreshed{ExpiresAt: exp, Reason: messages.ReasonEarlyRefresh,
				FetchDuration: 120 * time.Millisecond, Fingerprint: "0123abcd", Message: "token refreshed (early_refresh)"},
			want: map[string]any{"level": "INFO", "msg": "token refreshed", "event": "token_refreshed",
				"reason": "early_refresh", "expires_at": "2030-01-02T03:04:05Z", "fetch_duration": float64(120 * time.Millisecond),
				"fingerprint": "0123abcd", "detail": "token refreshed (early_refresh)"},
		},
		{
			name: "token without expiry",
			ev:   messages.TokenRefreshed{Reason: messages.ReasonPushed, Fingerprint: "ff"},
			want: map[string]any{"level": "INFO", "msg": "token refreshed", "event": "token_refreshed",
				"reason": "pushed", "fetch_duration": float64(0), "fingerprint": "ff"},
		},
		{
			name: "auth failed",
			ev:   messages.AuthFailed{Status: 401, Host: "api.example.com", Fingerprint: "aa", Message: "request to api.example.com got status 401"},
			want: map[string]any{"level": "WARN", "msg": "token rejected", "event": "auth_failed", "status": float64(401),
				"host": "api.example.com", "fingerprint": "aa", "detail": "request to api.example.com got status 401"},
		},
		{
			name: "token request failed",
			ev:   messages.TokenRequestFailed{Err: fetchErr, ConsecutiveFailures: 3, RetryIn: 2 * time.Second},
			want: map[string]any{"level": "WARN", "msg": "token request failed", "event": "token_request_failed",
				"error": fetchErr.Error(), "permanent": false, "consecutive_failures": float64(3), "retry_in": float64(2 * time.Second)},
		},
		{
			name: "token request failed permanently",
			ev:   messages.TokenRequestFailed{Err: fetchErr, Permanent: true, ConsecutiveFailures: 1},
			want: map[string]any{"level": "WARN", "msg": "token request failed", "event": "token_request_failed",
				"error": fetchErr.Error(), "permanent": true, "consecutive_failures": float64(1), "retry_in": float64(0)},
		},
		{
			name: "push rejected",
			ev:   messages.PushRejected{Err: errors.New("pushed token has an empty access token")},
			want: map[string]any{"level": "WARN", "msg": "pushed token rejected", "event": "push_rejected",
				"error": "pushed token has an empty access token"},
		},
		{
			name: "closed",
			ev:   messages.Closed{},
			want: map[string]any{"level": "INFO", "msg": "token manager closed", "event": "closed"},
		},
		{
			name: "recovery tried",
			ev:   messages.RecoveryTried{Attempt: 1, Fingerprint: "bb", Message: "resending"},
			want: map[string]any{"level": "WARN", "msg": "request resent with a fresh token", "event": "recovery_tried",
				"attempt": float64(1), "fingerprint": "bb", "detail": "resending"},
		},
		{
			name: "threshold",
			ev:   messages.TokenTryThresholdReached{FailedTries: 20},
			want: map[string]any{"level": "ERROR", "msg": "token requests keep failing", "event": "token_try_threshold_reached",
				"failed_tries": float64(20)},
		},
		{
			name: "recovery aborted",
			ev:   messages.RecoveryAborted{Attempts: 5, Status: 401, Message: "all 5 recovery tries were used"},
			want: map[string]any{"level": "ERROR", "msg": "recovery aborted", "event": "recovery_aborted",
				"attempts": float64(5), "status": float64(401), "detail": "all 5 recovery tries were used"},
		},
		{
			name: "unknown event",
			ev:   otherEvent{},
			want: map[string]any{"level": "INFO", "msg": "token manager event", "event": "something_new"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := logged(t, tt.ev)
			if len(got) != len(tt.want) {
				t.Errorf("got %d keys %v; want %d %v", len(got), got, len(tt.want), tt.want)
			}
			for k, want := range tt.want {
				if got[k] != want {
					t.Errorf("%s = %v (%T); want %v (%T)", k, got[k], got[k], want, want)
				}
			}
			if attrs := observability.Attrs(tt.ev); attrs[0].Key != observability.KeyEvent {
				t.Errorf("first attribute is %q; want %q", attrs[0].Key, observability.KeyEvent)
			}
		})
	}
}

func TestSlogHandler_level(t *testing.T) {
	var buf bytes.Buffer
	h := observability.SlogHandler(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError})))
	h(messages.TokenRefreshed{Reason: messages.ReasonColdStart})
	h(messages.AuthFailed{Status: 401})
	h(messages.TokenTryThresholdReached{FailedTries: 10})
	h(nil)
	if got := strings.Count(buf.String(), "\n"); got != 1 || !strings.Contains(buf.String(), "event=token_try_threshold_reached") {
		t.Errorf("logged %q; want only the threshold record", buf.String())
	}
}

func TestSlogHandler_nilLoggerUsesDefault(t *testing.T) {
	var buf bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	defer slog.SetDefault(old)
	observability.SlogHandler(nil)(messages.RecoveryAborted{Status: 401})
	if !strings.Contains(buf.String(), "event=recovery_aborted") {
		t.Errorf("default logger got %q", buf.String())
	}
}

// TestSlogHandler_transport logs a real manager's events: the access
// token appears only when AddTokenToLogs is set.
func TestSlogHandler_transport(t *testing.T) {
	const secretToken = "at-0123456789-very-secret"
	for _, withToken := range []bool{false, true} {
		t.Run(map[bool]string{false: "token kept out", true: "AddTokenToLogs"}[withToken], func(t *testing.T) {
			api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "revoked", http.StatusUnauthorized) // rejects every token
			}))
			defer api.Close()
			rt, err := transport.New(tokenmanager.Settings{
				GetCredentials: func(context.Context) (tokenmanager.Token, error) {
					return tokenmanager.Token{AccessToken: secretToken, ExpiresIn: 3600}, nil
				},
				MaxRecoveryTries: 1,
				AddTokenToLogs:   withToken,
				Clock:            clock.NewMock(),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer rt.Close()

			var buf bytes.Buffer
			log := observability.SlogHandler(slog.New(slog.NewJSONHandler(&buf, nil)))
			// The actor's events reach subscribers through one more hop
			// than the RoundTripper's: wait for both kinds.
			done := make(chan struct{})
			var refreshed, aborted bool
			defer rt.Subscribe(func(ev messages.Event) {
				log(ev)
				switch ev.(type) {
				case messages.TokenRefreshed:
					refreshed = true
				case messages.RecoveryAborted:
					aborted = true
				default:
					return
				}
				if refreshed && aborted {
					close(done)
				}
			})()

			resp, err := rt.Client().Get(api.URL)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			<-done

			out := buf.String()
			for _, ev := range []string{"token_refreshed", "auth_failed", "recovery_tried", "recovery_aborted"} {
				if !strings.Contains(out, `"event":"`+ev+`"`) {
					t.Errorf("no %s record in %s", ev, out)
				}
			}
			if !strings.Contains(out, tokenmanager.Fingerprint(secretToken)) {
				t.Errorf("no fingerprint in %s", out)
			}
			if got := strings.Contains(out, secretToken); got != withToken {
				t.Errorf("token in logs = %v; want %v:\n%s", got, withToken, out)
			}
		})
	}
}

// TestAttrs_newEvents checks the keys and levels of the events added with
// permanent failures, refused pushes and closing, as Attrs and Level give
// them to other sinks.
func TestAttrs_newEvents(t *testing.T) {
	keys := func(attrs []slog.Attr) string {
		var ks []string
		for _, a := range attrs {
			ks = append(ks, a.Key)
		}
		return strings.Join(ks, ",")
	}
	tests := []struct {
		ev    messages.Event
		keys  string
		level slog.Level
	}{
		{messages.TokenRequestFailed{}, "event,permanent,consecutive_failures,retry_in", slog.LevelWarn},
		{messages.PushRejected{Err: errors.New("empty")}, "event,error", slog.LevelWarn},
		{messages.PushRejected{}, "event", slog.LevelWarn},
		{messages.Closed{}, "event", slog.LevelInfo},
		{messages.SettingsFailed{Identity: "t1", Err: errors.New("vault down"), ConsecutiveFailures: 2, RetryIn: time.Second},
			"event,identity,error,consecutive_failures,retry_in", slog.LevelError},
		{messages.RefreshTokenRotated{Identity: "user=ann|client=app", Version: 3, KeyID: "k2"}, "event,identity,version,key_id", slog.LevelInfo},
		{messages.RefreshTokenRevoked{Identity: "user=ann|client=app", Err: errors.New("invalid_grant")}, "event,identity,error", slog.LevelWarn},
	}
	for _, tt := range tests {
		if got := keys(observability.Attrs(tt.ev)); got != tt.keys {
			t.Errorf("Attrs(%#v) keys = %s; want %s", tt.ev, got, tt.keys)
		}
		if got := observability.Level(tt.ev); got != tt.level {
			t.Errorf("Level(%#v) = %v; want %v", tt.ev, got, tt.level)
		}
	}
	for _, a := range observability.Attrs(messages.TokenRequestFailed{Permanent: true}) {
		if a.Key == observability.KeyPermanent && (a.Value.Kind() != slog.KindBool || !a.Value.Bool()) {
			t.Errorf("%s = %v; want bool true", a.Key, a.Value)
		}
	}
}

// The sign-in events log no user code, device code or token.
func TestAttrs_signInEvents(t *testing.T) {
	for _, ev := range []messages.Event{
		messages.SignedIn{Identity: "user=ann|client=app", Flow: "device_code", Version: 1, KeyID: "k1"},
		messages.DeviceCodeIssued{Identity: "user=ann|client=app", UserCode: "WDJB-MJHT", VerificationURI: "https://a/device", Interval: 5 * time.Second},
		messages.DevicePollPending{Identity: "user=ann|client=app", Attempt: 2, Reason: "slow_down", Interval: 10 * time.Second},
	} {
		text := fmt.Sprint(observability.Attrs(ev))
		if strings.Contains(text, "WDJB-MJHT") || !strings.Contains(text, "identity=user=ann|client=app") {
			t.Errorf("%s: attrs %s", ev.Name(), text)
		}
	}
}
