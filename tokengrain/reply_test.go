package tokengrain

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/tokengrain/tokenpb"
)

func TestReplyAndToken_carryTimeLeftNotAbsoluteTime(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		res       *messages.TokenResult
		wantMs    int64
		wantIn    int64
		wantErr   bool
		permanent bool
	}{
		{"90.5s left", &messages.TokenResult{Token: tokenmanager.Token{AccessToken: "a"}, ExpiresAt: now.Add(90500 * time.Millisecond)}, 90500, 90, false, false},
		{"under a second", &messages.TokenResult{Token: tokenmanager.Token{AccessToken: "a"}, ExpiresAt: now.Add(300 * time.Millisecond)}, 300, 1, false, false},
		{"no expiry", &messages.TokenResult{Token: tokenmanager.Token{AccessToken: "a"}}, 0, 0, false, false},
		{"temporary failure", &messages.TokenResult{Err: errors.New("endpoint down")}, 0, 0, true, false},
		{"permanent failure", &messages.TokenResult{Err: tokenmanager.Permanent(errors.New("invalid_client"))}, 0, 0, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := reply(tt.res, nil, now)
			if r.GetExpiresInMs() != tt.wantMs {
				t.Errorf("ExpiresInMs = %d; want %d", r.GetExpiresInMs(), tt.wantMs)
			}
			tok, err := tokenOf(r)
			if (err != nil) != tt.wantErr || tokenmanager.IsPermanent(err) != tt.permanent {
				t.Fatalf("err %v; want error %v, permanent %v", err, tt.wantErr, tt.permanent)
			}
			if tok.ExpiresIn != tt.wantIn {
				t.Errorf("ExpiresIn = %d; want %d", tok.ExpiresIn, tt.wantIn)
			}
		})
	}
	if r := reply(nil, errors.New("future timed out"), now); r.GetError() == "" {
		t.Error("a failed ask gave no error")
	}
	if _, err := tokenOf(&tokenpb.TokenReply{Error: "x"}); err == nil {
		t.Error("an error reply gave a token")
	}
}

func TestMessages_neverLoggedAsDeadLetters(t *testing.T) {
	// A late reply to an ask that timed out carries a token: protoactor
	// must not log it.
	for _, m := range []any{&tokenpb.GetToken{}, &tokenpb.TokenReply{}} {
		if _, ok := m.(interface{ IgnoreDeadLetterLogging() }); !ok {
			t.Errorf("%T would be logged as a dead letter", m)
		}
	}
}

func TestMessages_loggedWithoutTokens(t *testing.T) {
	// protoactor logs a cluster request's message at debug level.
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	logger.Debug("Requesting", slog.Any("message", &tokenpb.GetToken{Rejected: "rejected-secret", WaitMs: 5}))
	logger.Debug("reply", slog.Any("message", &tokenpb.TokenReply{AccessToken: "access-secret", ExpiresInMs: 5}))
	if out := buf.String(); strings.Contains(out, "secret") || !strings.Contains(out, "wait_ms=5") {
		t.Errorf("logged %q; want the fields without the tokens", out)
	}
}
