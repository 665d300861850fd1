package testutil

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// Backend is an in-memory base RoundTripper standing in for an API; it
// dials nothing. It reads the token from the Authorization header (after
// the scheme), answers 401 (or Reject) to a missing or revoked token, or
// Status to every request when set, with the body "status 401" (followed
// by ` for "id"` when the request has an X-Request-Id), and records every
// request and every response body it hands out. It is safe for
// concurrent use once built.
type Backend struct {
	Status int // when non-zero, every response has it (see SetStatus)
	Reject int // the status for a missing or revoked token; 0 means 401

	mu      sync.Mutex
	revoked map[string]bool
	sent    []Sent
	bodies  []*TrackedBody
}

// Sent is a request a [Backend] received.
type Sent struct {
	ID   string // its X-Request-Id header
	Auth string // its Authorization header
	Body string
}

// RoundTrip implements http.RoundTripper.
func (b *Backend) RoundTrip(req *http.Request) (*http.Response, error) {
	auth := req.Header.Get("Authorization")
	var body string
	if req.Body != nil {
		data, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = string(data)
	}
	id := req.Header.Get("X-Request-Id")
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sent = append(b.sent, Sent{ID: id, Auth: auth, Body: body})
	status := http.StatusOK
	switch {
	case b.Status != 0:
		status = b.Status
	case auth == "" || b.revoked[auth[strings.LastIndex(auth, " ")+1:]]:
		status = http.StatusUnauthorized
		if b.Reject != 0 {
			status = b.Reject
		}
	}
	text := fmt.Sprintf("status %d", status)
	if id != "" {
		text += fmt.Sprintf(" for %q", id)
	}
	rb := NewTrackedBody(text)
	b.bodies = append(b.bodies, rb)
	return &http.Response{
		StatusCode: status,
		Body:       rb,
		Header:     http.Header{},
		Request:    req,
	}, nil
}

// Revoke makes the backend reject tokens.
func (b *Backend) Revoke(tokens ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.revoked == nil {
		b.revoked = map[string]bool{}
	}
	for _, tok := range tokens {
		b.revoked[tok] = true
	}
}

// SetStatus makes every response have status (0: judge by the token).
func (b *Backend) SetStatus(status int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.Status = status
}

// Requests returns the requests received so far.
func (b *Backend) Requests() []Sent {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Sent(nil), b.sent...)
}

// Last returns the last request received; the zero Sent if none.
func (b *Backend) Last() Sent {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.sent) == 0 {
		return Sent{}
	}
	return b.sent[len(b.sent)-1]
}

// ResponseBodies returns the response bodies handed out so far.
func (b *Backend) ResponseBodies() []*TrackedBody {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*TrackedBody(nil), b.bodies...)
}

// TrackedBody is a response body that records whether it was read to the
// end and how often it was closed.
type TrackedBody struct {
	r      *strings.Reader
	eof    atomic.Bool
	closes atomic.Int32
}

// NewTrackedBody returns a TrackedBody that reads text.
func NewTrackedBody(text string) *TrackedBody {
	return &TrackedBody{r: strings.NewReader(text)}
}

// Read implements io.Reader.
func (tb *TrackedBody) Read(p []byte) (int, error) {
	n, err := tb.r.Read(p)
	if err == io.EOF {
		tb.eof.Store(true)
	}
	return n, err
}

// Close implements io.Closer and counts the call.
func (tb *TrackedBody) Close() error {
	tb.closes.Add(1)
	return nil
}

// EOF reports whether the body was read to its end.
func (tb *TrackedBody) EOF() bool { return tb.eof.Load() }

// Closes returns how often the body was closed.
func (tb *TrackedBody) Closes() int32 { return tb.closes.Load() }

// RoundTripFunc adapts a function to http.RoundTripper.
type RoundTripFunc func(*http.Request) (*http.Response, error)

// RoundTrip implements http.RoundTripper.
func (f RoundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TextResponse returns a response to req with status and a small
// in-memory body.
func TextResponse(req *http.Request, status int, body string) *http.Response {
	return &http.Response{
		StatusCode:    status,
		Status:        fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Header:        http.Header{"Content-Type": {"text/plain"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// Bearer returns the token req carries in Authorization.
func Bearer(req *http.Request) string {
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
}
