package protocol

import "context"

type fetchKey struct{}

type fetchInfo struct{ reason, rejected string }

// WithFetch returns ctx telling a provider why it is called (a
// messages.RefreshReason) and which token's rejection led to the call, if
// any. A distributed provider passes the rejected token on, so it is
// dropped only where it is still current, and does not fall back to the
// identity provider for an early refresh, when the cached token is still
// valid.
func WithFetch(ctx context.Context, reason, rejected string) context.Context {
	return context.WithValue(ctx, fetchKey{}, fetchInfo{reason, rejected})
}

// FetchFrom returns what WithFetch put in ctx.
func FetchFrom(ctx context.Context) (reason, rejected string) {
	f, _ := ctx.Value(fetchKey{}).(fetchInfo)
	return f.reason, f.rejected
}
