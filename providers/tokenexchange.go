package providers

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/go-tokenmanager/tokenmanager"
)

// grantTypeTokenExchange is RFC 8693's grant type.
const grantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"

// Token type identifiers of RFC 8693 §3, for SubjectTokenType,
// ActorTokenType and RequestedTokenType.
const (
	TokenTypeAccessToken  = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeRefreshToken = "urn:ietf:params:oauth:token-type:refresh_token"
	TokenTypeIDToken      = "urn:ietf:params:oauth:token-type:id_token"
	TokenTypeJWT          = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeSAML1        = "urn:ietf:params:oauth:token-type:saml1"
	TokenTypeSAML2        = "urn:ietf:params:oauth:token-type:saml2"
)

// TokenExchangeConfig describes an OAuth 2.0 token exchange (RFC 8693): a
// subject token, and optionally an actor token, exchanged for a token for
// another audience or with other scopes. See [TokenExchange].
type TokenExchangeConfig struct {
	// TokenURL is the token endpoint, an absolute http or https URL.
	// Required unless Issuer is set. Plain http is accepted only to a
	// loopback host, unless AllowInsecureHTTP is set.
	TokenURL string
	// Issuer finds the token endpoint by discovery: set it instead of
	// TokenURL. Its metadata's token_endpoint is used (its mutual-TLS
	// alias with [TLSClientAuth]), and its IssuerConfig.AllowInsecureHTTP
	// applies to the token requests too. Optional.
	Issuer *Issuer
	// SubjectToken returns the token that stands for the party the new
	// token is for: a Kubernetes service-account token, an ID token, an
	// access token from another provider. It is called for every token
	// request; it must be safe for concurrent use. Required.
	SubjectToken func(ctx context.Context) (string, error)
	// SubjectTokenType is the subject token's type, such as
	// TokenTypeJWT or TokenTypeAccessToken. Required.
	SubjectTokenType string
	// ActorToken returns the token of the party acting on the subject's
	// behalf (delegation, RFC 8693 §1.1). Optional; when set,
	// ActorTokenType is required.
	ActorToken func(ctx context.Context) (string, error)
	// ActorTokenType is the actor token's type.
	ActorTokenType string
	// RequestedTokenType is the type of token wanted. Optional; the
	// server chooses by default (usually an access token).
	RequestedTokenType string
	// Audience names the services the new token is for, each sent as an
	// audience parameter. Optional.
	Audience []string
	// Resource are the URIs of the services the new token is for, each
	// sent as a resource parameter: absolute, without a fragment.
	// Optional.
	Resource []string
	// Scopes are sent space-separated in the scope parameter. Optional.
	Scopes []string
	// Auth authenticates the client. Optional: nil sends no client
	// authentication.
	Auth ClientAuth
	// EndpointParams are added to the request body. Optional. They may
	// override grant_type; they may not set what the fields above set.
	EndpointParams url.Values
	// HTTPClient sends the token requests. Optional; if nil,
	// http.DefaultClient is used.
	HTTPClient *http.Client
	// AllowInsecureHTTP lets the token request travel over plain http to
	// any host, as in [ClientCredentialsConfig]. Optional.
	AllowInsecureHTTP bool
}

// Validate reports every problem with c at once, or nil when c is usable.
func (c TokenExchangeConfig) Validate() error {
	var p problems
	p.endpoint(c.TokenURL, c.Issuer, c.AllowInsecureHTTP, "the subject token")
	if c.SubjectToken == nil {
		p.add("SubjectToken is nil; a function returning the subject token is required")
	}
	if c.SubjectTokenType == "" {
		p.add("SubjectTokenType is empty; use TokenTypeJWT, TokenTypeAccessToken or the type the server wants")
	}
	switch {
	case c.ActorToken != nil && c.ActorTokenType == "":
		p.add("ActorToken is set and ActorTokenType is empty; the actor token's type is required")
	case c.ActorToken == nil && c.ActorTokenType != "":
		p.add("ActorTokenType is set and ActorToken is nil; set both or neither")
	}
	for _, r := range c.Resource {
		if u, err := url.Parse(r); err != nil || !u.IsAbs() || u.Fragment != "" || u.RawFragment != "" {
			p.add("Resource %q is not an absolute URI without a fragment (RFC 8693 §2.1)", r)
		}
	}
	p.auth(c.Auth, false)
	p.endpointParams(c.EndpointParams, c.Scopes, "Auth", clientAuthParams...)
	for _, kf := range [][2]string{
		{"subject_token", "SubjectToken"}, {"subject_token_type", "SubjectTokenType"},
		{"actor_token", "ActorToken"}, {"actor_token_type", "ActorTokenType"},
		{"requested_token_type", "RequestedTokenType"},
	} {
		p.endpointParams(c.EndpointParams, nil, kf[1], kf[0])
	}
	if len(c.Audience) > 0 {
		p.endpointParams(c.EndpointParams, nil, "Audience", "audience")
	}
	if len(c.Resource) > 0 {
		p.endpointParams(c.EndpointParams, nil, "Resource", "resource")
	}
	return p.err()
}

// TokenExchange returns a provider that fetches tokens with OAuth 2.0
// token exchange (RFC 8693): grant_type
// urn:ietf:params:oauth:grant-type:token-exchange, the subject token (and
// actor token) from cfg's functions, called for every request, and
// requested_token_type, audience, resource and scope as set. It copies
// cfg.
//
// The issued token (access_token in the answer) is the provider's token,
// whatever its issued_token_type. Everything else is as in
// [ClientCredentials]: the lifetime from expires_in or the JWT's exp,
// *[RetrieveError] answers (a subject token the server refuses is
// invalid_grant or invalid_request, permanent), Retry-After, bounded
// bodies, an invalid config returned as a permanent error on every call.
// An error from a token function is returned wrapped, temporary unless it
// says otherwise. Neither token ever appears in an error: a server
// echoing one gets it shown as [redacted].
func TokenExchange(cfg TokenExchangeConfig) tokenmanager.TokenProvider {
	return newTokenExchange(cfg).fetch
}

func newTokenExchange(cfg TokenExchangeConfig) *endpoint {
	form := baseForm(grantTypeTokenExchange, cfg.Scopes, cfg.EndpointParams)
	form.Set("subject_token_type", cfg.SubjectTokenType)
	if cfg.ActorTokenType != "" {
		form.Set("actor_token_type", cfg.ActorTokenType)
	}
	if cfg.RequestedTokenType != "" {
		form.Set("requested_token_type", cfg.RequestedTokenType)
	}
	if len(cfg.Audience) > 0 {
		form["audience"] = append([]string(nil), cfg.Audience...)
	}
	if len(cfg.Resource) > 0 {
		form["resource"] = append([]string(nil), cfg.Resource...)
	}
	e := newEndpoint(cfg.TokenURL, cfg.Issuer, cfg.HTTPClient, cfg.AllowInsecureHTTP, cfg.Auth, form, cfg.Validate())
	subject, actor := cfg.SubjectToken, cfg.ActorToken
	e.params = func(ctx context.Context, _ target) (url.Values, []string, error) {
		sub, err := subject(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("providers: TokenExchange: getting the subject token: %w", err)
		}
		if sub == "" {
			return nil, nil, fmt.Errorf("providers: TokenExchange: the subject token is empty")
		}
		params := url.Values{"subject_token": {sub}}
		secrets := []string{sub}
		if actor != nil {
			act, err := actor(ctx)
			if err != nil {
				return nil, nil, fmt.Errorf("providers: TokenExchange: getting the actor token: %w", err)
			}
			if act == "" {
				return nil, nil, fmt.Errorf("providers: TokenExchange: the actor token is empty")
			}
			params.Set("actor_token", act)
			secrets = append(secrets, act)
		}
		return params, secrets, nil
	}
	return e
}
