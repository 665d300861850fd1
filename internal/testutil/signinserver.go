package testutil

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
)

// SignInServer is an authorization server for the sign-in flows, in
// front of a [RefreshServer] whose refresh token families it starts:
//
//   - GET /authorize: the authorization endpoint of the authorization
//     code grant with PKCE (S256 only); it signs in at once the user
//     named by the login_hint parameter ("ann" without one) and
//     redirects to redirect_uri with a code and the state;
//   - POST /device: RFC 8628's device authorization endpoint;
//   - POST /token: the authorization_code grant (one use per code, the
//     code_verifier checked against the challenge), the device_code grant
//     (authorization_pending until [SignInServer.Approve], slow_down
//     while SlowDown is positive), and refresh_token, served by Refresh.
//     Both sign-ins answer with the first refresh of a new family of
//     Refresh (which counts it), so the refresh token they give rotates.
//
// Serve it with httptest.NewServer. It is safe for concurrent use.
type SignInServer struct {
	// Refresh serves the refresh token grant and issues the families.
	Refresh RefreshServer
	// ClientID is the only client accepted; "" accepts any.
	ClientID string
	// Interval is the device flow's polling interval in seconds; 0 means
	// 5. ExpiresIn is the device codes' lifetime; 0 means 600.
	Interval, ExpiresIn int64
	// SlowDown makes the next n polls of a device code answer slow_down.
	SlowDown atomic.Int64

	codeExchanges, polls atomic.Int64

	mu      sync.Mutex
	codes   map[string]*authCode
	devices map[string]*device // by device code
	users   map[string]string  // user code -> device code
	dpopJKT string             // the last authorization request's dpop_jkt
}

type authCode struct {
	challenge, redirectURI, clientID string
	used                             bool
}

type device struct {
	clientID string
	state    string // "pending", "approved", "denied", "expired"
}

func (s *SignInServer) init() {
	if s.codes == nil {
		s.codes = map[string]*authCode{}
		s.devices = map[string]*device{}
		s.users = map[string]string{}
	}
}

// CodeExchanges counts the authorization_code requests, refused or not.
func (s *SignInServer) CodeExchanges() int64 { return s.codeExchanges.Load() }

// Polls counts the device_code requests.
func (s *SignInServer) Polls() int64 { return s.polls.Load() }

// DPoPJKT returns the dpop_jkt of the last authorization request.
func (s *SignInServer) DPoPJKT() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dpopJKT
}

// Approve signs the user in on the device whose user code is userCode;
// Deny refuses; Expire ends the code. Each reports whether the code was
// known.
func (s *SignInServer) Approve(userCode string) bool { return s.setDevice(userCode, "approved") }

// Deny refuses the sign-in of userCode.
func (s *SignInServer) Deny(userCode string) bool { return s.setDevice(userCode, "denied") }

// Expire makes userCode's device code expired.
func (s *SignInServer) Expire(userCode string) bool { return s.setDevice(userCode, "expired") }

func (s *SignInServer) setDevice(userCode, state string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	d, ok := s.devices[s.users[userCode]]
	if ok {
		d.state = state
	}
	return ok
}

// ServeHTTP answers the three endpoints.
func (s *SignInServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/authorize":
		s.authorize(w, r)
	case "/device":
		s.device(w, r)
	case "/token":
		if r.ParseForm() == nil && r.PostForm.Get("grant_type") == "refresh_token" {
			s.Refresh.ServeHTTP(w, r)
			return
		}
		s.token(w, r)
	default:
		http.NotFound(w, r)
	}
}

func answerJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *SignInServer) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Scheme == "" {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	back := redirect.Query()
	back.Set("state", q.Get("state"))
	switch {
	case q.Get("response_type") != "code", s.ClientID != "" && q.Get("client_id") != s.ClientID:
		back.Set("error", "unauthorized_client")
	case q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43:
		back.Set("error", "invalid_request")
		back.Set("error_description", "PKCE with S256 is required")
	default:
		code := "code-" + randomHex()
		s.mu.Lock()
		s.init()
		s.codes[code] = &authCode{challenge: q.Get("code_challenge"), redirectURI: q.Get("redirect_uri"), clientID: q.Get("client_id")}
		s.dpopJKT = q.Get("dpop_jkt")
		s.mu.Unlock()
		back.Set("code", code)
	}
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

func (s *SignInServer) device(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.ParseForm() != nil {
		answerJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	if s.ClientID != "" && r.PostForm.Get("client_id") != s.ClientID {
		answerJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	dc, uc := "dc-"+randomHex(), "UC-"+randomHex()[:8]
	s.mu.Lock()
	s.init()
	s.devices[dc] = &device{clientID: r.PostForm.Get("client_id"), state: "pending"}
	s.users[uc] = dc
	s.mu.Unlock()
	interval, expires := s.Interval, s.ExpiresIn
	if interval == 0 {
		interval = 5
	}
	if expires == 0 {
		expires = 600
	}
	base := "http://" + r.Host + "/activate"
	answerJSON(w, http.StatusOK, map[string]any{"device_code": dc, "user_code": uc, "verification_uri": base,
		"verification_uri_complete": base + "?user_code=" + uc, "expires_in": expires, "interval": interval})
}

func (s *SignInServer) token(w http.ResponseWriter, r *http.Request) {
	refuse := func(code string) { answerJSON(w, http.StatusBadRequest, map[string]string{"error": code}) }
	if r.Method != http.MethodPost || r.ParseForm() != nil {
		refuse("invalid_request")
		return
	}
	f := r.PostForm
	clientID := f.Get("client_id")
	if id, _, ok := r.BasicAuth(); ok {
		clientID = id
	}
	switch f.Get("grant_type") {
	case "authorization_code":
		s.codeExchanges.Add(1)
		s.mu.Lock()
		s.init()
		c, ok := s.codes[f.Get("code")]
		switch {
		case !ok, c.used, c.redirectURI != f.Get("redirect_uri"), c.clientID != clientID:
			s.mu.Unlock()
			refuse("invalid_grant")
			return
		}
		c.used = true // a code is good for one request, right or wrong
		s.mu.Unlock()
		sum := sha256.Sum256([]byte(f.Get("code_verifier")))
		if base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
			refuse("invalid_grant")
			return
		}
	case "urn:ietf:params:oauth:grant-type:device_code":
		s.polls.Add(1)
		if s.SlowDown.Load() > 0 && s.SlowDown.Add(-1) >= 0 {
			refuse("slow_down")
			return
		}
		s.mu.Lock()
		s.init()
		d, ok := s.devices[f.Get("device_code")]
		state := ""
		if ok && d.clientID == clientID {
			state = d.state
			if state == "approved" {
				d.state = "expired" // a device code is exchanged once
			}
		}
		s.mu.Unlock()
		switch state {
		case "":
			refuse("invalid_grant")
			return
		case "pending":
			refuse("authorization_pending")
			return
		case "denied":
			refuse("access_denied")
			return
		case "expired":
			refuse("expired_token")
			return
		}
	default:
		refuse("unsupported_grant_type")
		return
	}
	rt := s.Refresh.Issue()
	// The first access token comes from the family's first refresh, so
	// Refresh counts it and knows it (Live).
	req := &http.Request{Method: http.MethodPost, PostForm: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, Form: url.Values{}}
	s.Refresh.ServeHTTP(w, req)
}
