package tokenpb

import (
	"log/slog"

	"github.com/go-tokenmanager/tokenmanager"
)

// The messages carry tokens: protoactor must not log them when they end
// up as dead letters (a late reply to an ask that timed out, an ask to a
// grain that just stopped). This file is written by hand.

// IgnoreDeadLetterLogging keeps protoactor from logging the message.
func (*GetToken) IgnoreDeadLetterLogging() {}

// IgnoreDeadLetterLogging keeps protoactor from logging the message.
func (*TokenReply) IgnoreDeadLetterLogging() {}

// protoactor logs the messages of cluster requests at debug level
// (slog.Any("message", m)): they log without the tokens they carry.

// LogValue is what slog logs for m: its fields, the rejected token as a
// fingerprint.
func (m *GetToken) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("rejected", tokenmanager.Fingerprint(m.GetRejected())),
		slog.Int64("wait_ms", m.GetWaitMs()),
		slog.String("fingerprint", m.GetFingerprint()),
		slog.Bool("probe", m.GetProbe()),
	)
}

// LogValue is what slog logs for r: its fields, the token as a
// fingerprint.
func (r *TokenReply) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("access_token", tokenmanager.Fingerprint(r.GetAccessToken())),
		slog.Int64("expires_in_ms", r.GetExpiresInMs()),
		slog.String("error", r.GetError()),
		slog.Bool("permanent", r.GetPermanent()),
		slog.Bool("pending", r.GetPending()),
		slog.Bool("refused", r.GetRefused()),
	)
}
