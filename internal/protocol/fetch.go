package protocol

import (
	"context"

	"github.com/go-tokenmanager/tokenmanager/messages"
)

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

type publishKey struct{}

// WithPublish returns ctx carrying publish, which puts an event on the
// bus of the host calling the provider (the token actor's, or the
// owner's): a distributed provider publishes what it did instead of the
// identity provider (messages.ClusterFallback) where the identity's other
// events go. publish must be safe to call from the provider's goroutine.
func WithPublish(ctx context.Context, publish func(messages.Event)) context.Context {
	return context.WithValue(ctx, publishKey{}, publish)
}

// PublishFrom returns what WithPublish put in ctx, or nil.
func PublishFrom(ctx context.Context) func(messages.Event) {
	p, _ := ctx.Value(publishKey{}).(func(messages.Event))
	return p
}
