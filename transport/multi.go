package transport

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/actor"
	"github.com/go-tokenmanager/tokenmanager/internal/core"
	"github.com/go-tokenmanager/tokenmanager/internal/eventbus"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/internal/request"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// defaultResolveWait bounds how long a request whose context has no
// deadline waits for its identity's settings (SettingsFor) before its own
// Settings.WaitTimeout is known.
const defaultResolveWait = 30 * time.Second

// ErrNoIdentity is returned, wrapped, by a MultiRoundTripper for a request
// that names no identity: its context has none ([WithIdentity]) and no
// resolver ([WithResolver]) gave one, or the identity given is empty
// (WithIdentity(ctx, ""), a resolver's "", For(""), Token(ctx, "")). An
// identity that is not empty but fails tokenmanager.CheckIdentity gives
// an error wrapping tokenmanager.ErrInvalidIdentity instead.
var ErrNoIdentity = errors.New("tokenmanager: request names no identity")

type identityKey struct{}

// WithIdentity returns a copy of ctx that tells a [MultiRoundTripper]
// which identity a request made with it uses. It takes precedence over
// the resolver, even when empty: a request whose context carries the
// empty identity fails with [ErrNoIdentity] rather than fall back to the
// resolver, which might pick another identity's token.
func WithIdentity(ctx context.Context, identity string) context.Context {
	return context.WithValue(ctx, identityKey{}, identity)
}

// IdentityFrom returns the identity ctx carries (see [WithIdentity]).
func IdentityFrom(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(identityKey{}).(string)
	return id, ok
}

// WithResolver sets how a [MultiRoundTripper] picks the identity of a
// request whose context carries none: for example by destination host,
// one audience per API. An error from it fails the request unsent. A
// RoundTripper for a single identity ignores it.
func WithResolver(fn func(*http.Request) (string, error)) Option {
	return optionFunc(func(o *options) { o.resolver = fn })
}

// MultiRoundTripper is an http.RoundTripper for many identities (tenants,
// audiences, scopes): each request carries the token of its own identity,
// picked from its context ([WithIdentity]) or by the resolver
// ([WithResolver]). Behind it, an owner (actor.NewOwnerProps) hosts one
// token state per identity, started on first use and passivated when
// idle. Each identity behaves as a [RoundTripper] does (caching, single
// flight, recovery, body replay, redirects, waiting, events), with its own
// settings from OwnerSettings.SettingsFor, and never waits for another
// identity's fetch; its early refresh happens when a request uses the
// token past its refresh time, so a token nobody uses is not refreshed.
//
// A cached token costs a request one table lookup and one atomic load. It
// is safe for concurrent use by multiple goroutines.
type MultiRoundTripper struct {
	c        core.Core
	base     http.RoundTripper
	o        *link.Owner
	resolver func(*http.Request) (string, error)
}

// NewMulti validates settings and builds a MultiRoundTripper with an actor
// system and owner of its own, both stopped by Close. Nothing is fetched,
// and SettingsFor is not called, until an identity's first request.
func NewMulti(settings tokenmanager.OwnerSettings, opts ...Option) (*MultiRoundTripper, error) {
	props, err := actor.NewOwnerProps(settings)
	if err != nil {
		return nil, err
	}
	system := newSystem(settings.Logger)
	pid := system.Root.Spawn(props)
	m, err := attachMulti(system, pid, settings.WithDefaults().EventBuffer, true, opts)
	if err != nil {
		system.Root.StopFuture(pid).Wait()
		system.Shutdown()
		return nil, err
	}
	return m, nil
}

// NewMultiFromActor builds a MultiRoundTripper for an owner spawned in
// system from actor.NewOwnerProps. Each identity's request side (Header,
// Formatter, RefreshOnStatus, MaxRecoveryTries, ...) comes from its own
// settings. Close leaves the system and the owner running; the
// MultiRoundTripper's own events (AuthFailed, RecoveryTried,
// RecoveryAborted) are also published on system.EventStream.
func NewMultiFromActor(system *proto.ActorSystem, pid *proto.PID, opts ...Option) (*MultiRoundTripper, error) {
	if system == nil || pid == nil {
		return nil, errors.New("tokenmanager: NewMultiFromActor needs an actor system and the owner's PID")
	}
	return attachMulti(system, pid, 0, false, opts)
}

func attachMulti(system *proto.ActorSystem, pid *proto.PID, buffer int, owned bool, opts []Option) (*MultiRoundTripper, error) {
	o := applyOptions(opts)
	ow, err := ask[*link.Owner](system, pid, &protocol.AttachOwner{}, "actor.NewOwnerProps")
	if err != nil {
		return nil, err
	}
	if buffer == 0 {
		buffer = tokenmanager.OwnerSettings{}.WithDefaults().EventBuffer
	}
	m := &MultiRoundTripper{base: o.base, o: ow, resolver: o.resolver}
	m.c.Init(system, pid, ow.Bus, buffer, owned, nil)
	// One goroutine calls every identity's request-side callbacks (the
	// owner calls the actor side), bound to each event when the request
	// side published it.
	m.c.Bus.SubscribeItems(func(it eventbus.Item) {
		if it.Callbacks != nil && request.IsRequestSide(it.Event) {
			it.Callbacks(it.Event)
		}
	})
	m.c.Resolve = m.askOwner
	return m, nil
}

// RoundTrip sends req with the token of its identity: the one its context
// carries ([WithIdentity]), else the resolver's ([WithResolver]). A
// request that names no identity, or the empty one, fails with
// [ErrNoIdentity], unsent; one whose identity fails
// tokenmanager.CheckIdentity fails with tokenmanager.ErrInvalidIdentity,
// unsent. In every other way it behaves as [RoundTripper.RoundTrip].
func (m *MultiRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	id, ok := IdentityFrom(req.Context())
	if !ok {
		if m.resolver == nil {
			closeBody(req)
			return nil, fmt.Errorf("%w: use transport.WithIdentity on its context, or transport.WithResolver", ErrNoIdentity)
		}
		var err error
		if id, err = m.resolver(req); err != nil {
			closeBody(req)
			return nil, fmt.Errorf("%w: the resolver failed: %w", ErrNoIdentity, err)
		}
	}
	return m.roundTripFor(id, req)
}

func (m *MultiRoundTripper) roundTripFor(identity string, req *http.Request) (*http.Response, error) {
	if m.c.Closed() {
		closeBody(req)
		return nil, tokenmanager.ErrClosed
	}
	b, err := m.bind(req.Context(), identity)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	return roundTrip(&m.c, m.base, b, req)
}

// For returns an http.RoundTripper that sends every request with
// identity's token, whatever its context says: for one client per API.
// It costs nothing until used, and shares everything with m; closing m
// closes it. When identity is empty or invalid, its requests fail as
// [MultiRoundTripper.RoundTrip]'s do.
func (m *MultiRoundTripper) For(identity string) http.RoundTripper {
	return identityRoundTripper{m: m, identity: identity}
}

type identityRoundTripper struct {
	m        *MultiRoundTripper
	identity string
}

func (r identityRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	return r.m.roundTripFor(r.identity, req)
}

// Client returns an *http.Client that sends every request through m.
func (m *MultiRoundTripper) Client() *http.Client {
	return &http.Client{Transport: m}
}

// Token is [RoundTripper.Token] for identity: its ExpiresIn counts from
// the call. It waits at most until ctx ends (or the identity's
// Settings.WaitTimeout when ctx has no deadline).
func (m *MultiRoundTripper) Token(ctx context.Context, identity string) (tokenmanager.Token, error) {
	if m.c.Closed() {
		return tokenmanager.Token{}, tokenmanager.ErrClosed
	}
	b, err := m.bind(ctx, identity)
	if err != nil {
		return tokenmanager.Token{}, err
	}
	iss, err := m.c.Token(ctx, &b, "")
	if err != nil {
		return tokenmanager.Token{}, err
	}
	return core.FromNow(iss, b.H.Clock.Now()), nil
}

// Live returns how many identities the owner hosts now (started and not
// passivated). An identity counts from the moment its first request has
// its token, which may be just before the owner hosts it: while many new
// identities start at once, Live may exceed OwnerSettings.MaxIdentities
// by up to 64 until the owner has evicted others.
func (m *MultiRoundTripper) Live() int { return int(m.o.Live.Load()) }

// bind returns identity's binding: from the registry when the owner hosts
// it, else from the owner, which starts it. Only valid identities
// reach the registry, so a hit needs no check.
func (m *MultiRoundTripper) bind(ctx context.Context, identity string) (core.Binding, error) {
	return m.bindFor(ctx, identity, true)
}

// bindFor is bind; fetch says the caller goes on to ask for the token
// (see protocol.Resolve).
func (m *MultiRoundTripper) bindFor(ctx context.Context, identity string, fetch bool) (core.Binding, error) {
	if len(identity) > 0 && len(identity) <= tokenmanager.MaxIdentityLength {
		if h := m.o.Lookup(identity); h != nil {
			return core.BindingOf(h), nil
		}
	}
	if err := checkIdentity(identity); err != nil {
		return core.Binding{}, err
	}
	if fetch && m.o.Start != nil && ctx.Err() == nil {
		if first := m.o.Start(identity); first != nil {
			return m.awaitFirst(ctx, identity, first)
		}
	}
	return m.resolve(ctx, identity, fetch)
}

// awaitFirst waits for the first token of identity, which this request
// started (link.Owner.Start): the binding carries it, so the request is
// sent while the owner caches it. When the fetch brought no token, the
// request asks the owner, as every other request for the identity does:
// it waits through retries, or gets the settings' error.
func (m *MultiRoundTripper) awaitFirst(ctx context.Context, identity string, first <-chan link.First) (core.Binding, error) {
	var timeout <-chan time.Time
	if _, ok := ctx.Deadline(); !ok {
		t := time.NewTimer(defaultResolveWait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case f := <-first:
		if f.H == nil {
			return m.resolve(ctx, identity, true)
		}
		b := core.BindingOf(f.H)
		b.First = &core.Issued{Token: f.Token, ExpiresAt: f.ExpiresAt}
		return b, nil
	case <-ctx.Done():
		return core.Binding{}, settingsWaitErr(identity, ctx.Err())
	case <-timeout:
		return core.Binding{}, settingsWaitErr(identity, context.DeadlineExceeded)
	case <-m.o.Done:
		return core.Binding{}, tokenmanager.ErrClosed
	case <-m.c.Done():
		return core.Binding{}, tokenmanager.ErrClosed
	}
}

// settingsWaitErr is the error of a request that stopped waiting for its
// identity to start.
func settingsWaitErr(identity string, err error) error {
	return fmt.Errorf("tokenmanager: waiting for the settings of identity %q: %w", identity, err)
}

// checkIdentity is tokenmanager.CheckIdentity, with [ErrNoIdentity] for
// the empty identity.
func checkIdentity(identity string) error {
	if identity == "" {
		return fmt.Errorf("%w: the identity is empty", ErrNoIdentity)
	}
	return tokenmanager.CheckIdentity(identity)
}

// askOwner asks the owner for identity's handle, for a request that
// goes on to ask for its token, and waits for it.
func (m *MultiRoundTripper) askOwner(ctx context.Context, identity string) (core.Binding, error) {
	return m.resolve(ctx, identity, true)
}

// resolve asks the owner for identity's handle and waits for it; fetch
// as for protocol.Resolve.
func (m *MultiRoundTripper) resolve(ctx context.Context, identity string, fetch bool) (core.Binding, error) {
	var cancel context.CancelFunc
	if _, ok := ctx.Deadline(); ok {
		ctx, cancel = context.WithCancel(ctx)
	} else {
		ctx, cancel = context.WithTimeout(ctx, defaultResolveWait)
	}
	defer cancel() // the owner forgets the request once it ends
	r := &protocol.Resolve{Ctx: ctx, Identity: identity, Reply: make(chan protocol.Resolved, 1), Fetch: fetch}
	m.c.Root.Send(m.c.PID(), r)
	select {
	case res := <-r.Reply:
		if res.Err != nil {
			return core.Binding{}, res.Err
		}
		return core.BindingOf(res.H), nil
	case <-ctx.Done():
		return core.Binding{}, settingsWaitErr(identity, ctx.Err())
	case <-m.o.Done:
		return core.Binding{}, tokenmanager.ErrClosed
	case <-m.c.Done():
		return core.Binding{}, tokenmanager.ErrClosed
	}
}

// Subscribe calls fn for every event of every identity, the owner's and
// the MultiRoundTripper's, one at a time on a goroutine of its own; each
// event's Identity field says whose it is. As for
// [RoundTripper.Subscribe], fn never blocks anything: up to the
// EventBuffer events are queued and further ones dropped. The returned
// func unsubscribes; it is idempotent.
func (m *MultiRoundTripper) Subscribe(fn func(messages.Event)) (unsubscribe func()) {
	return m.c.Subscribe(fn)
}

// DroppedEvents returns how many events were dropped because a subscriber
// had a full queue.
func (m *MultiRoundTripper) DroppedEvents() uint64 { return m.c.Dropped() }

// Close stops what m owns: for a MultiRoundTripper from NewMulti, the
// owner with every identity (cancelling their fetches) and
// the actor system. Requests waiting get tokenmanager.ErrClosed, as does
// every later call. Events already queued are delivered for up to a
// second. Close is idempotent: later calls return nil. Close on a nil
// *MultiRoundTripper returns nil, so it may be deferred before NewMulti's
// error is checked.
func (m *MultiRoundTripper) Close() error {
	if m == nil {
		return nil
	}
	return m.c.Close("owner")
}
