package tests

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

func TestActorEmbedding_eventsOnEventStream(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	system := testutil.NewSystem(t)
	var onStream testutil.Recorder
	sub := system.EventStream.SubscribeWithPredicate(
		func(m any) { onStream.Add(m.(messages.Event)) },
		func(m any) bool { _, ok := m.(messages.Event); return ok },
	)
	t.Cleanup(func() { system.EventStream.Unsubscribe(sub) })

	var mu sync.Mutex
	var actorSide, requestSide int
	pid := spawn(t, system, tokenmanager.Settings{
		GetCredentials: p.Get,
		Clock:          clock.NewMock(),
		Formatter:      func(tok string) string { return "ActorSettings " + tok },
		OnTokenRefresh: func(string) { mu.Lock(); actorSide++; mu.Unlock() },
	})
	b := &testutil.Backend{}
	rt, err := transport.NewFromActor(system, pid, tokenmanager.Settings{
		Formatter:  func(tok string) string { return "Token " + tok },
		OnAuthFail: func(string) { mu.Lock(); requestSide++; mu.Unlock() },
	}, transport.WithBase(b))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	rec := testutil.Record(t, rt)

	// The request side follows NewFromActor's settings.
	if r := send(context.Background(), rt, ""); r.status != http.StatusOK || r.auth != "Token tok-1" {
		t.Errorf("status %d, Authorization %q, err %v; want 200 with %q", r.status, r.auth, r.err, "Token tok-1")
	}
	// The RoundTripper and the actor's askers share the one token.
	if res := ask(t, system, pid); res.Err != nil || res.Token.AccessToken != "tok-1" || res.ExpiresAt.IsZero() {
		t.Errorf("Get = {%q, %v, %v}; want tok-1 with its expiry", res.Token.AccessToken, res.ExpiresAt, res.Err)
	}
	b.Revoke("tok-1")
	if r := send(context.Background(), rt, ""); r.status != http.StatusOK || r.auth != "Token tok-2" {
		t.Errorf("after revocation: status %d, Authorization %q, err %v; want 200 with tok-2", r.status, r.auth, r.err)
	}

	// Both kinds of event reach the EventStream and the subscriber.
	for name, r := range map[string]*testutil.Recorder{"EventStream": &onStream, "Subscribe": rec} {
		testutil.Eventually(t, name+" events", func() bool {
			return len(testutil.EventsOf[messages.TokenRefreshed](r)) == 2 &&
				len(testutil.EventsOf[messages.AuthFailed](r)) == 1 &&
				len(testutil.EventsOf[messages.RecoveryTried](r)) == 1
		})
	}
	testutil.Eventually(t, "both sides' callbacks", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return actorSide == 2 && requestSide == 1
	})
	if got := p.Calls.Load(); got != 2 {
		t.Errorf("provider calls = %d; want 2", got)
	}
}

func TestActorProtocol_invalidateAndPush(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	system := testutil.NewSystem(t)
	pid := spawn(t, system, tokenmanager.Settings{GetCredentials: p.Get, Clock: clock.NewMock()})
	rt, err := transport.NewFromActor(system, pid, tokenmanager.Settings{}, transport.WithBase(&testutil.Backend{}))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()

	if got := ask(t, system, pid).Token.AccessToken; got != "tok-1" {
		t.Fatalf("Get = %q; want tok-1", got)
	}
	// A stale invalidation leaves the cached token alone.
	system.Root.Send(pid, messages.Invalidate{AccessToken: "tok-0"})
	if got := ask(t, system, pid).Token.AccessToken; got != "tok-1" {
		t.Errorf("after a stale Invalidate, Get = %q; want tok-1", got)
	}
	// A matching one drops it; an empty one drops whatever is cached.
	system.Root.Send(pid, messages.Invalidate{AccessToken: "tok-1"})
	if got := ask(t, system, pid).Token.AccessToken; got != "tok-2" {
		t.Errorf("after Invalidate{tok-1}, Get = %q; want tok-2", got)
	}
	system.Root.Send(pid, messages.Invalidate{})
	if got := ask(t, system, pid).Token.AccessToken; got != "tok-3" {
		t.Errorf("after Invalidate{}, Get = %q; want tok-3", got)
	}
	// A pushed token is cached and used by requests.
	system.Root.Send(pid, messages.Refreshed{Token: tokenmanager.Token{AccessToken: "pushed", ExpiresIn: 3600}})
	if got := ask(t, system, pid).Token.AccessToken; got != "pushed" {
		t.Errorf("after Refreshed, Get = %q; want pushed", got)
	}
	if r := send(context.Background(), rt, ""); r.auth != "Bearer pushed" {
		t.Errorf("request carried %q; want the pushed token", r.auth)
	}
	if got := p.Calls.Load(); got != 3 {
		t.Errorf("provider calls = %d; want 3", got)
	}
}
