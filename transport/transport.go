// Package transport holds the http.RoundTripper that attaches the token
// actor's token to requests.
//
// [New] builds everything: an actor system of its own, the token actor,
// and the RoundTripper. [NewFromActor] attaches a RoundTripper to a token
// actor you spawned in your own system from actor.NewProps.
//
// On a cached token a request costs one atomic load: the actor publishes
// an immutable snapshot after each change and the RoundTripper reads it.
// Only when no valid token is cached does a request message the actor, and
// then it waits, with hundreds of others, for the single fetch the actor
// runs.
//
// Resending a request after a status in Settings.RefreshOnStatus goes
// beyond what a plain http.RoundTripper does; see [RoundTripper.RoundTrip].
package transport

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/actor"
	"github.com/go-tokenmanager/tokenmanager/internal/core"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/internal/request"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// attachTimeout bounds how long NewFromActor waits for the actor to answer;
// a live token actor answers in microseconds.
const attachTimeout = 5 * time.Second

// maxDrain bounds how much of a discarded response is read so its
// connection can be reused; beyond it the connection is closed instead.
const maxDrain = 256 << 10

// Option modifies how a RoundTripper is built.
type Option interface {
	apply(*options)
}

type options struct {
	base     http.RoundTripper
	resolver func(*http.Request) (string, error)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithBase sets the RoundTripper that sends requests. If nil or not given,
// http.DefaultTransport is used.
func WithBase(rt http.RoundTripper) Option {
	return optionFunc(func(o *options) { o.base = rt })
}

// RoundTripper is an http.RoundTripper that carries a token from the
// token actor on every request. It is safe for concurrent use by multiple
// goroutines.
type RoundTripper struct {
	c    core.Core
	base http.RoundTripper
	b    core.Binding // the one identity
}

// New validates settings and builds a RoundTripper with an actor system
// and token actor of its own, both stopped by Close. Nothing is fetched
// until the first request (or [RoundTripper.Token]) needs a token.
func New(settings tokenmanager.Settings, opts ...Option) (*RoundTripper, error) {
	if err := settings.Validate(); err != nil {
		return nil, err
	}
	// The RoundTripper calls all six callbacks from one goroutine, so they
	// never run concurrently with each other.
	props, err := actor.NewProps(request.WithoutActorCallbacks(settings))
	if err != nil {
		return nil, err
	}
	system := newSystem(settings.Logger)
	pid := system.Root.Spawn(props)
	t, err := attach(system, pid, settings, true, opts)
	if err != nil {
		system.Root.StopFuture(pid).Wait()
		system.Shutdown()
		return nil, err
	}
	return t, nil
}

// NewFromActor builds a RoundTripper for a token actor spawned in system
// from actor.NewProps. The actor's own settings govern fetching, expiry
// and the actor-side callbacks; settings here govern the request side.
// Passing the very settings the actor was built from is fine (the common
// case).
//
// Used from settings: Header, Formatter, RefreshOnStatus,
// MaxRecoveryTries, AddTokenToLogs, AllowInsecureHTTP, DPoP (give the
// actor's settings the same key), WaitTimeout,
// EventBuffer, OnAuthFail, OnRecoveryTry and OnRecoveryAbort. Ignored
// (the actor's own settings apply): GetCredentials (may be nil here),
// RefreshBuffer, TokenTryThreshold, Clock, RetryBaseDelay, RetryMaxDelay,
// FetchTimeout, Logger, OnTokenRefresh, OnTokenRequestFail and
// OnTokenTryThreshold. The ignored fields are still validated.
//
// Close leaves the system and the actor running. The RoundTripper's own
// events (AuthFailed, RecoveryTried, RecoveryAborted) are also published
// on system.EventStream.
func NewFromActor(system *proto.ActorSystem, pid *proto.PID, settings tokenmanager.Settings, opts ...Option) (*RoundTripper, error) {
	if system == nil || pid == nil {
		return nil, errors.New("tokenmanager: NewFromActor needs an actor system and the token actor's PID")
	}
	check := settings
	if check.GetCredentials == nil {
		check.GetCredentials = func(context.Context) (tokenmanager.Token, error) {
			return tokenmanager.Token{}, nil
		}
	}
	if err := check.Validate(); err != nil {
		return nil, err
	}
	return attach(system, pid, settings, false, opts)
}

func attach(system *proto.ActorSystem, pid *proto.PID, settings tokenmanager.Settings, owned bool, opts []Option) (*RoundTripper, error) {
	o := applyOptions(opts)
	h, err := ask[*link.Handle](system, pid, &protocol.Attach{}, "actor.NewProps")
	if err != nil {
		return nil, err
	}
	side := request.RequestSide
	if owned {
		side = request.BothSides // one goroutine calls all six callbacks
	}
	req := request.New(settings, side)
	t := &RoundTripper{base: o.base}
	t.c.Init(system, pid, h.Bus, settings.WithDefaults().EventBuffer, owned, req.Callbacks)
	t.b = core.Binding{H: h, PID: pid, Req: req, St: new(request.State)}
	return t, nil
}

// Client returns an *http.Client that sends every request through t.
func (t *RoundTripper) Client() *http.Client {
	return &http.Client{Transport: t}
}

// Subscribe calls fn for every event, the actor's and the RoundTripper's,
// one at a time on a goroutine of its own. fn never blocks the actor or a
// request: each subscriber queues up to Settings.EventBuffer events and
// further ones are dropped (see [RoundTripper.DroppedEvents]). A panic in
// fn is contained. The returned func unsubscribes; it is idempotent.
func (t *RoundTripper) Subscribe(fn func(messages.Event)) (unsubscribe func()) {
	return t.c.Subscribe(fn)
}

// DroppedEvents returns how many events were dropped because a subscriber
// (of this RoundTripper or of its actor) had a full queue.
func (t *RoundTripper) DroppedEvents() uint64 { return t.c.Dropped() }

// Close stops what t owns: for a RoundTripper from New, the token actor
// (cancelling its fetch, stopping its timers) and the actor system. Requests
// waiting for a token get tokenmanager.ErrClosed, as does every later call.
// Events already queued are delivered to subscribers for up to a second
// (callbacks included); then subscribers are stopped after their current
// call. A RoundTripper from NewFromActor leaves the actor and system
// running. Close is idempotent: later calls return nil. Close on a nil
// *RoundTripper returns nil, so it may be deferred before New's error is
// checked.
func (t *RoundTripper) Close() error {
	if t == nil {
		return nil
	}
	return t.c.Close("token actor")
}

// RoundTrip sends req with the token in Settings.Header. It follows the
// net/http contract: it does not modify req (it sends a clone), it always
// closes req.Body, and it returns err == nil whenever it obtained a
// response, whatever its status.
//
// Beyond a plain RoundTripper, it recovers from rejected tokens: when the
// response status is in Settings.RefreshOnStatus, it invalidates the token
// the request carried, drains and closes that response, waits for a fresh
// token and resends the request, at most Settings.MaxRecoveryTries times
// for this request. It then gives back the last response, body unread. A
// request whose body cannot be replayed (non-nil Body without GetBody; see
// http.NewRequest) is never resent: its first rejected response is given
// back. Requests built by http.NewRequest from a *bytes.Buffer,
// *bytes.Reader or *strings.Reader can always be replayed.
//
// The token is attached only to the original request's host and its
// subdomains: when an http.Client follows a redirect to another host, that
// request goes out without it. It travels only over https or to a
// loopback host: any other request that would carry it fails with
// tokenmanager.ErrInsecureTransport, unsent, unless
// Settings.AllowInsecureHTTP is set.
//
// When no token can be had, RoundTrip returns an error wrapping the
// failed fetch (a *tokenmanager.FetchError, which wraps the provider's
// error) and, when the request's context ended first, ctx.Err(). A
// permanent failure (tokenmanager.IsPermanent) fails the request at once.
func (t *RoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	return roundTrip(&t.c, t.base, t.b, req)
}

// sameSite reports whether req may carry the token: it is not a redirect,
// or its host is the original request's host or a subdomain of it. As
// net/http does for its own sensitive headers, hosts compare by hostname
// (port ignored) and an IP address matches only itself.
//
// Like net/http, once a redirect chain has left the original host, the
// token stays off for the rest of the chain, also if it comes back.
func sameSite(req *http.Request) bool {
	if req.Response == nil {
		return true // not a redirect
	}
	chain := []*http.Request{req}
	for r := req; r.Response != nil; r = r.Response.Request {
		if r.Response.Request == nil {
			return false // a redirect from we cannot tell where: no token
		}
		chain = append(chain, r.Response.Request)
	}
	orig := strings.ToLower(chain[len(chain)-1].URL.Hostname())
	for _, r := range chain[:len(chain)-1] {
		if !isDomainOrSubdomain(strings.ToLower(r.URL.Hostname()), orig) {
			return false
		}
	}
	return true
}

func isDomainOrSubdomain(sub, parent string) bool {
	if sub == parent {
		return true
	}
	if parent == "" || net.ParseIP(parent) != nil || net.ParseIP(sub) != nil || strings.ContainsAny(sub, ":%") {
		return false
	}
	return strings.HasSuffix(sub, parent) && len(sub) > len(parent) && sub[len(sub)-len(parent)-1] == '.'
}
