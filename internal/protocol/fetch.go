package protocol

import (
	"context"
	"sync/atomic"
	"time"

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

type lifetimeKey struct{}

// lifetime is where a provider puts its token's precise lifetime.
type lifetime struct{ ns atomic.Int64 }

// WithLifetime returns ctx in which a provider can give its token's
// lifetime more precisely than Token.ExpiresIn's whole seconds
// (SetLifetime); the host reads it with LifetimeFrom once the provider
// returned. A distributed provider handing out a token another process
// fetched knows its time left to the millisecond.
func WithLifetime(ctx context.Context) context.Context {
	return context.WithValue(ctx, lifetimeKey{}, &lifetime{})
}

// SetLifetime tells the host calling the provider that the token it is
// about to return is valid for d from the fetch's start. It reports false
// when ctx has no place for it: the token's ExpiresIn alone counts.
func SetLifetime(ctx context.Context, d time.Duration) bool {
	l, ok := ctx.Value(lifetimeKey{}).(*lifetime)
	if !ok || d <= 0 {
		return false
	}
	l.ns.Store(int64(d))
	return true
}

// CanSetLifetime reports whether ctx has a place for SetLifetime.
func CanSetLifetime(ctx context.Context) bool {
	_, ok := ctx.Value(lifetimeKey{}).(*lifetime)
	return ok
}

// LifetimeFrom returns what SetLifetime put in ctx, or 0.
func LifetimeFrom(ctx context.Context) time.Duration {
	l, ok := ctx.Value(lifetimeKey{}).(*lifetime)
	if !ok {
		return 0
	}
	return time.Duration(l.ns.Load())
}
