package protocol

import (
	"context"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager/messages"
)

// TestFetchValues: the fetch values compose in any order, each With
// keeping what the context already carried; FetchContext carries them
// all; a lifetime is set only where the host made room for it.
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

	host, cancel := FetchContext(context.Background(), time.Minute, "cold_start", "", nil)
	defer cancel()
	derived := WithPublish(WithFetch(host, "cold_start", ""), publish)
	if !SetLifetime(derived, 2*time.Second) || LifetimeFrom(host) != 2*time.Second {
		t.Fatalf("a lifetime set in a derived context reads %v in the host's; want 2s", LifetimeFrom(host))
	}

	n, cancel := FetchContext(context.Background(), time.Minute, "cold_start", "", publish)
	defer cancel()
	PublishFrom(n)(messages.Closed{})
	if r, _ := FetchFrom(n); r != "cold_start" || len(got) != 1 || !CanSetLifetime(n) {
		t.Fatalf("FetchContext: reason %q, %d events, lifetime slot %v", r, len(got), CanSetLifetime(n))
	}
	if PublishFrom(host) != nil {
		t.Fatal("FetchContext without publish carries one")
	}
	if r, rej := FetchFrom(context.Background()); r != "" || rej != "" || PublishFrom(context.Background()) != nil {
		t.Fatal("an empty context carries fetch values")
	}
}

type parentKey struct{}

// TestFetchContext: a fetch context ends once, with the error of what
// ended it first (its deadline, its parent, its cancel), closes its Done
// whether or not it was asked for before, runs AfterEnd's func once
// unless stopped, and passes other values on to its parent.
func TestFetchContext(t *testing.T) {
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := FetchContext(context.Background(), time.Millisecond, "", "", nil)
		defer cancel()
		ran := make(chan struct{})
		if _, ok := AfterEnd(ctx, func() { close(ran) }); !ok {
			t.Fatal("AfterEnd refused a fetch context")
		}
		<-ran // the deadline's timer runs it
		<-ctx.Done()
		if ctx.Err() != context.DeadlineExceeded {
			t.Errorf("Err = %v; want DeadlineExceeded", ctx.Err())
		}
		cancel()
		if ctx.Err() != context.DeadlineExceeded {
			t.Errorf("Err after cancel = %v; want it kept", ctx.Err())
		}
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := FetchContext(context.Background(), time.Hour, "", "", nil)
		done := ctx.Done()
		ran := make(chan struct{})
		AfterEnd(ctx, func() { close(ran) })
		cancel()
		<-ran
		<-done
		if ctx.Err() != context.Canceled {
			t.Errorf("Err = %v; want Canceled", ctx.Err())
		}
		if d, ok := ctx.Deadline(); !ok || time.Until(d) < 59*time.Minute {
			t.Errorf("Deadline = %v, %v; want an hour from its start", d, ok)
		}
	})
	t.Run("parent", func(t *testing.T) {
		parent, cancelParent := context.WithCancel(context.WithValue(context.Background(), parentKey{}, "p"))
		ctx, cancel := FetchContext(parent, time.Hour, "why", "", nil)
		defer cancel()
		if ctx.Value(parentKey{}) != "p" {
			t.Error("the parent's value is lost")
		}
		if r, _ := FetchFrom(ctx); r != "why" {
			t.Errorf("FetchFrom = %q; want why", r)
		}
		cancelParent()
		<-ctx.Done()
		if ctx.Err() != context.Canceled {
			t.Errorf("Err = %v; want the parent's", ctx.Err())
		}
		ended, cancel2 := FetchContext(parent, time.Hour, "", "", nil)
		defer cancel2()
		if ended.Err() != context.Canceled {
			t.Errorf("made under an ended parent: Err = %v; want Canceled", ended.Err())
		}
		ran := make(chan struct{})
		AfterEnd(ended, func() { close(ran) })
		<-ran // an ended context runs it at once
	})
	t.Run("earlier parent deadline", func(t *testing.T) {
		parent, cancelParent := context.WithTimeout(context.Background(), time.Minute)
		defer cancelParent()
		ctx, cancel := FetchContext(parent, time.Hour, "", "", nil)
		defer cancel()
		if d, _ := ctx.Deadline(); time.Until(d) > time.Minute {
			t.Errorf("Deadline %v; want the parent's, a minute away", time.Until(d))
		}
	})
	t.Run("stopped", func(t *testing.T) {
		ctx, cancel := FetchContext(context.Background(), time.Hour, "", "", nil)
		stop, _ := AfterEnd(ctx, func() { t.Error("a stopped AfterEnd func ran") })
		if !stop() || stop() {
			t.Error("stop should report true once, then false")
		}
		cancel()
		<-ctx.Done()
	})
	if _, ok := AfterEnd(context.Background(), func() {}); ok {
		t.Error("AfterEnd took a context FetchContext did not make")
	}
}
