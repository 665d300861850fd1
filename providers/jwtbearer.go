package providers

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/go-tokenmanager/tokenmanager"
)

// grantTypeJWTBearer is RFC 7523 §2.1's grant type.
const grantTypeJWTBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// JWTBearerConfig describes a JWT bearer grant (RFC 7523 §2.1): a JWT
// assertion, signed by the client ([JWTAssertion]) or by someone the
// server trusts (a callback), exchanged for an access token. See
// [JWTBearer].
type JWTBearerConfig struct {
	// TokenURL is the token endpoint, an absolute http or https URL.
	// Required unless Issuer is set. Plain http is accepted only to a
	// loopback host, unless AllowInsecureHTTP is set.
	TokenURL string
	// Issuer finds the token endpoint by discovery: set it instead of
	// TokenURL. Its metadata's token_endpoint is used (its mutual-TLS
	// alias with [TLSClientAuth]), and its IssuerConfig.AllowInsecureHTTP
	// applies to the token requests too. Optional.
	Issuer *Issuer
	// Assertion returns the assertion to send, for every token request:
	// [JWTAssertion]'s signer, or a callback. Required.
	Assertion AssertionFunc
	// Auth authenticates the client, when the server wants that too.
	// Optional: nil sends no client authentication (RFC 7523 §3.1
	// allows that).
	Auth ClientAuth
	// Scopes are sent space-separated in the scope parameter. Optional.
	Scopes []string
	// EndpointParams are added to the request body. Optional. They may
	// override grant_type; they may not set assertion or client
	// authentication parameters, nor scope when Scopes is set.
	EndpointParams url.Values
	// HTTPClient sends the token requests. Optional; if nil,
	// http.DefaultClient is used.
	HTTPClient *http.Client
	// AllowInsecureHTTP lets the token request travel over plain http to
	// any host, as in [ClientCredentialsConfig]. Optional.
	AllowInsecureHTTP bool
}

// Validate reports every problem with c at once, or nil when c is usable.
func (c JWTBearerConfig) Validate() error {
	var p problems
	p.endpoint(c.TokenURL, c.Issuer, c.AllowInsecureHTTP, "the assertion")
	if c.Assertion == nil {
		p.add("Assertion is nil; use JWTAssertion's signer or a function returning the assertion")
	}
	p.auth(c.Auth, false)
	p.endpointParams(c.EndpointParams, c.Scopes, "Assertion", "assertion")
	p.endpointParams(c.EndpointParams, nil, "Auth", clientAuthParams...)
	return p.err()
}

// JWTBearer returns a provider that fetches tokens with the JWT bearer
// grant (RFC 7523 §2.1): grant_type
// urn:ietf:params:oauth:grant-type:jwt-bearer and an assertion from
// cfg.Assertion, made anew for every request. It copies cfg.
//
// Everything else is as in [ClientCredentials]: the lifetime from
// expires_in or the JWT's exp, *[RetrieveError] answers (an assertion the
// server refuses is invalid_grant, permanent), Retry-After, bounded
// bodies, an invalid config returned as a permanent error on every call.
// An error from cfg.Assertion is returned wrapped, temporary unless it
// says otherwise. The assertion never appears in an error: a server
// echoing it gets it shown as [redacted].
func JWTBearer(cfg JWTBearerConfig) tokenmanager.TokenProvider { return newJWTBearer(cfg).fetch }

func newJWTBearer(cfg JWTBearerConfig) *endpoint {
	form := baseForm(grantTypeJWTBearer, cfg.Scopes, cfg.EndpointParams)
	e := newEndpoint(cfg.TokenURL, cfg.Issuer, cfg.HTTPClient, cfg.AllowInsecureHTTP, cfg.Auth, form, cfg.Validate())
	assertion := cfg.Assertion
	clientID := ""
	if cfg.Auth != nil {
		clientID = cfg.Auth.clientID()
	}
	e.params = func(ctx context.Context, t target) (url.Values, []string, error) {
		a, err := assertion(ctx, AssertionRequest{ClientID: clientID, TokenURL: t.tokenURL, Issuer: t.issuer})
		if err != nil {
			return nil, nil, fmt.Errorf("providers: JWTBearer: making the assertion: %w", err)
		}
		if a == "" {
			return nil, nil, fmt.Errorf("providers: JWTBearer: the assertion is empty")
		}
		return url.Values{"assertion": {a}}, []string{a}, nil
	}
	return e
}
