package protocol

import (
	"context"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager/messages"
)

// TestFetchValues: the fetch values compose in any order, each With
// keeping what the context already carried; NewFetch carries them all in
// one value; a lifetime is set only where the host made room for it.
func TestFetchValues(t *testing.T) {
	var got []messages.Event
	publish := func(ev messages.Event) { got = append(got, ev) }

	ctx := WithPublish(WithFetch(context.Background(), "early_refresh", "tok"), publish)
	if r, rej := FetchFrom(ctx); r != "early_refresh" || rej != "tok" {
		t.Fatalf("FetchFrom after WithPublish = %q, %q", r, rej)
	}
	if SetLifetime(ctx, time.Second) || CanSetLifetime(ctx) || LifetimeFrom(ctx) != 0 {
		t.Fatal("a lifetime was set without WithLifetime")
	}
	ctx = WithFetch(WithLifetime(ctx), "invalidated", "")
	if PublishFrom(ctx) == nil || !CanSetLifetime(ctx) {
		t.Fatal("WithFetch dropped the publish func or the lifetime slot")
	}
	if !SetLifetime(ctx, 1500*time.Millisecond) || LifetimeFrom(ctx) != 1500*time.Millisecond {
		t.Fatalf("LifetimeFrom = %v; want 1.5s", LifetimeFrom(ctx))
	}
	if SetLifetime(ctx, 0) || LifetimeFrom(ctx) != 1500*time.Millisecond {
		t.Fatal("a zero lifetime was taken")
	}

	host := NewFetch(context.Background(), "cold_start", "", nil)
	derived := WithPublish(WithFetch(host, "cold_start", ""), publish)
	if !SetLifetime(derived, 2*time.Second) || LifetimeFrom(host) != 2*time.Second {
		t.Fatalf("a lifetime set in a derived context reads %v in the host's; want 2s", LifetimeFrom(host))
	}

	n := NewFetch(context.Background(), "cold_start", "", publish)
	PublishFrom(n)(messages.Closed{})
	if r, _ := FetchFrom(n); r != "cold_start" || len(got) != 1 || !CanSetLifetime(n) {
		t.Fatalf("NewFetch: reason %q, %d events, lifetime slot %v", r, len(got), CanSetLifetime(n))
	}
	if PublishFrom(NewFetch(context.Background(), "", "", nil)) != nil {
		t.Fatal("NewFetch without publish carries one")
	}
	if r, rej := FetchFrom(context.Background()); r != "" || rej != "" || PublishFrom(context.Background()) != nil {
		t.Fatal("an empty context carries fetch values")
	}
}
