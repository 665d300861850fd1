package eventbus

import (
	"context"

	"github.com/go-tokenmanager/tokenmanager/messages"
)

// publisherKey carries, in a fetch's context, where the provider's own
// events go.
type publisherKey struct{}

// WithPublisher returns ctx carrying publish, which a provider called with
// the context reaches through [PublishFrom]. The token state sets it on
// every fetch, so a provider's events (a refresh token rotated, say) go
// to the same subscribers, with the same callbacks, as the state's own.
// publish must be safe for concurrent use.
func WithPublisher(ctx context.Context, publish func(messages.Event)) context.Context {
	return context.WithValue(ctx, publisherKey{}, publish)
}

// PublishFrom publishes ev with the publisher ctx carries; without one
// (a provider called outside a manager) ev is dropped.
func PublishFrom(ctx context.Context, ev messages.Event) {
	if publish, ok := ctx.Value(publisherKey{}).(func(messages.Event)); ok && publish != nil {
		publish(ev)
	}
}
