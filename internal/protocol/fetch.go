package protocol

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/go-tokenmanager/tokenmanager/messages"
)

// fetchKey is the context key of a provider call's fetch values.
type fetchKey struct{}

// fetchValues is what a host tells the provider it calls, under one
// context key so that a fetch's context costs one value, however many of
// them it carries. A context's fetchValues is never changed once the
// context is made, except for the lifetime slot, written by the provider.
type fetchValues struct {
	reason, rejected string
	publish          func(messages.Event)
	// lifetime is the host's slot, nil when it has none: the host reads
	// it once the provider returned. Contexts derived with the With
	// functions share it; own holds it for the context that made it.
	lifetime *atomic.Int64
	own      atomic.Int64
}

// with returns ctx carrying a copy of its fetch values changed by set.
func with(ctx context.Context, set func(*fetchValues)) context.Context {
	var f fetchValues
	if old := valuesOf(ctx); old != nil {
		f.reason, f.rejected, f.publish, f.lifetime = old.reason, old.rejected, old.publish, old.lifetime
	}
	set(&f)
	return context.WithValue(ctx, fetchKey{}, &f)
}

func valuesOf(ctx context.Context) *fetchValues {
	f, _ := ctx.Value(fetchKey{}).(*fetchValues)
	return f
}

// NewFetch returns ctx carrying what WithFetch, WithLifetime and, when
// publish is not nil, WithPublish put in it, as one context value: the
// context of a host's provider call.
func NewFetch(ctx context.Context, reason, rejected string, publish func(messages.Event)) context.Context {
	f := &fetchValues{reason: reason, rejected: rejected, publish: publish}
	f.lifetime = &f.own
	return context.WithValue(ctx, fetchKey{}, f)
}

// WithFetch returns ctx telling a provider why it is called (a
// messages.RefreshReason) and which token's rejection led to the call, if
// any. A distributed provider passes the rejected token on, so it is
// dropped only where it is still current, and does not fall back to the
// identity provider for an early refresh, when the cached token is still
// valid.
func WithFetch(ctx context.Context, reason, rejected string) context.Context {
	return with(ctx, func(f *fetchValues) { f.reason, f.rejected = reason, rejected })
}

// FetchFrom returns what WithFetch put in ctx.
func FetchFrom(ctx context.Context) (reason, rejected string) {
	if f := valuesOf(ctx); f != nil {
		return f.reason, f.rejected
	}
	return "", ""
}

// WithPublish returns ctx carrying publish, which puts an event on the
// bus of the host calling the provider (the token actor's, or the
// owner's): a distributed provider publishes what it did instead of the
// identity provider (messages.ClusterFallback) where the identity's other
// events go. publish must be safe to call from the provider's goroutine.
func WithPublish(ctx context.Context, publish func(messages.Event)) context.Context {
	return with(ctx, func(f *fetchValues) { f.publish = publish })
}

// PublishFrom returns what WithPublish put in ctx, or nil.
func PublishFrom(ctx context.Context) func(messages.Event) {
	if f := valuesOf(ctx); f != nil {
		return f.publish
	}
	return nil
}

// WithLifetime returns ctx in which a provider can give its token's
// lifetime more precisely than Token.ExpiresIn's whole seconds
// (SetLifetime); the host reads it with LifetimeFrom once the provider
// returned. A distributed provider handing out a token another process
// fetched knows its time left to the millisecond.
func WithLifetime(ctx context.Context) context.Context {
	return with(ctx, func(f *fetchValues) { f.lifetime = &f.own })
}

// SetLifetime tells the host calling the provider that the token it is
// about to return is valid for d from the fetch's start. It reports false
// when ctx has no place for it: the token's ExpiresIn alone counts.
func SetLifetime(ctx context.Context, d time.Duration) bool {
	f := valuesOf(ctx)
	if f == nil || f.lifetime == nil || d <= 0 {
		return false
	}
	f.lifetime.Store(int64(d))
	return true
}

// CanSetLifetime reports whether ctx has a place for SetLifetime.
func CanSetLifetime(ctx context.Context) bool {
	f := valuesOf(ctx)
	return f != nil && f.lifetime != nil
}

// LifetimeFrom returns what SetLifetime put in ctx, or 0.
func LifetimeFrom(ctx context.Context) time.Duration {
	f := valuesOf(ctx)
	if f == nil || f.lifetime == nil {
		return 0
	}
	return time.Duration(f.lifetime.Load())
}
