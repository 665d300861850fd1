package transport_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"golang.org/x/oauth2"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

func TestToken_expiresInCountsFromNow(t *testing.T) {
	mock := clock.NewMock()
	p := &testutil.Provider{ExpiresIn: 60}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, Clock: mock, RefreshBuffer: time.Second}, &testutil.Backend{})
	tok, err := rt.Token(context.Background())
	if err != nil || tok.ExpiresIn != 60 {
		t.Fatalf("Token = %v, %v; want 60s left", tok, err)
	}
	mock.Add(20*time.Second + 500*time.Millisecond)
	if tok, _ := rt.Token(context.Background()); tok.ExpiresIn != 39 {
		t.Errorf("20.5s later ExpiresIn = %d; want 39 (rounded down)", tok.ExpiresIn)
	}
	noExpiry := &testutil.Provider{}
	rt2 := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: noExpiry.Get, Clock: mock}, &testutil.Backend{})
	if tok, _ := rt2.Token(context.Background()); tok.ExpiresIn != 0 {
		t.Errorf("token without expiry: ExpiresIn = %d; want 0", tok.ExpiresIn)
	}
}

func TestInvalidate_dropsOnlyTheCurrentToken(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, &testutil.Backend{})
	tok, _ := rt.Token(context.Background())
	if !rt.Invalidate("an-older-token") {
		t.Error("Invalidate(older) = false; want true (nothing holds)")
	}
	if again, _ := rt.Token(context.Background()); again.AccessToken != tok.AccessToken {
		t.Errorf("after invalidating another token, Token = %s; want %s kept", again.AccessToken, tok.AccessToken)
	}
	if !rt.Invalidate(tok.AccessToken) {
		t.Fatal("Invalidate(current) = false; want true")
	}
	if fresh, _ := rt.Token(context.Background()); fresh.AccessToken == tok.AccessToken {
		t.Errorf("after Invalidate, Token = %s; want a fresh token", fresh.AccessToken)
	}
}

func TestInvalidate_holdsWhenEveryNewTokenIsRejected(t *testing.T) {
	// A client whose API rejects every token: invalidating each fresh
	// token right after fetching it soon makes Invalidate answer false,
	// sparing the token endpoint.
	p := &testutil.Provider{ExpiresIn: 3600}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, &testutil.Backend{})
	gaveUp := -1
	for i := range 100 {
		tok, err := rt.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !rt.Invalidate(tok.AccessToken) {
			gaveUp = i
			break
		}
		// Let the actor handle the invalidation before the next round.
		deadline := time.Now().Add(time.Second)
		for p.Calls.Load() == int64(i+1) && time.Now().Before(deadline) {
			rt.Token(context.Background())
		}
	}
	if gaveUp < 0 {
		t.Fatalf("Invalidate never answered false in 100 rounds; %d fetches", p.Calls.Load())
	}
	if calls := p.Calls.Load(); calls > 40 {
		t.Errorf("%d fetches before the hold; want the hold to spare the endpoint", calls)
	}
}

func TestTokenSource_expiryAndReuse(t *testing.T) {
	mock := clock.NewMock()
	p := &testutil.Provider{ExpiresIn: 600}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, Clock: mock}, &testutil.Backend{})
	mock.Add(time.Minute) // the manager's clock need not be the wall clock
	ts := oauth2.ReuseTokenSource(nil, rt.TokenSource())
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	left := time.Until(tok.Expiry)
	if left < 595*time.Second || left > 600*time.Second {
		t.Errorf("Expiry in %v; want about 600s from now on the wall clock", left)
	}
	if tok.Type() != "Bearer" || !tok.Valid() {
		t.Errorf("token %+v: want a valid Bearer token", tok)
	}
	for range 5 {
		ts.Token()
	}
	if got := p.Calls.Load(); got != 1 {
		t.Errorf("provider calls = %d; want 1", got)
	}
}

func TestTokenSource_underOAuth2NewClient(t *testing.T) {
	var seen atomic.Value
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("Authorization"))
	}))
	defer api.Close()
	p := &testutil.Provider{ExpiresIn: 3600}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get}, &testutil.Backend{})
	client := oauth2.NewClient(context.Background(), rt.TokenSource())
	for range 3 {
		resp, err := client.Get(api.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if got := seen.Load(); got != "Bearer tok-1" {
		t.Errorf("API saw %v; want Bearer tok-1", got)
	}
	if got := p.Calls.Load(); got != 1 {
		t.Errorf("provider calls = %d; want 1", got)
	}
}

func TestMulti_tokenAPI(t *testing.T) {
	mock := clock.NewMock()
	var n atomic.Int64
	m, err := transport.NewMulti(tokenmanager.OwnerSettings{
		Clock: mock,
		SettingsFor: func(id string) (tokenmanager.Settings, error) {
			return tokenmanager.Settings{Clock: mock, GetCredentials: func(context.Context) (tokenmanager.Token, error) {
				return tokenmanager.Token{AccessToken: fmt.Sprintf("%s-%d", id, n.Add(1)), ExpiresIn: 100}, nil
			}}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a, _ := m.Token(context.Background(), "a")
	mock.Add(30 * time.Second)
	if again, _ := m.Token(context.Background(), "a"); again.AccessToken != a.AccessToken || again.ExpiresIn != 70 {
		t.Errorf("Token(a) 30s later = %v; want %s with 70s left", again, a.AccessToken)
	}
	if !m.Invalidate("a", a.AccessToken) {
		t.Fatal("Invalidate(a) = false")
	}
	if fresh, _ := m.Token(context.Background(), "a"); fresh.AccessToken == a.AccessToken {
		t.Errorf("after Invalidate, Token(a) = %s; want a fresh one", fresh.AccessToken)
	}
	tok, err := m.TokenSource("b").Token()
	if err != nil || tok.AccessToken == "" || !tok.Valid() {
		t.Errorf("TokenSource(b).Token() = %+v, %v", tok, err)
	}
}
