package tokengrain

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/tokengrain/tokenpb"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// events collects an owner's events.
type events struct {
	mu  sync.Mutex
	all []messages.Event
}

func (e *events) add(ev messages.Event) { e.mu.Lock(); e.all = append(e.all, ev); e.mu.Unlock() }

func (e *events) count(name string) (n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.all {
		if ev.Name() == name {
			n++
		}
	}
	return n
}

func (e *events) failures() (n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.all {
		if _, ok := ev.(messages.TokenRequestFailed); ok {
			n++
		}
	}
	return n
}

// eventually polls cond until it holds or a second of wall time passes:
// it waits for the owner's goroutines, never for a timer.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// With the cluster unreachable and the identity provider up, an early
// refresh fetches directly: the owner sees no failed fetch, backs the
// identity off not at all, and a request after the first token's expiry
// is served at once.
func TestOwner_unreachableClusterIsNotAProviderFailure(t *testing.T) {
	mock := clock.NewMock()
	var direct atomic.Int64
	settingsFor := func(id string) (tokenmanager.Settings, error) {
		return tokenmanager.Settings{
			Clock:         mock,
			RefreshBuffer: 50 * time.Second,
			GetCredentials: func(context.Context) (tokenmanager.Token, error) {
				return tokenmanager.Token{AccessToken: fmt.Sprintf("%s-%d", id, direct.Add(1)), ExpiresIn: 60}, nil
			},
		}, nil
	}
	unreachable := func(string, *tokenpb.GetToken, time.Duration) (*tokenpb.TokenReply, error) {
		return nil, errors.New("unreachable")
	}
	var fallbacks atomic.Int64
	m, err := transport.NewMulti(tokenmanager.OwnerSettings{
		Clock: mock,
		SettingsFor: wrap(settingsFor, Options{
			Timeout:    50 * time.Millisecond,
			OnFallback: func(string, error) { fallbacks.Add(1) },
		}, unreachable),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var evs events
	defer m.Subscribe(evs.add)()

	first, err := m.Token(context.Background(), "a")
	if err != nil || first.AccessToken != "a-1" {
		t.Fatalf("cold start: %v, %v; want a-1", first, err)
	}
	mock.Add(31 * time.Second) // past the refresh time (half the lifetime, at most the buffer before expiry)
	if tok, err := m.Token(context.Background(), "a"); err != nil || tok.AccessToken != "a-1" {
		t.Fatalf("in the refresh buffer: %v, %v; want a-1 still, and an early refresh", tok, err)
	}
	eventually(t, "the early refresh", func() bool { return direct.Load() >= 2 })
	if n := evs.failures(); n != 0 {
		t.Errorf("%d failed fetches published; an unreachable cluster must not count as one", n)
	}
	mock.Add(30 * time.Second) // the first token has expired
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	tok, err := m.Token(ctx, "a")
	if err != nil || tok.AccessToken == first.AccessToken {
		t.Fatalf("after expiry: %v, %v; want a fresh token at once", tok, err)
	}
	if n := evs.failures(); n != 0 {
		t.Errorf("%d failed fetches published", n)
	}
	if fallbacks.Load() < 2 {
		t.Errorf("OnFallback called %d times; want one per direct fetch (at least 2)", fallbacks.Load())
	}
	// Each direct fetch is also an event on the owner's bus, published
	// before the token it fetched, naming the reason and no token.
	eventually(t, "the fallback events", func() bool { return int64(evs.count("cluster_fallback")) == direct.Load() })
	evs.mu.Lock()
	defer evs.mu.Unlock()
	fellBack := false
	for _, ev := range evs.all {
		switch e := ev.(type) {
		case messages.ClusterFallback:
			if e.Identity != "a" || e.Reason != ReasonUnreachable || e.Err == nil {
				t.Errorf("got %#v; want identity a, reason %q and the cluster's error", e, ReasonUnreachable)
			}
			if strings.Contains(e.Err.Error(), "a-") {
				t.Errorf("the fallback's error %q holds a token", e.Err)
			}
			fellBack = true
		case messages.TokenRefreshed:
			if !fellBack {
				t.Errorf("a token_refreshed came before its cluster_fallback")
			}
			fellBack = false
		}
	}
}
