// Package dpopctx carries an identity's DPoP key from its settings to
// its provider, through the fetch's context: the token actor wraps the
// provider, the grants of package providers read the key.
package dpopctx

import (
	"context"

	"github.com/go-tokenmanager/tokenmanager"
)

type key struct{}

// ProviderOf returns s's GetCredentials, which, when s has a DPoP key,
// finds it in its context (see [From]).
func ProviderOf(s tokenmanager.Settings) tokenmanager.TokenProvider {
	p, d := s.GetCredentials, s.DPoP
	if d == nil || p == nil {
		return p
	}
	return func(ctx context.Context) (tokenmanager.Token, error) {
		return p(context.WithValue(ctx, key{}, d))
	}
}

// From returns the DPoP key of the identity a provider is fetching for,
// nil when it has none.
func From(ctx context.Context) *tokenmanager.DPoP {
	d, _ := ctx.Value(key{}).(*tokenmanager.DPoP)
	return d
}

// With returns ctx carrying d as the DPoP key of the fetch, as the token
// actor does; for code that calls a grant outside a manager (sign-in).
func With(ctx context.Context, d *tokenmanager.DPoP) context.Context {
	if d == nil {
		return ctx
	}
	return context.WithValue(ctx, key{}, d)
}
