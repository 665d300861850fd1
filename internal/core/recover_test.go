package core_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/core"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// fakeCall is a core.Call. Its answers are numbered: 0 is the rejected
// answer the recovery starts from, n the answer of the nth resend. It
// records which answers were discarded and what each resend carried.
type fakeCall struct {
	unreplayable string
	prepareErr   error
	// replies[i] is resend i+1's outcome; past its end, resends are
	// rejected.
	replies []reply

	current  int            // the answer in hand; -1 for none
	discards map[int]int    // answer -> times Discard released it
	prepares int            // Prepare calls
	sent     []string       // the token of each resend
	values   map[string]int // header values seen
}

type reply struct {
	status   int
	rejected bool
	nonce    bool // a DPoP nonce request
	err      error
}

var errNoAnswer = errors.New("connection reset")

func (c *fakeCall) Where() string        { return "api.test" }
func (c *fakeCall) Unreplayable() string { return c.unreplayable }

func (c *fakeCall) Prepare() error {
	c.prepares++
	return c.prepareErr
}

func (c *fakeCall) Discard() {
	if c.discards == nil {
		c.discards = map[int]int{}
	}
	c.discards[c.current]++
}

func (c *fakeCall) Resend(token, value string) (int, core.Verdict, error) {
	c.sent = append(c.sent, token)
	if c.values == nil {
		c.values = map[string]int{}
	}
	c.values[value]++
	r := reply{status: 401, rejected: true}
	if i := len(c.sent) - 1; i < len(c.replies) {
		r = c.replies[i]
	}
	c.current = len(c.sent)
	if r.err != nil {
		c.current = -1 // no answer in hand
	}
	v := core.Accepted
	switch {
	case r.nonce:
		v = core.NonceNeeded
	case r.rejected:
		v = core.Rejected
	}
	return r.status, v, r.err
}

var (
	accepted = reply{status: 200}
	rejected = reply{status: 401, rejected: true}
	nonce    = reply{status: 401, rejected: true, nonce: true}
)

func TestRecover(t *testing.T) {
	tests := []struct {
		name     string
		maxTries int // Settings.MaxRecoveryTries; -1: none
		call     fakeCall
		hold     bool  // the actor holds: new tokens keep being rejected
		streak   bool  // the actor counts rejected new tokens
		fetchErr error // the actor's fetches fail
		first    reply // the first answer; the zero value: rejected

		wantErr         error
		wantSent        []string // tokens resent, in order
		wantFetches     int
		wantInvalidated []string
		wantRejected    []string
		wantServed      int
		wantKept        int      // the answer given back; -1 for none
		wantAborted     string   // in RecoveryAborted's message; "" for none
		wantAttempts    int      // RecoveryAborted.Attempts
		wantCached      string   // the cached token afterwards
		wantNonces      int      // DPoPNonceRetried events
		wantTried       []string // tokens of RecoveryTried; nil: wantSent
	}{
		{
			name: "a nonce request resends with the same token", maxTries: 3, first: nonce,
			call:     fakeCall{replies: []reply{accepted}},
			wantSent: []string{"tok-0"}, wantTried: []string{},
			wantKept: 1, wantCached: "tok-0", wantNonces: 1,
		},
		{
			name: "a nonce request needs no recovery try", maxTries: -1, first: nonce,
			call:     fakeCall{replies: []reply{accepted}},
			wantSent: []string{"tok-0"}, wantTried: []string{},
			wantKept: 1, wantCached: "tok-0", wantNonces: 1,
		},
		{
			name: "nonce resends are bounded", maxTries: 3, first: nonce,
			call:     fakeCall{replies: []reply{nonce, nonce, accepted}},
			wantSent: []string{"tok-0", "tok-0"}, wantTried: []string{},
			wantKept: 2, wantCached: "tok-0", wantNonces: 2,
			wantAborted: "asked for a DPoP nonce again after 2 resends", wantAttempts: 2,
		},
		{
			name: "a nonce request after a fresh token", maxTries: 3,
			call:     fakeCall{replies: []reply{nonce, accepted}},
			wantSent: []string{"tok-1", "tok-1"}, wantTried: []string{"tok-1"}, wantFetches: 1,
			wantInvalidated: []string{"tok-0"}, wantKept: 2, wantCached: "tok-1", wantNonces: 1,
		},
		{
			name: "a rejection after a nonce resend", maxTries: 3, first: nonce,
			call:     fakeCall{replies: []reply{rejected, accepted}},
			wantSent: []string{"tok-0", "tok-1"}, wantTried: []string{"tok-1"}, wantFetches: 1,
			wantInvalidated: []string{"tok-0"}, wantKept: 2, wantCached: "tok-1", wantNonces: 1,
		},
		{
			name: "a nonce request of an unreplayable call", maxTries: 3, first: nonce,
			call:        fakeCall{unreplayable: "its body cannot be read again"},
			wantAborted: "its body cannot be read again", wantCached: "tok-0",
		},
		{
			name: "accepted at the first resend", maxTries: 3,
			call:     fakeCall{replies: []reply{accepted}},
			wantSent: []string{"tok-1"}, wantFetches: 1,
			wantInvalidated: []string{"tok-0"}, wantKept: 1, wantCached: "tok-1",
		},
		{
			name: "accepted after two rejections", maxTries: 3,
			call:     fakeCall{replies: []reply{rejected, rejected, accepted}},
			wantSent: []string{"tok-1", "tok-2", "tok-3"}, wantFetches: 3,
			wantInvalidated: []string{"tok-0"}, wantRejected: []string{"tok-1", "tok-2"},
			wantKept: 3, wantCached: "tok-3",
		},
		{
			name: "accepted while the actor counts a streak", maxTries: 3, streak: true,
			call:     fakeCall{replies: []reply{rejected, accepted}},
			wantSent: []string{"tok-1", "tok-2"}, wantFetches: 2,
			wantInvalidated: []string{"tok-0"}, wantRejected: []string{"tok-1"},
			wantServed: 1, wantKept: 2, wantCached: "tok-2",
		},
		{
			name: "gives up after MaxRecoveryTries", maxTries: 2,
			call:     fakeCall{replies: []reply{rejected, rejected, accepted}},
			wantSent: []string{"tok-1", "tok-2"}, wantFetches: 2,
			wantInvalidated: []string{"tok-0"}, wantRejected: []string{"tok-1", "tok-2"},
			wantKept: 2, wantAborted: "all 2 recovery tries were used", wantAttempts: 2,
		},
		{
			name: "no tries allowed", maxTries: -1,
			wantInvalidated: []string{"tok-0"},
			wantAborted:     "no recovery tries are allowed",
		},
		{
			name: "never resends an unreplayable call", maxTries: 3,
			call:            fakeCall{unreplayable: "its body cannot be read again", replies: []reply{accepted}},
			wantInvalidated: []string{"tok-0"},
			wantAborted:     "its body cannot be read again",
		},
		{
			name: "the hold answers at once without a fetch", maxTries: 3, hold: true,
			call:        fakeCall{replies: []reply{accepted}},
			wantAborted: "new tokens keep being rejected", wantCached: "tok-0",
		},
		{
			name: "no fresh token", maxTries: 3, fetchErr: errors.New("token endpoint down"),
			call:            fakeCall{replies: []reply{accepted}},
			wantFetches:     1,
			wantInvalidated: []string{"tok-0"},
			wantAborted:     "no fresh token or body: token endpoint down",
		},
		{
			name: "the body cannot be prepared", maxTries: 3,
			call:            fakeCall{prepareErr: errors.New("GetBody failed"), replies: []reply{accepted}},
			wantFetches:     1,
			wantInvalidated: []string{"tok-0"},
			wantAborted:     "no fresh token or body: GetBody failed", wantCached: "tok-1",
		},
		{
			name: "a resend without an answer", maxTries: 3,
			call:    fakeCall{replies: []reply{{err: errNoAnswer}}},
			wantErr: errNoAnswer, wantSent: []string{"tok-1"}, wantFetches: 1, wantKept: -1,
			wantInvalidated: []string{"tok-0"}, wantCached: "tok-1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tokenmanager.Settings{MaxRecoveryTries: tt.maxTries}, false)
			f.a.fail = tt.fetchErr
			f.cache("tok-0")
			if tt.hold {
				f.b.H.SetHoldUntil(f.clk.Now().Add(time.Minute))
			}
			f.b.H.SetStreak(tt.streak)
			call := tt.call

			first := tt.first
			if first == (reply{}) {
				first = rejected
			}
			v := core.Rejected
			if first.nonce {
				v = core.NonceNeeded
			}
			err := f.c.Recover(context.Background(), f.b, &call, "tok-0", "Bearer tok-0", 401, v)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Errorf("Recover = %v; want %v", err, tt.wantErr)
			}
			f.sync()  // the fake has handled every message
			f.close() // the events are delivered

			if !equal(call.sent, tt.wantSent) {
				t.Errorf("resent with %q; want %q", call.sent, tt.wantSent)
			}
			for tok, n := range call.values {
				if !strings.HasPrefix(tok, "Bearer tok-") || (n != 1 && tt.wantNonces == 0) {
					t.Errorf("header value %q sent %d times; want a fresh bearer token once each", tok, n)
				}
			}
			// Every answer but the one given back is discarded, once; the
			// one given back is not.
			if call.current != tt.wantKept {
				t.Errorf("answer %d given back; want %d", call.current, tt.wantKept)
			}
			for i := 0; i <= len(call.sent); i++ {
				want := 1
				if i == call.current || (i == len(call.sent) && call.current == -1) {
					want = 0
				}
				if got := call.discards[i]; got != want {
					t.Errorf("answer %d discarded %d times; want %d", i, got, want)
				}
			}
			if call.prepares != len(call.sent)+boolInt(call.prepareErr != nil) {
				t.Errorf("Prepare called %d times for %d resends", call.prepares, len(call.sent))
			}
			fetches, invalidated, rejected, served := f.a.record()
			if fetches != tt.wantFetches {
				t.Errorf("fetches = %d; want %d", fetches, tt.wantFetches)
			}
			if !equal(invalidated, tt.wantInvalidated) {
				t.Errorf("Invalidate sent for %q; want %q", invalidated, tt.wantInvalidated)
			}
			if !equal(rejected, tt.wantRejected) {
				t.Errorf("Rejected sent for %q; want %q", rejected, tt.wantRejected)
			}
			if served != tt.wantServed {
				t.Errorf("Served sent %d times; want %d", served, tt.wantServed)
			}
			if got := f.cached(); got != tt.wantCached {
				t.Errorf("cached token = %q; want %q", got, tt.wantCached)
			}

			authFailed := testutil.EventsOf[messages.AuthFailed](f.ev)
			want := 1 + len(tt.wantRejected)
			if first.nonce {
				want = len(tt.wantInvalidated) + len(tt.wantRejected)
			}
			if len(authFailed) != want {
				t.Errorf("%d AuthFailed events; want %d", len(authFailed), want)
			}
			for _, e := range authFailed {
				if e.Identity != "tenant" || e.Host != "api.test" || e.Status != 401 {
					t.Errorf("AuthFailed = %+v; want identity tenant, host api.test, status 401", e)
				}
			}
			wantTried := tt.wantTried
			if wantTried == nil {
				wantTried = tt.wantSent
			}
			tried := testutil.EventsOf[messages.RecoveryTried](f.ev)
			if len(tried) != len(wantTried) {
				t.Errorf("%d RecoveryTried events; want %d", len(tried), len(wantTried))
			}
			for i, e := range tried {
				if i < len(wantTried) && (e.Attempt != i+1 || e.Fingerprint != tokenmanager.Fingerprint(wantTried[i])) {
					t.Errorf("RecoveryTried %d = %+v; want attempt %d with %s's fingerprint", i, e, i+1, wantTried[i])
				}
			}
			nonces := testutil.EventsOf[messages.DPoPNonceRetried](f.ev)
			if len(nonces) != tt.wantNonces {
				t.Errorf("%d DPoPNonceRetried events; want %d", len(nonces), tt.wantNonces)
			}
			for i, e := range nonces {
				if e.Attempt != i+1 || e.Host != "api.test" || e.Identity != "tenant" {
					t.Errorf("DPoPNonceRetried %d = %+v; want attempt %d to api.test for tenant", i, e, i+1)
				}
			}
			aborted := testutil.EventsOf[messages.RecoveryAborted](f.ev)
			switch {
			case tt.wantAborted == "" && len(aborted) != 0:
				t.Errorf("RecoveryAborted = %+v; want none", aborted)
			case tt.wantAborted != "" && len(aborted) != 1:
				t.Errorf("%d RecoveryAborted events; want 1", len(aborted))
			case tt.wantAborted != "":
				e := aborted[0]
				if !strings.Contains(e.Message, tt.wantAborted) || e.Attempts != tt.wantAttempts || e.Status != 401 {
					t.Errorf("RecoveryAborted = %+v; want %d attempts, status 401, message with %q", e, tt.wantAttempts, tt.wantAborted)
				}
			}
			for _, ev := range f.ev.All() {
				if s := fmt.Sprintf("%+v", ev); strings.Contains(s, "tok-") {
					t.Errorf("event %s holds a token", s)
				}
			}
		})
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Invalidate, for a rejection outside any call the core runs, withdraws
// the token and tells the actor, unless the actor holds.
func TestInvalidate(t *testing.T) {
	tests := []struct {
		name         string
		hold         bool
		token        string // the rejected token
		where        string
		want         bool
		wantRejected []string
		wantCached   string
		wantEvents   int // AuthFailed
	}{
		{name: "the cached token", token: "tok-0", where: "/svc/Method", want: true, wantRejected: []string{"tok-0"}, wantEvents: 1},
		{name: "an older token", token: "old", want: true, wantRejected: []string{"old"}, wantCached: "tok-0"},
		{name: "while the actor holds", hold: true, token: "tok-0", where: "/svc/Method", wantCached: "tok-0", wantEvents: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tokenmanager.Settings{}, false)
			f.cache("tok-0")
			if tt.hold {
				f.b.H.SetHoldUntil(f.clk.Now().Add(time.Minute))
			}
			if got := f.c.Invalidate(f.b, tt.token, tt.where, 16); got != tt.want {
				t.Errorf("Invalidate = %v; want %v", got, tt.want)
			}
			if got := f.cached(); got != tt.wantCached {
				t.Errorf("cached token right after Invalidate = %q; want %q", got, tt.wantCached)
			}
			f.sync()
			f.close()
			if _, _, rejected, _ := f.a.record(); !equal(rejected, tt.wantRejected) {
				t.Errorf("Rejected sent for %q; want %q", rejected, tt.wantRejected)
			}
			if got := len(testutil.EventsOf[messages.AuthFailed](f.ev)); got != tt.wantEvents {
				t.Errorf("%d AuthFailed events; want %d", got, tt.wantEvents)
			}
		})
	}
}

// HeaderValue formats a token once and contains a panicking Formatter.
func TestHeaderValue(t *testing.T) {
	calls := 0
	f := newFixture(t, tokenmanager.Settings{Formatter: func(tok string) string {
		calls++
		if tok == "boom" {
			panic("formatter " + tok)
		}
		return "Key " + tok
	}}, false)
	for range 3 {
		if v, err := f.c.HeaderValue(f.b, tokenmanager.Token{AccessToken: "tok-1"}); v != "Key tok-1" || err != nil {
			t.Fatalf("HeaderValue = %q, %v; want Key tok-1", v, err)
		}
	}
	if calls != 1 {
		t.Errorf("Formatter called %d times for one token; want 1", calls)
	}
	if v, err := f.c.HeaderValue(f.b, tokenmanager.Token{AccessToken: "boom"}); err == nil || strings.Contains(err.Error(), "boom") {
		t.Errorf("HeaderValue with a panicking Formatter = %q, %v; want an error without the token", v, err)
	}
}
