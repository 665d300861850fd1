package tests

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/actor"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// badIdentities are refused at every entry point of an owner of many
// identities, each with the error it must wrap at the transport (the
// owner itself answers ErrInvalidIdentity for all of them).
var badIdentities = []struct {
	name, identity string
	want           error
}{
	{"empty", "", transport.ErrNoIdentity},
	{"NUL", "tenant\x00a", tokenmanager.ErrInvalidIdentity},
	{"newline", "tenant\na", tokenmanager.ErrInvalidIdentity},
	{"carriage return", "tenant\r", tokenmanager.ErrInvalidIdentity},
	{"DEL", "tenant\x7f", tokenmanager.ErrInvalidIdentity},
	{"C1 control", "tenant\u0085", tokenmanager.ErrInvalidIdentity},
	{"not UTF-8", "tenant\xff\xfe", tokenmanager.ErrInvalidIdentity},
	{"1 MiB", strings.Repeat("x", 1<<20), tokenmanager.ErrInvalidIdentity},
	{"one byte too long", strings.Repeat("x", tokenmanager.MaxIdentityLength+1), tokenmanager.ErrInvalidIdentity},
}

func TestMulti_invalidIdentityRefusedEverywhere(t *testing.T) {
	ts := newTenants(clock.NewMock(), 3600)
	b := &testutil.Backend{}
	var resolved string
	m := newMulti(t, ts, b, tokenmanager.OwnerSettings{},
		transport.WithResolver(func(*http.Request) (string, error) { return resolved, nil }))
	for _, tt := range badIdentities {
		t.Run(tt.name, func(t *testing.T) {
			check := func(where string, err error) {
				t.Helper()
				if !errors.Is(err, tt.want) {
					t.Errorf("%s: err %v; want %v", where, err, tt.want)
				}
				if err != nil && len(err.Error()) > 300 {
					t.Errorf("%s: error of %d bytes; want a short one", where, len(err.Error()))
				}
			}
			check("RoundTrip with WithIdentity", sendAs(context.Background(), m, tt.identity).err)
			if tt.identity == "" { // sendAs sets no identity for ""
				check("RoundTrip with WithIdentity", send(transport.WithIdentity(context.Background(), ""), m, "").err)
			}
			resolved = tt.identity
			check("RoundTrip with the resolver", send(context.Background(), m, "").err)
			check("For", send(context.Background(), m.For(tt.identity), "").err)
			_, err := m.Token(context.Background(), tt.identity)
			check("Token", err)
			_, err = m.TokenSource(tt.identity).Token()
			check("TokenSource", err)
			if m.Invalidate(tt.identity, "tok") {
				t.Error("Invalidate = true; want false (nothing to fetch anew)")
			}
		})
	}
	if n := len(b.Requests()); n != 0 {
		t.Errorf("backend saw %d requests; want none", n)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.calls) != 0 {
		t.Errorf("SettingsFor called for %d identities; want none", len(ts.calls))
	}
}

func TestMulti_validIdentitiesAtTheLimits(t *testing.T) {
	ts := newTenants(clock.NewMock(), 3600)
	m := newMulti(t, ts, &testutil.Backend{}, tokenmanager.OwnerSettings{})
	for _, id := range []string{
		strings.Repeat("x", tokenmanager.MaxIdentityLength),
		"tenant=Zürich|scope=read write|aud=https://api.example/ünïcode",
	} {
		if r := mustOKAs(t, m, id); r.auth != "Bearer "+id+"-1" {
			t.Errorf("identity of %d bytes carried %.40q; want its own token", len(id), r.auth)
		}
	}
}

func TestOwner_getForInvalidIdentity(t *testing.T) {
	system := testutil.NewSystem(t)
	ts := newTenants(clock.NewMock(), 3600)
	props, err := actor.NewOwnerProps(tokenmanager.OwnerSettings{SettingsFor: ts.settingsFor, Clock: ts.clock})
	if err != nil {
		t.Fatal(err)
	}
	pid := system.Root.Spawn(props)
	t.Cleanup(func() { system.Root.StopFuture(pid).Wait() })
	for _, tt := range badIdentities {
		t.Run(tt.name, func(t *testing.T) {
			reply, err := system.Root.RequestFuture(pid, &messages.Get{Identity: tt.identity}, testutil.Patience).Result()
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if r := reply.(*messages.TokenResult); !errors.Is(r.Err, tokenmanager.ErrInvalidIdentity) {
				t.Errorf("Get{%.20q} = %v; want ErrInvalidIdentity", tt.identity, r.Err)
			}
			// Neither Invalidate nor Refreshed starts anything for it.
			system.Root.Send(pid, messages.Invalidate{Identity: tt.identity})
			system.Root.Send(pid, messages.Refreshed{Identity: tt.identity, Token: tokenmanager.Token{AccessToken: "pushed"}})
		})
	}
	// A valid Get after them: answered, so the owner handled them all.
	reply, err := system.Root.RequestFuture(pid, messages.Get{Identity: "ok"}, testutil.Patience).Result()
	if err != nil || reply.(*messages.TokenResult).Token.AccessToken != "ok-1" {
		t.Fatalf("Get{ok} = %v, %v; want ok-1", reply, err)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.calls) != 1 {
		t.Errorf("SettingsFor called for %d identities (%v); want only ok", len(ts.calls), ts.calls)
	}
}

func TestCheckIdentity(t *testing.T) {
	for _, tt := range badIdentities {
		if err := tokenmanager.CheckIdentity(tt.identity); !errors.Is(err, tokenmanager.ErrInvalidIdentity) {
			t.Errorf("CheckIdentity(%s) = %v; want ErrInvalidIdentity", tt.name, err)
		} else if strings.Contains(err.Error(), "tenant") {
			t.Errorf("CheckIdentity(%s) = %q; want the identity left out", tt.name, err)
		}
	}
	if err := tokenmanager.CheckIdentity("tenant=a|scope=read write"); err != nil {
		t.Errorf("CheckIdentity(valid) = %v", err)
	}
}
