package tests

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// secretPrefix starts every access token in these tests.
const secretPrefix = "s3cr3t-"

// texts collects every string the library hands out: callback messages,
// errors and events, each formatted every way a logger might.
type texts struct {
	mu  sync.Mutex
	all []string
}

func (x *texts) add(format string, v any) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.all = append(x.all, fmt.Sprintf(format, v))
}

func (x *texts) addAll(v any) {
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		x.add(format, v)
	}
}

func (x *texts) snapshot() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]string(nil), x.all...)
}

func TestSecrets_tokenNeverLoggedByDefault(t *testing.T) {
	mock := clock.NewMock()
	p := &testutil.Provider{Prefix: secretPrefix, ExpiresIn: 3600}
	// The first fetch returns an unusable token that still holds a secret.
	var first sync.Once
	getCredentials := func(ctx context.Context) (tokenmanager.Token, error) {
		var bad bool
		first.Do(func() { bad = true })
		if bad {
			return tokenmanager.Token{AccessToken: secretPrefix + "bad\r\n", ExpiresIn: 3600}, nil
		}
		return p.Get(ctx)
	}
	var seen texts
	b := &testutil.Backend{}
	rt := testutil.NewRT(t, tokenmanager.Settings{
		GetCredentials:      getCredentials,
		Clock:               mock,
		MaxRecoveryTries:    1,
		TokenTryThreshold:   1,
		RetryBaseDelay:      time.Second,
		RetryMaxDelay:       time.Second,
		WaitTimeout:         50 * time.Millisecond,
		OnTokenRefresh:      func(m string) { seen.add("%s", m) },
		OnAuthFail:          func(m string) { seen.add("%s", m) },
		OnTokenRequestFail:  func(err error) { seen.addAll(err) },
		OnRecoveryTry:       func(m string) { seen.add("%s", m) },
		OnTokenTryThreshold: func(n int) { seen.add("%d", n) },
		OnRecoveryAbort:     func(m string) { seen.add("%s", m) },
	}, b)
	rec := testutil.Record(t, rt)

	// An invalid token (an error), then a good one after the backoff.
	if r := send(context.Background(), rt, ""); r.err != nil {
		seen.addAll(r.err)
	}
	// The invalid token is a permanent failure: requests during its
	// backoff fail at once, so the clock moves past it before the next.
	mock.Add(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience)
	r := send(ctx, rt, "")
	cancel()
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("status %d, err %v; want 200", r.status, r.err)
	}
	// A revocation, recovered; a rejection with recovery used up.
	b.Revoke(strings.TrimPrefix(r.auth, "Bearer "))
	mustOK(t, rt)
	b.SetStatus(http.StatusUnauthorized)
	send(context.Background(), rt, "")
	// A failing endpoint, waited on until WaitTimeout.
	p.Always.Store(true)
	if r := send(context.Background(), rt, ""); r.err != nil {
		seen.addAll(r.err)
	}
	if _, err := rt.Token(context.Background()); err != nil {
		seen.addAll(err)
	}

	for _, want := range []func(){
		func() { testutil.WaitEvents[messages.TokenRefreshed](t, rec, 2) },
		func() { testutil.WaitEvents[messages.AuthFailed](t, rec, 3) },
		func() { testutil.WaitEvents[messages.RecoveryTried](t, rec, 2) },
		func() { testutil.WaitEvents[messages.RecoveryAborted](t, rec, 1) },
		func() { testutil.WaitEvents[messages.TokenRequestFailed](t, rec, 2) },
		func() { testutil.WaitEvents[messages.TokenTryThresholdReached](t, rec, 2) },
	} {
		want()
	}
	time.Sleep(20 * time.Millisecond) // let the callbacks catch up
	for _, ev := range rec.All() {
		seen.addAll(ev)
	}
	all := seen.snapshot()
	if len(all) < 30 {
		t.Fatalf("only %d texts collected; the scenario did not run", len(all))
	}
	for _, s := range all {
		if strings.Contains(s, secretPrefix) {
			t.Errorf("with AddTokenToLogs false, the token leaked into: %s", s)
		}
	}
}

func TestSecrets_tokenLoggedWhenAsked(t *testing.T) {
	p := &testutil.Provider{Prefix: secretPrefix, ExpiresIn: 3600}
	var mu sync.Mutex
	callbacks := map[string][]string{}
	note := func(name string) func(string) {
		return func(m string) {
			mu.Lock()
			defer mu.Unlock()
			callbacks[name] = append(callbacks[name], m)
		}
	}
	b := &testutil.Backend{}
	rt := testutil.NewRT(t, tokenmanager.Settings{
		GetCredentials: p.Get,
		Clock:          clock.NewMock(),
		AddTokenToLogs: true,
		OnTokenRefresh: note("OnTokenRefresh"),
		OnAuthFail:     note("OnAuthFail"),
		OnRecoveryTry:  note("OnRecoveryTry"),
	}, b)
	rec := testutil.Record(t, rt)

	mustOK(t, rt)
	b.Revoke(secretPrefix + "1")
	mustOK(t, rt)

	refreshed := testutil.WaitEvents[messages.TokenRefreshed](t, rec, 2)
	for i, e := range refreshed {
		if want := fmt.Sprint(secretPrefix, i+1); !strings.Contains(e.Message, want) {
			t.Errorf("TokenRefreshed.Message = %q; want it to hold %q", e.Message, want)
		}
	}
	if e := testutil.WaitEvents[messages.AuthFailed](t, rec, 1)[0]; !strings.Contains(e.Message, secretPrefix+"1") {
		t.Errorf("AuthFailed.Message = %q; want it to hold the rejected token", e.Message)
	}
	if e := testutil.WaitEvents[messages.RecoveryTried](t, rec, 1)[0]; !strings.Contains(e.Message, secretPrefix+"2") {
		t.Errorf("RecoveryTried.Message = %q; want it to hold the fresh token", e.Message)
	}
	testutil.Eventually(t, "the callbacks", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(callbacks["OnTokenRefresh"]) == 2 && len(callbacks["OnAuthFail"]) == 1 && len(callbacks["OnRecoveryTry"]) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	for name, msgs := range callbacks {
		for _, m := range msgs {
			if !strings.Contains(m, secretPrefix) {
				t.Errorf("%s message %q does not hold the token", name, m)
			}
		}
	}
}
