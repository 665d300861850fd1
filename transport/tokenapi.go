package transport

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/oauth2"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/core"
)

// Token returns a valid token, fetching one if none is cached, and waits
// at most until ctx ends (or Settings.WaitTimeout when ctx has no
// deadline): a token API for clients other than HTTP.
//
// Its ExpiresIn counts from this call: the whole seconds the token has
// left on the manager's clock, rounded down and at least 1 (0 only for a
// token without expiry), so the caller can trust it as of now. The token
// is refreshed Settings.RefreshBuffer before it expires; call Token for
// each use rather than keeping it. The returned Token must not be
// modified.
func (t *RoundTripper) Token(ctx context.Context) (tokenmanager.Token, error) {
	if t.c.Closed() {
		return tokenmanager.Token{}, tokenmanager.ErrClosed
	}
	b := t.b
	iss, err := t.c.Token(ctx, &b, "")
	if err != nil {
		return tokenmanager.Token{}, err
	}
	return core.FromNow(iss, b.H.Clock.Now()), nil
}

// Invalidate reports that an API rejected token, as a status in
// Settings.RefreshOnStatus does for a request: the token is dropped if it
// is still the cached one (a late report of an older token drops
// nothing), so the next [RoundTripper.Token] fetches a fresh one.
//
// It reports whether the caller should fetch a fresh token and try again.
// It is false, and the token is kept, while the manager holds because new
// tokens keep being rejected (an API that rejects every token, say): the
// caller should then give its failure back, sparing the token endpoint.
func (t *RoundTripper) Invalidate(token string) bool {
	if t.c.Closed() || token == "" {
		return false
	}
	return t.c.Invalidate(t.b, token, "", 0)
}

// TokenSource returns an oauth2.TokenSource served by t: every Token call
// returns the cached token (fetching one only on a miss), with Expiry set
// from its remaining lifetime, so oauth2.ReuseTokenSource, oauth2.NewClient
// and Google's client libraries work on top of t's single flight, early
// refresh and events. Token waits at most Settings.WaitTimeout; an
// oauth2.TokenSource has no context. For gRPC, package grpcauth honours
// each call's context instead.
func (t *RoundTripper) TokenSource() oauth2.TokenSource {
	return tokenSource(func(ctx context.Context) (core.Issued, time.Time, error) {
		if t.c.Closed() {
			return core.Issued{}, time.Time{}, tokenmanager.ErrClosed
		}
		b := t.b
		iss, err := t.c.Token(ctx, &b, "")
		return iss, b.H.Clock.Now(), err
	})
}

// Invalidate is [RoundTripper.Invalidate] for identity. It is false for
// an empty or invalid identity (see tokenmanager.CheckIdentity), which
// has no token to fetch.
func (m *MultiRoundTripper) Invalidate(identity, token string) bool {
	if m.c.Closed() || token == "" || checkIdentity(identity) != nil {
		return false
	}
	h := m.o.Lookup(identity)
	if h == nil {
		return true // not cached: the next Token fetches anyway
	}
	return m.c.Invalidate(core.BindingOf(h), token, "", 0)
}

// TokenSource is [RoundTripper.TokenSource] for identity.
func (m *MultiRoundTripper) TokenSource(identity string) oauth2.TokenSource {
	return tokenSource(func(ctx context.Context) (core.Issued, time.Time, error) {
		if m.c.Closed() {
			return core.Issued{}, time.Time{}, tokenmanager.ErrClosed
		}
		b, err := m.bind(ctx, identity)
		if err != nil {
			return core.Issued{}, time.Time{}, err
		}
		iss, err := m.c.Token(ctx, &b, "")
		return iss, b.H.Clock.Now(), err
	})
}

// tokenSource adapts a token getter to oauth2.TokenSource. get returns the
// token, its expiry and the time, both on the manager's clock.
type tokenSource func(ctx context.Context) (core.Issued, time.Time, error)

func (f tokenSource) Token() (*oauth2.Token, error) {
	iss, now, err := f(context.Background())
	if err != nil {
		return nil, err
	}
	tok := &oauth2.Token{AccessToken: iss.Token.AccessToken, TokenType: iss.Token.TokenType}
	if !iss.ExpiresAt.IsZero() {
		// The manager's clock may be a mock: carry the time left over to
		// the wall clock oauth2 compares Expiry with.
		tok.Expiry = time.Now().Add(iss.ExpiresAt.Sub(now))
	}
	return tok, nil
}

func init() {
	core.RegisterFacades(func(m any) (core.Facade, bool) {
		switch v := m.(type) {
		case *RoundTripper:
			return core.Facade{Core: &v.c, Bind: func(context.Context) (core.Binding, error) { return v.b, nil }}, true
		case *MultiRoundTripper:
			return core.Facade{Core: &v.c, Bind: func(ctx context.Context) (core.Binding, error) {
				id, ok := IdentityFrom(ctx)
				if !ok {
					return core.Binding{}, fmt.Errorf("%w: use transport.WithIdentity on the call's context", ErrNoIdentity)
				}
				// The facade may refuse the identity once bound (gRPC
				// refuses DPoP): no token is fetched with its settings.
				return v.bindFor(ctx, id, false)
			}}, true
		}
		return core.Facade{}, false
	})
}
