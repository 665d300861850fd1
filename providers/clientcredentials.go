package providers

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/go-tokenmanager/tokenmanager"
)

// AuthStyle says how the client authenticates to the token endpoint.
type AuthStyle int

const (
	// AuthStyleAutoDetect tries HTTP Basic auth first and, if the server
	// answers 401, or 400 with invalid_client, invalid_request or no error
	// code, the request body; the style that worked is remembered for
	// later fetches. Any other refusal (invalid_grant above all: a
	// refresh token or code is not sent twice) is returned at once.
	AuthStyleAutoDetect AuthStyle = 0
	// AuthStyleInHeader sends the client id and secret in an HTTP Basic
	// Authorization header, each form-url-encoded first as RFC 6749 §2.3.1
	// requires ("client_secret_basic").
	AuthStyleInHeader AuthStyle = 1
	// AuthStyleInParams sends client_id and client_secret in the request
	// body ("client_secret_post").
	AuthStyleInParams AuthStyle = 2
)

// ClientCredentialsConfig describes a client-credentials grant. Its field
// names follow golang.org/x/oauth2/clientcredentials.Config.
type ClientCredentialsConfig struct {
	// TokenURL is the token endpoint, an absolute http or https URL.
	// Required unless Issuer is set. Plain http is accepted only to a
	// loopback host, unless AllowInsecureHTTP is set.
	TokenURL string
	// Issuer finds the token endpoint by discovery: set it instead of
	// TokenURL. Its metadata's token_endpoint is used (its mutual-TLS
	// alias with [TLSClientAuth]), and its IssuerConfig.AllowInsecureHTTP
	// applies to the token requests too. Optional.
	Issuer *Issuer
	// ClientID is the client's identifier. Required.
	ClientID string
	// ClientSecret is the client's secret. Optional: empty for a public
	// client, in which case no client_secret parameter is sent.
	ClientSecret string
	// Scopes are sent space-separated in the scope parameter. Optional;
	// when empty no scope parameter is sent (a scope in EndpointParams,
	// as Entra ID's "https://graph.microsoft.com/.default", then applies).
	Scopes []string
	// EndpointParams are added to the request body: Auth0's audience,
	// Entra ID v1's resource, and the like. Optional. They may override
	// grant_type, for servers that want another value; they may not set
	// client_id or client_secret, nor scope when Scopes is set.
	EndpointParams url.Values
	// AuthStyle says how the client authenticates. Optional; the zero
	// value, AuthStyleAutoDetect, works with every server that accepts
	// either style.
	AuthStyle AuthStyle
	// HTTPClient sends the token requests. Optional; if nil,
	// http.DefaultClient is used. Its Timeout, if any, applies on top of
	// the context the manager passes.
	HTTPClient *http.Client
	// AllowInsecureHTTP lets the token request travel over plain http to
	// any host. Optional; false means a TokenURL that is plain http to a
	// host other than loopback (localhost, 127.0.0.0/8, ::1) is refused,
	// so the client secret never travels in clear text; set it only where
	// something else protects the traffic (a service mesh sidecar
	// terminating TLS, a test rig). While it is false, a redirect from the
	// token endpoint to such a URL is refused too.
	AllowInsecureHTTP bool
}

// Validate reports every problem with c at once, or nil when c is usable.
func (c ClientCredentialsConfig) Validate() error {
	var p problems
	p.endpoint(c.TokenURL, c.Issuer, c.AllowInsecureHTTP, "the client secret")
	if c.ClientID == "" {
		p.add("ClientID is empty; the client's identifier is required")
	}
	if !c.AuthStyle.valid() {
		p.add("AuthStyle is %v; use AuthStyleAutoDetect, AuthStyleInHeader or AuthStyleInParams", c.AuthStyle)
	}
	p.endpointParams(c.EndpointParams, c.Scopes, "ClientID, ClientSecret and AuthStyle", "client_id", "client_secret")
	return p.err()
}

func (s AuthStyle) valid() bool { return s >= AuthStyleAutoDetect && s <= AuthStyleInParams }

// ClientCredentials returns a provider that fetches tokens with the OAuth
// 2.0 client-credentials grant (RFC 6749 §4.4). It copies cfg, so later
// changes to cfg do not affect it.
//
// When cfg is invalid (see [ClientCredentialsConfig.Validate]) the
// provider returns that error, marked permanent (tokenmanager.IsPermanent
// reports true; errors.Is and errors.As still see the causes, such as
// tokenmanager.ErrInsecureTransport for a plain http TokenURL), on every
// call without any request; call Validate first to fail at start-up
// instead.
//
// The token's lifetime is the response's expires_in (a number or a
// numeric string). When expires_in is missing or zero and the access token
// is a JWT, the lifetime is read from its exp claim (the signature is not
// checked; the token endpoint is trusted). Without either, the token is
// cached until a response rejects it. A JWT whose exp has already passed
// (and no expires_in) gives an error wrapping
// tokenmanager.ErrExpiredOnArrival, which is temporary: the token is not
// used, and the fetch is retried.
//
// A non-2xx answer, or a 2xx answer carrying an OAuth error, is returned
// as a *[RetrieveError], permanent or temporary as
// [RetrieveError.Permanent] says (invalid_client, invalid_scope, a 401 or
// 403, and any error code in a 2xx answer but temporarily_unavailable,
// slow_down and server_error are permanent; 429, 5xx, Retry-After are
// not). A 2xx answer over 1 MiB gives a permanent error wrapping
// [ErrResponseTooLarge], and one whose expires_in does not decode a
// permanent error too: asking again gets the same answer. A ctx that ends
// aborts the request with an error wrapping ctx.Err(); that, network
// errors and answers that are not JSON or form-encoded at all (a proxy's
// HTML error page) are temporary. The provider is safe for concurrent
// use.
func ClientCredentials(cfg ClientCredentialsConfig) tokenmanager.TokenProvider {
	return newClientCredentials(cfg).fetch
}

// newClientCredentials returns the endpoint behind ClientCredentials: the
// client-credentials grant with a client secret, ClientCredentialsGrant
// with ClientSecret.
func newClientCredentials(cfg ClientCredentialsConfig) *endpoint {
	auth := &clientSecret{id: cfg.ClientID, secret: cfg.ClientSecret, style: cfg.AuthStyle}
	form := baseForm("client_credentials", cfg.Scopes, cfg.EndpointParams)
	return newEndpoint(cfg.TokenURL, cfg.Issuer, cfg.HTTPClient, cfg.AllowInsecureHTTP, auth, form, cfg.Validate())
}

// GrantConfig describes a client-credentials grant with any client
// authentication but none: a client secret, a private key (private_key_jwt), or a
// client assertion from elsewhere (a Kubernetes service-account token, a
// federated credential). See [ClientCredentialsGrant].
type GrantConfig struct {
	// TokenURL is the token endpoint, an absolute http or https URL.
	// Required unless Issuer is set. Plain http is accepted only to a
	// loopback host, unless AllowInsecureHTTP is set.
	TokenURL string
	// Issuer finds the token endpoint by discovery: set it instead of
	// TokenURL. Its metadata's token_endpoint is used (its mutual-TLS
	// alias with [TLSClientAuth]), and its IssuerConfig.AllowInsecureHTTP
	// applies to the token requests too. Optional.
	Issuer *Issuer
	// Auth authenticates the client: [ClientSecret], [PrivateKeyJWT] or
	// [ClientAssertion], or a client certificate: [TLSClientAuth].
	// Required. [NoClientAuth] is refused: RFC 6749
	// §4.4 reserves this grant for confidential clients.
	Auth ClientAuth
	// Scopes are sent space-separated in the scope parameter. Optional.
	Scopes []string
	// EndpointParams are added to the request body (Auth0's audience,
	// Entra ID v1's resource, ...). Optional. They may override
	// grant_type; they may not set client authentication parameters
	// (client_id, client_secret, client_assertion,
	// client_assertion_type), nor scope when Scopes is set.
	EndpointParams url.Values
	// HTTPClient sends the token requests. Optional; if nil,
	// http.DefaultClient is used.
	HTTPClient *http.Client
	// AllowInsecureHTTP lets the token request travel over plain http to
	// any host, as in [ClientCredentialsConfig]. Optional.
	AllowInsecureHTTP bool
}

// Validate reports every problem with c at once, or nil when c is usable.
func (c GrantConfig) Validate() error {
	var p problems
	p.endpoint(c.TokenURL, c.Issuer, c.AllowInsecureHTTP, "the client's credentials")
	p.auth(c.Auth, true)
	if _, ok := c.Auth.(*noClientAuth); ok {
		p.add("Auth is NoClientAuth, a public client; the client-credentials grant is only for confidential clients (RFC 6749 §4.4): " +
			"use ClientSecret, PrivateKeyJWT, ClientAssertion or TLSClientAuth")
	}
	p.endpointParams(c.EndpointParams, c.Scopes, "Auth", clientAuthParams...)
	return p.err()
}

// ClientCredentialsGrant returns a provider that fetches tokens with the
// OAuth 2.0 client-credentials grant (RFC 6749 §4.4), the client
// authenticating as cfg.Auth says. It copies cfg.
//
// It behaves as [ClientCredentials] does (lifetime from expires_in or a
// JWT's exp, *[RetrieveError] answers, Retry-After, redaction, an invalid
// config returned as a permanent error on every call); with
// ClientSecret(id, secret, style) it sends exactly what ClientCredentials
// sends. A client assertion (PrivateKeyJWT, ClientAssertion) is made anew
// for every request and never appears in an error: a server echoing it
// gets it shown as [redacted].
func ClientCredentialsGrant(cfg GrantConfig) tokenmanager.TokenProvider {
	return newClientCredentialsGrant(cfg).fetch
}

func newClientCredentialsGrant(cfg GrantConfig) *endpoint {
	form := baseForm("client_credentials", cfg.Scopes, cfg.EndpointParams)
	return newEndpoint(cfg.TokenURL, cfg.Issuer, cfg.HTTPClient, cfg.AllowInsecureHTTP, cfg.Auth, form, cfg.Validate())
}

// String returns the style's name, as written in Go.
func (s AuthStyle) String() string {
	switch s {
	case AuthStyleAutoDetect:
		return "AuthStyleAutoDetect"
	case AuthStyleInHeader:
		return "AuthStyleInHeader"
	case AuthStyleInParams:
		return "AuthStyleInParams"
	}
	return fmt.Sprintf("AuthStyle(%d)", int(s))
}
