package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/users"
)

// RefreshServer is a token endpoint for the refresh token grant with
// rotation and reuse detection, as careful authorization servers do it
// (OAuth 2.0 Security BCP §4.14): every refresh spends the refresh token
// and issues a new one of the same family; presenting a spent token
// revokes the whole family, so the thief and the victim both lose it.
// Serve it with httptest.NewServer. It is safe for concurrent use.
type RefreshServer struct {
	// NoRotation makes it answer without a new refresh token; the
	// presented one stays valid.
	NoRotation bool
	// Grace accepts a spent refresh token again, as a server's grace
	// period (reuse interval) does for a while after a rotation.
	Grace bool
	// ExpiresIn is the access tokens' lifetime in seconds; 0 means 3600.
	ExpiresIn int64

	refreshes atomic.Int64
	reuses    atomic.Int64

	mu       sync.Mutex
	tokens   map[string]*rtState  // every refresh token ever issued
	failNext []int                // statuses to answer next, in order
	access   map[string]accessTok // access tokens issued
}

type rtState struct {
	family   *family
	spent    bool
	issuedTo string    // the User-Agent of the refresh that issued it
	issuedAt time.Time // when (wall clock)
}

type accessTok struct {
	family   *family
	issuedAt time.Time
}

type family struct {
	revoked     bool
	refreshes   int64
	first, last time.Time // of its refreshes (wall clock)
	newest      string    // its newest refresh token
}

// Family is what a RefreshServer knows of one family of refresh tokens
// (one user's grant).
type Family struct {
	// Refreshes counts the refreshes that issued a token.
	Refreshes int64
	// First and Last are when the first and the last of them were
	// answered (wall clock).
	First, Last time.Time
	// Revoked says a spent token was presented again.
	Revoked bool
	// Newest is the newest refresh token issued: the one to present
	// next unless Revoked. IssuedTo is the User-Agent of the refresh
	// that got it, IssuedAt when.
	Newest   string
	IssuedTo string
	IssuedAt time.Time
}

// Family returns the family of the refresh token rt (any of its tokens);
// ok is false for a token it never issued.
func (s *RefreshServer) Family(rt string) (f Family, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	st, ok := s.tokens[rt]
	if !ok {
		return Family{}, false
	}
	fam := st.family
	newest := s.tokens[fam.newest]
	return Family{
		Refreshes: fam.refreshes, First: fam.first, Last: fam.last, Revoked: fam.revoked,
		Newest: fam.newest, IssuedTo: newest.issuedTo, IssuedAt: newest.issuedAt,
	}, true
}

// Issue starts a family and returns its first refresh token, as a sign
// in would.
func (s *RefreshServer) Issue() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := "rt-" + randomHex()
	s.init()
	s.tokens[rt] = &rtState{family: &family{newest: rt}, issuedAt: time.Now()}
	return rt
}

func (s *RefreshServer) init() {
	if s.tokens == nil {
		s.tokens = map[string]*rtState{}
		s.access = map[string]accessTok{}
	}
}

// FailNext makes the next refreshes fail with these statuses (500,
// 503, ...) before the refresh token is looked at.
func (s *RefreshServer) FailNext(statuses ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = append(s.failNext, statuses...)
}

// Refreshes counts the refresh requests that issued a token.
func (s *RefreshServer) Refreshes() int64 { return s.refreshes.Load() }

// Reuses counts the spent refresh tokens presented again (each revoked
// its family).
func (s *RefreshServer) Reuses() int64 { return s.reuses.Load() }

// Live reports whether accessToken was issued and its family is not
// revoked.
func (s *RefreshServer) Live(accessToken string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.access[accessToken]
	return ok && !a.family.revoked
}

// Valid reports whether accessToken is live and, at now, not past its
// lifetime (ExpiresIn from when it was issued, wall clock).
func (s *RefreshServer) Valid(accessToken string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.access[accessToken]
	return ok && !a.family.revoked && now.Before(a.issuedAt.Add(time.Duration(s.expiresIn())*time.Second))
}

// ServeHTTP answers token requests.
func (s *RefreshServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	answer := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	refuse := func(code string) { answer(http.StatusBadRequest, map[string]string{"error": code}) }
	if r.Method != http.MethodPost || r.ParseForm() != nil {
		refuse("invalid_request")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	if len(s.failNext) > 0 {
		status := s.failNext[0]
		s.failNext = s.failNext[1:]
		answer(status, map[string]string{"error": "server_error"})
		return
	}
	if r.PostForm.Get("grant_type") != "refresh_token" {
		refuse("unsupported_grant_type")
		return
	}
	st, ok := s.tokens[r.PostForm.Get("refresh_token")]
	switch {
	case !ok, st.family.revoked:
		refuse("invalid_grant")
		return
	case st.spent && !s.Grace:
		s.reuses.Add(1)
		st.family.revoked = true // its access tokens too (Live)
		refuse("invalid_grant")
		return
	}
	s.refreshes.Add(1)
	now := time.Now()
	fam := st.family
	fam.refreshes++
	if fam.first.IsZero() {
		fam.first = now
	}
	fam.last = now
	at := "at-" + randomHex()
	s.access[at] = accessTok{family: fam, issuedAt: now}
	resp := map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": s.expiresIn()}
	if !s.NoRotation {
		st.spent = true
		next := "rt-" + randomHex()
		s.tokens[next] = &rtState{family: fam, issuedTo: r.UserAgent(), issuedAt: now}
		fam.newest = next
		resp["refresh_token"] = next
	}
	answer(http.StatusOK, resp)
}

func (s *RefreshServer) expiresIn() int64 {
	if s.ExpiresIn == 0 {
		return 3600
	}
	return s.ExpiresIn
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Burst calls get from n goroutines at once, as n requests arriving
// together, and fails the test for each error.
func Burst(t testing.TB, n int, get func(context.Context) (tokenmanager.Token, error)) {
	t.Helper()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := get(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// OpenFileStore opens the refresh-token store file at path, closed when
// the test ends.
func OpenFileStore(t testing.TB, path string) *users.FileStore {
	t.Helper()
	s, err := users.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
