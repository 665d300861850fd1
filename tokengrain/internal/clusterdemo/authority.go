// Package clusterdemo runs package tokengrain across real processes on
// 127.0.0.1, for tokengrain's tests and examples/cluster: an [Authority]
// (a loopback token endpoint and an API that checks its tokens), the
// member process ([RunMemberIfChild], called first thing in a test
// binary's TestMain or a command's main), and the parent's handling of
// members ([Start], [Wait], [Member]).
//
// A parent starts members by running its own executable again with
// [MemberEnv] and the rest of the configuration in the environment. Each
// member joins an automanaged cluster on 127.0.0.1 (or, in [Direct] mode,
// fetches tokens on its own), sends requests to the API from several
// workers until its run ends, and reports on stdout, one line each:
//
//	READY                 the member is set up and waits for the start
//	HOSTED <identity>     the identity's grain was activated here
//	PROGRESS {json}       requests so far, each second (Config.Progress)
//	STATS {json}          the member's figures, when its run is over
//
// Any other line (protoactor's automanaged provider prints one of its
// own) is kept but otherwise ignored.
//
// Nothing here depends on package testing: failures come back as errors.
package clusterdemo

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// Authority is the loopback identity provider and API the members share:
// the token endpoint issues tok-1, tok-2, ... with the current lifetime,
// and the API accepts a token it issued that has neither expired nor been
// revoked. Its methods are safe for concurrent use.
type Authority struct {
	token, api *httptest.Server

	mu       sync.Mutex
	lifetime time.Duration
	issued   map[string]time.Time // token -> expiry
	fetches  []time.Time          // when each token was issued
	accepted map[string]bool      // tokens the API accepted
}

// NewAuthority starts a token endpoint issuing tokens that live for
// lifetime, and the API that checks them. Close it when done.
func NewAuthority(lifetime time.Duration) *Authority {
	a := &Authority{lifetime: lifetime, issued: map[string]time.Time{}, accepted: map[string]bool{}}
	a.token = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.fetches = append(a.fetches, time.Now())
		tok := fmt.Sprintf("tok-%d", len(a.fetches))
		a.issued[tok] = time.Now().Add(a.lifetime)
		life := a.lifetime
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":%d}`, tok, int(life/time.Second))
	}))
	a.api = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		a.mu.Lock()
		exp, ok := a.issued[tok]
		ok = ok && time.Now().Before(exp)
		if ok {
			a.accepted[tok] = true
		}
		a.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	return a
}

// Close shuts the API and the token endpoint down.
func (a *Authority) Close() {
	a.api.Close()
	a.token.Close()
}

// TokenURL is the token endpoint's address (client credentials grant).
func (a *Authority) TokenURL() string { return a.token.URL + "/token" }

// APIURL is the address of the API the members call.
func (a *Authority) APIURL() string { return a.api.URL + "/orders" }

// SetLifetime sets the lifetime of the tokens issued from now on.
func (a *Authority) SetLifetime(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lifetime = d
}

// RevokeAll makes the API reject every token issued so far.
func (a *Authority) RevokeAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.issued)
}

// FetchesBetween counts the tokens issued in [from, to).
func (a *Authority) FetchesBetween(from, to time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, at := range a.fetches {
		if !at.Before(from) && at.Before(to) {
			n++
		}
	}
	return n
}

// Counts returns the number of tokens issued so far (calls of the token
// endpoint) and the number of distinct tokens the API accepted.
func (a *Authority) Counts() (fetches, accepted int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.fetches), len(a.accepted)
}

// Tokens returns every token issued so far.
func (a *Authority) Tokens() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, len(a.fetches))
	for i := range out {
		out[i] = fmt.Sprintf("tok-%d", i+1)
	}
	return out
}
