package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

func TestRecovery_capPerRequestUnderConcurrency(t *testing.T) {
	const (
		requests = 20
		maxTries = 3
	)
	p := &testutil.Provider{ExpiresIn: 3600}
	b := &testutil.Backend{Status: http.StatusUnauthorized}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get, MaxRecoveryTries: maxTries}, b)
	rec := testutil.Record(t, rt)

	results := concurrently(requests, func(i int) result {
		return send(context.Background(), rt, fmt.Sprint("r", i))
	})
	for i, r := range results {
		want := fmt.Sprintf("status 401 for %q", fmt.Sprint("r", i))
		if r.err != nil || r.status != http.StatusUnauthorized || r.body != want {
			t.Errorf("request r%d: status %d, body %q, err %v; want the last 401 with body %q", i, r.status, r.body, r.err, want)
		}
	}
	sends := map[string]int{}
	for _, s := range b.Requests() {
		sends[s.ID]++
	}
	for i := range requests {
		if got := sends[fmt.Sprint("r", i)]; got != 1+maxTries {
			t.Errorf("request r%d was sent %d times; want %d (1 + MaxRecoveryTries)", i, got, 1+maxTries)
		}
	}
	aborted := testutil.WaitEvents[messages.RecoveryAborted](t, rec, requests)
	for _, e := range aborted {
		if e.Attempts != maxTries || e.Status != http.StatusUnauthorized {
			t.Errorf("RecoveryAborted{Attempts: %d, Status: %d}; want {%d, 401}", e.Attempts, e.Status, maxTries)
		}
	}
	testutil.WaitEvents[messages.RecoveryTried](t, rec, requests*maxTries)
	testutil.Stays(t, "one RecoveryAborted per request", func() bool {
		return len(testutil.EventsOf[messages.RecoveryAborted](rec)) == requests &&
			len(testutil.EventsOf[messages.RecoveryTried](rec)) == requests*maxTries
	})
	// Every response the backend gave was closed exactly once; the
	// discarded ones were drained first.
	for i, body := range b.ResponseBodies() {
		if n := body.Closes(); n != 1 {
			t.Errorf("response %d closed %d times; want 1", i, n)
		}
		if !body.EOF() {
			t.Errorf("response %d was not drained", i)
		}
	}
}

func TestRecovery_abortInvalidatesCarriedToken(t *testing.T) {
	for _, tt := range []struct {
		maxTries     int
		wantAttempts int
	}{{-1, 0}, {2, 2}} {
		t.Run(fmt.Sprint("MaxRecoveryTries=", tt.maxTries), func(t *testing.T) {
			p := &testutil.Provider{ExpiresIn: 3600}
			b := &testutil.Backend{Status: http.StatusUnauthorized}
			rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get, MaxRecoveryTries: tt.maxTries}, b)
			rec := testutil.Record(t, rt)

			r := send(context.Background(), rt, "doomed")
			if r.err != nil || r.status != http.StatusUnauthorized {
				t.Fatalf("status %d, err %v; want 401", r.status, r.err)
			}
			if got := len(b.Requests()); got != 1+tt.wantAttempts {
				t.Errorf("sends = %d; want %d", got, 1+tt.wantAttempts)
			}
			if e := testutil.WaitEvents[messages.RecoveryAborted](t, rec, 1)[0]; e.Attempts != tt.wantAttempts {
				t.Errorf("RecoveryAborted.Attempts = %d; want %d", e.Attempts, tt.wantAttempts)
			}
			lastAuth := b.Requests()[len(b.Requests())-1].Auth

			// The invalidation reaches the actor as a message; soon after,
			// no request carries the rejected token any more.
			b.SetStatus(0)
			testutil.Eventually(t, "a request without the rejected token", func() bool { return mustOK(t, rt).auth != lastAuth })
		})
	}
}

// A caller whose request came back rejected (recovery used up) and who sends
// the next request right away must not have it go out with the token that
// was just rejected, even when the token actor is busy.
func TestRecovery_abortedTokenNotReusedWhileActorBusy(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	system := testutil.NewSystem(t)
	pid := spawn(t, system, tokenmanager.Settings{GetCredentials: p.Get, Clock: clock.NewMock()})
	b := &testutil.Backend{Status: http.StatusUnauthorized}
	rt, err := transport.NewFromActor(system, pid, tokenmanager.Settings{MaxRecoveryTries: -1}, transport.WithBase(b))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if _, err := rt.Token(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Keep the actor busy with harmless messages.
	for range 200_000 {
		system.Root.Send(pid, messages.Invalidate{AccessToken: "not-the-cached-token"})
	}
	if r := send(context.Background(), rt, "rejected"); r.status != http.StatusUnauthorized {
		t.Fatalf("status %d, err %v; want 401", r.status, r.err)
	}
	b.SetStatus(0)
	if r := send(context.Background(), rt, "next"); r.auth == "Bearer tok-1" {
		t.Errorf("the request after a rejected one went out with the rejected token %q", r.auth)
	}
}

func TestRecovery_onlyStatusesInRefreshOnStatus(t *testing.T) {
	tests := []struct {
		name       string
		reject     int
		onStatus   []int
		wantStatus int
		wantSends  int
	}{
		{"403 listed", http.StatusForbidden, []int{403}, http.StatusOK, 2},
		{"401 not listed", http.StatusUnauthorized, []int{403}, http.StatusUnauthorized, 1},
		{"default 401", http.StatusUnauthorized, nil, http.StatusOK, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &testutil.Provider{ExpiresIn: 3600}
			b := &testutil.Backend{Reject: tt.reject}
			rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get, RefreshOnStatus: tt.onStatus}, b)
			mustOK(t, rt)
			b.Revoke("tok-1")
			r := send(context.Background(), rt, "x")
			if r.err != nil || r.status != tt.wantStatus {
				t.Errorf("status %d, err %v; want %d", r.status, r.err, tt.wantStatus)
			}
			if got := len(b.Requests()) - 1; got != tt.wantSends {
				t.Errorf("sends = %d; want %d", got, tt.wantSends)
			}
		})
	}
}

func TestBodyReplay_fullBodyResent(t *testing.T) {
	payload := strings.Repeat("0123456789abcdef", 8<<10) // 128 KiB
	bodies := map[string]func() io.Reader{
		"strings.Reader": func() io.Reader { return strings.NewReader(payload) },
		"bytes.Reader":   func() io.Reader { return bytes.NewReader([]byte(payload)) },
		"bytes.Buffer":   func() io.Reader { return bytes.NewBufferString(payload) },
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			p := &testutil.Provider{ExpiresIn: 3600}
			b := &testutil.Backend{}
			rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, b)
			mustOK(t, rt)
			b.Revoke("tok-1")

			req, _ := http.NewRequest(http.MethodPost, apiURL, body())
			req.Header.Set("X-Request-Id", "post")
			r := finish(rt.RoundTrip(req))
			if r.err != nil || r.status != http.StatusOK {
				t.Fatalf("status %d, err %v; want 200 after recovery", r.status, r.err)
			}
			var got []testutil.Sent
			for _, s := range b.Requests() {
				if s.ID == "post" {
					got = append(got, s)
				}
			}
			if len(got) != 2 {
				t.Fatalf("backend saw the POST %d times; want 2", len(got))
			}
			for i, s := range got {
				if s.Body != payload {
					t.Errorf("send %d carried %d body bytes; want all %d", i+1, len(s.Body), len(payload))
				}
			}
		})
	}
}

// onceReader hides strings.Reader from http.NewRequest, so GetBody stays nil.
type onceReader struct{ io.Reader }

func TestBodyReplay_unreplayableNeverResentEmpty(t *testing.T) {
	tests := []struct {
		name    string
		request func() *http.Request
	}{
		{"no GetBody", func() *http.Request {
			req, _ := http.NewRequest(http.MethodPost, apiURL, onceReader{strings.NewReader("payload")})
			return req
		}},
		{"GetBody fails", func() *http.Request {
			req, _ := http.NewRequest(http.MethodPost, apiURL, strings.NewReader("payload"))
			req.GetBody = func() (io.ReadCloser, error) { return nil, errors.New("body is gone") }
			return req
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &testutil.Provider{ExpiresIn: 3600}
			b := &testutil.Backend{}
			rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, b)
			rec := testutil.Record(t, rt)
			mustOK(t, rt)
			b.Revoke("tok-1")

			r := finish(rt.RoundTrip(tt.request()))
			for i, s := range b.Requests()[1:] {
				if s.Body != "payload" {
					t.Errorf("send %d of the POST carried body %q; want %q or no send", i+1, s.Body, "payload")
				}
			}
			if r.err == nil && r.status != http.StatusUnauthorized && r.status != http.StatusOK {
				t.Errorf("status %d; want the 401 (or an error)", r.status)
			}
			if tt.name == "no GetBody" {
				if r.err != nil || r.status != http.StatusUnauthorized {
					t.Errorf("status %d, err %v; want the 401 given back", r.status, r.err)
				}
				if got := len(b.Requests()) - 1; got != 1 {
					t.Errorf("the POST was sent %d times; want once", got)
				}
				if msg := testutil.WaitEvents[messages.RecoveryAborted](t, rec, 1)[0].Message; msg == "" {
					t.Error("RecoveryAborted has no message")
				}
			}
			// The rejected token is gone all the same.
			if got := mustOK(t, rt).auth; got != "Bearer tok-2" {
				t.Errorf("the next request carried %q; want tok-2", got)
			}
		})
	}
}

// requestState is what a caller may see of its request after RoundTrip.
type requestState struct {
	Method        string
	URL           string
	URLPtr        any
	URLValue      any
	Header        http.Header
	Body          io.ReadCloser
	HasGetBody    bool
	ContentLength int64
	Host          string
	Ctx           context.Context
}

func stateOf(req *http.Request) requestState {
	return requestState{
		Method:        req.Method,
		URL:           req.URL.String(),
		URLPtr:        req.URL,
		URLValue:      *req.URL,
		Header:        req.Header.Clone(),
		Body:          req.Body,
		HasGetBody:    req.GetBody != nil,
		ContentLength: req.ContentLength,
		Host:          req.Host,
		Ctx:           req.Context(),
	}
}

func TestRoundTrip_leavesCallerRequestAlone(t *testing.T) {
	for _, revoked := range []bool{false, true} {
		t.Run(fmt.Sprint("recovery=", revoked), func(t *testing.T) {
			p := &testutil.Provider{ExpiresIn: 3600}
			b := &testutil.Backend{}
			rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, b)
			mustOK(t, rt)
			if revoked {
				b.Revoke("tok-1")
			}
			req, _ := http.NewRequest(http.MethodPost, apiURL+"?q=1", strings.NewReader("payload"))
			req.Header.Set("X-Trace", "abc")
			req.Header.Set("Authorization", "Basic caller")
			before := stateOf(req)

			r := finish(rt.RoundTrip(req))
			if r.err != nil || r.status != http.StatusOK {
				t.Fatalf("status %d, err %v; want 200", r.status, r.err)
			}
			if after := stateOf(req); !reflect.DeepEqual(before, after) {
				t.Errorf("the caller's request changed:\nbefore %+v\nafter  %+v", before, after)
			}
			if got := b.Requests()[len(b.Requests())-1].Auth; !strings.HasPrefix(got, "Bearer tok-") {
				t.Errorf("the backend saw Authorization %q; want the managed token", got)
			}
		})
	}
}

// A request built by hand may have a nil Header; http.Transport accepts it,
// and so must a RoundTripper placed in front of one, without filling in the
// caller's request.
func TestRoundTrip_requestWithNilHeader(t *testing.T) {
	p := &testutil.Provider{ExpiresIn: 3600}
	b := &testutil.Backend{}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, b)
	u, _ := url.Parse(apiURL)
	req := (&http.Request{Method: http.MethodGet, URL: u}).WithContext(context.Background())

	r := func() (r result) {
		defer func() {
			if v := recover(); v != nil {
				r.err = fmt.Errorf("RoundTrip panicked: %v", v)
			}
		}()
		return finish(rt.RoundTrip(req))
	}()
	if r.err != nil || r.status != http.StatusOK || r.auth != "Bearer tok-1" {
		t.Errorf("status %d, auth %q, err %v; want 200 with tok-1", r.status, r.auth, r.err)
	}
	if req.Header != nil {
		t.Errorf("the caller's nil Header became %v", req.Header)
	}
}
