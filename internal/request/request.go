// Package request holds an identity's request-side settings and state (header cache, gRPC metadata, flights), used by internal/core, facades and owners.
package request

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// Request is the request side of an identity's settings, resolved once:
// what a RoundTripper needs to attach a token and recover from rejections.
// It is immutable.
type Request struct {
	Header    string // canonical
	Key       string // Header in lower case, as gRPC metadata wants it
	Formatter tokenmanager.Formatter
	reject    [10]uint64 // bitset of statuses in RefreshOnStatus (< 640)
	MaxTries  int        // >= 0
	WithToken bool       // AddTokenToLogs
	Insecure  bool       // AllowInsecureHTTP
	Wait      time.Duration
	// Callbacks calls the settings' callbacks of both sides; nil when
	// none is set.
	Callbacks func(messages.Event)
	// Bearer says Formatter is the default, BearerFormatter: library
	// code, which the token actor may call itself.
	Bearer bool
	// DPoP is the identity's DPoP key; nil without DPoP.
	DPoP *tokenmanager.DPoP
}

// New resolves the request side of s (defaults applied), with the
// callbacks of side.
func New(s tokenmanager.Settings, side Side) *Request {
	bearer := s.Formatter == nil
	s = s.WithDefaults()
	r := &Request{
		Header:    http.CanonicalHeaderKey(s.Header),
		Key:       strings.ToLower(s.Header),
		Formatter: s.Formatter,
		MaxTries:  max(s.MaxRecoveryTries, 0),
		WithToken: s.AddTokenToLogs,
		Insecure:  s.AllowInsecureHTTP,
		Wait:      s.WaitTimeout,
		Callbacks: Callbacks(s, side),
		Bearer:    bearer,
		DPoP:      s.DPoP,
	}
	for _, code := range s.RefreshOnStatus {
		r.reject[code/64] |= 1 << (code % 64)
	}
	return r
}

// Rejects reports whether status is in RefreshOnStatus.
func (r *Request) Rejects(status int) bool {
	return status >= 0 && status < 640 && r.reject[status/64]&(1<<(status%64)) != 0
}

// State is a RoundTripper's mutable state for one identity: the
// last formatted header and the shared wait in progress.
type State struct {
	Header atomic.Pointer[HeaderValue] // the last formatted token
	MD     atomic.Pointer[Metadata]    // the last gRPC metadata made
	Mu     sync.Mutex                  // guards Flight
	Flight *Flight                     // the shared wait in progress, if any
}

// HeaderValue is a token and its formatted header value.
type HeaderValue struct {
	Token, Value string
}

// Metadata is the gRPC request metadata made for a header value. The map
// is shared by every call that carries that value and never modified.
type Metadata struct {
	Value string
	M     map[string]string
}

// Flight is one wait in the actor, shared by every request that misses
// the snapshot meanwhile, so that a stampede costs the actor one message
// rather than one per request.
type Flight struct {
	Done    chan struct{} // closed once Res is set
	Res     *messages.TokenResult
	Cancel  context.CancelFunc
	Waiters int // guarded by State.Mu
	// Kept is set once a timer holds one waiter's place in the flight
	// after a failed fetch, so that the actor keeps retrying while
	// fail-fast callers come and go; one timer per flight, not per
	// caller. Guarded by State.Mu.
	Kept bool
}
