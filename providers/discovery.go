package providers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/secure"
)

// Metadata is what an authorization server publishes about itself (RFC
// 8414 §2, OpenID Connect Discovery 1.0 §3): the fields a client that
// fetches tokens needs. See [Issuer].
type Metadata struct {
	// Issuer is the issuer identifier, equal to the one asked for.
	Issuer string `json:"issuer"`
	// TokenEndpoint is the token endpoint's URL.
	TokenEndpoint string `json:"token_endpoint"`
	// AuthorizationEndpoint is where the user's browser goes to sign in
	// (RFC 6749 §3.1); empty when the server names none.
	AuthorizationEndpoint string `json:"authorization_endpoint,omitempty"`
	// DeviceAuthorizationEndpoint is RFC 8628 §4's endpoint of the
	// device flow; empty when the server names none.
	DeviceAuthorizationEndpoint string `json:"device_authorization_endpoint,omitempty"`
	// CodeChallengeMethodsSupported lists the PKCE methods (RFC 7636)
	// the server accepts, such as S256.
	CodeChallengeMethodsSupported []string `json:"code_challenge_methods_supported,omitempty"`
	// IntrospectionEndpoint (RFC 7662) and RevocationEndpoint (RFC 7009)
	// are empty when the server names none.
	IntrospectionEndpoint string `json:"introspection_endpoint,omitempty"`
	RevocationEndpoint    string `json:"revocation_endpoint,omitempty"`
	// JWKSURI is where the server's signing keys are.
	JWKSURI string `json:"jwks_uri,omitempty"`
	// GrantTypesSupported lists the grant types the server supports.
	GrantTypesSupported []string `json:"grant_types_supported,omitempty"`
	// TokenEndpointAuthMethodsSupported lists the client authentication
	// methods (client_secret_basic, private_key_jwt, tls_client_auth,
	// ...); RFC 8414 §2 reads an empty list as client_secret_basic.
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported,omitempty"`
	// TokenEndpointAuthSigningAlgValuesSupported lists the JWS
	// algorithms the token endpoint accepts for client assertions.
	TokenEndpointAuthSigningAlgValuesSupported []string `json:"token_endpoint_auth_signing_alg_values_supported,omitempty"`
	// DPoPSigningAlgValuesSupported lists the JWS algorithms the server
	// accepts for DPoP proofs (RFC 9449 §5.1); empty without DPoP.
	DPoPSigningAlgValuesSupported []string `json:"dpop_signing_alg_values_supported,omitempty"`
	// TLSClientCertificateBoundAccessTokens says the server issues
	// certificate-bound access tokens (RFC 8705 §3.3).
	TLSClientCertificateBoundAccessTokens bool `json:"tls_client_certificate_bound_access_tokens,omitempty"`
	// MTLSEndpointAliases are the endpoints to use with mutual TLS (RFC
	// 8705 §5), where the server asks for client certificates; empty
	// fields mean the ordinary endpoint.
	MTLSEndpointAliases MTLSEndpointAliases `json:"mtls_endpoint_aliases"`
}

// MTLSEndpointAliases are RFC 8705 §5's mtls_endpoint_aliases.
type MTLSEndpointAliases struct {
	TokenEndpoint         string `json:"token_endpoint,omitempty"`
	IntrospectionEndpoint string `json:"introspection_endpoint,omitempty"`
	RevocationEndpoint    string `json:"revocation_endpoint,omitempty"`
}

// IssuerConfig describes an authorization server known by its issuer
// identifier alone. See [NewIssuer].
type IssuerConfig struct {
	// Issuer is the issuer identifier, an https URL without query or
	// fragment ("https://login.example.com/realms/prod"). Required. Plain
	// http is accepted only to a loopback host, unless AllowInsecureHTTP
	// is set.
	Issuer string
	// HTTPClient fetches the metadata. Optional; if nil,
	// http.DefaultClient is used.
	HTTPClient *http.Client
	// AllowInsecureHTTP lets the metadata, and the token requests of
	// grants configured with this Issuer, travel over plain http to any
	// host. Optional; see [ClientCredentialsConfig.AllowInsecureHTTP].
	AllowInsecureHTTP bool
	// MaxAge is how long fetched metadata is used before it is fetched
	// again. Optional; 24 hours by default.
	MaxAge time.Duration
	// Clock tells the metadata's age. Optional; nil means the real clock.
	Clock clock.Clock
}

// defaultMetadataMaxAge is how long metadata is used by default: servers
// change endpoints rarely, and a token request that fails for want of
// the new ones makes the metadata be fetched again anyway.
const defaultMetadataMaxAge = 24 * time.Hour

// Validate reports every problem with c at once, or nil when c is usable.
func (c IssuerConfig) Validate() error {
	var p problems
	switch u, err := url.Parse(c.Issuer); {
	case c.Issuer == "":
		p.add("IssuerConfig: Issuer is empty; the issuer identifier is required")
	case err != nil:
		p.add("IssuerConfig: Issuer is not a valid URL: %v", err)
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
		p.add("IssuerConfig: Issuer %q must be an absolute https URL", redactURL(u))
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		p.add("IssuerConfig: Issuer %q has a query, fragment or user info; RFC 8414 §2 allows none", redactURL(u))
	case !c.AllowInsecureHTTP && !secure.Allowed(u):
		p = append(p, fmt.Errorf("providers: IssuerConfig: Issuer %q is plain http to a host that is not loopback; "+
			"use https, or set AllowInsecureHTTP only where something else protects the traffic: %w", redactURL(u), tokenmanager.ErrInsecureTransport))
	}
	if c.MaxAge < 0 {
		p.add("IssuerConfig: MaxAge is %v; want a positive duration, or 0 for the default of %v", c.MaxAge, defaultMetadataMaxAge)
	}
	return p.err()
}

// Issuer is an authorization server known by its issuer identifier: it
// fetches the server's metadata (RFC 8414, OpenID Connect Discovery) when
// first needed, keeps it for [IssuerConfig.MaxAge], and fetches it again
// sooner when a token request fails in a way new metadata could cure (the
// endpoint unreachable or gone). Set it as the Issuer of a grant's config
// ([GrantConfig], [ClientCredentialsConfig], [JWTBearerConfig],
// [TokenExchangeConfig]) instead of a TokenURL; many grants may share
// one. It is safe for concurrent use.
type Issuer struct {
	// Read-only after NewIssuer.
	issuer        string
	client        *http.Client
	allowInsecure bool
	maxAge        time.Duration
	clock         clock.Clock

	mu      sync.Mutex // guards md, fetched, stale
	md      *Metadata  // nil until fetched once
	fetched time.Time
	stale   bool // a token request failed: fetch again before the next one
}

// NewIssuer returns an Issuer for cfg, or cfg's problems. It makes no
// request: the metadata is fetched when a token is first needed, or by
// [Issuer.Metadata].
func NewIssuer(cfg IssuerConfig) (*Issuer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	i := &Issuer{issuer: cfg.Issuer, client: cfg.HTTPClient, allowInsecure: cfg.AllowInsecureHTTP,
		maxAge: cfg.MaxAge, clock: cfg.Clock}
	if i.client == nil {
		i.client = http.DefaultClient
	}
	if !i.allowInsecure {
		i.client = refuseInsecureRedirects(i.client)
	}
	if i.maxAge == 0 {
		i.maxAge = defaultMetadataMaxAge
	}
	if i.clock == nil {
		i.clock = clock.New()
	}
	return i, nil
}

// String returns the issuer identifier.
func (i *Issuer) String() string { return i.issuer }

// Metadata returns the server's metadata: the copy kept, or, when there
// is none yet, it is older than MaxAge or a token request failed since,
// a fresh one. When fetching fails and a copy is kept, the copy is
// returned (and fetching is tried again on the next call); otherwise the
// error, which is temporary unless the server answered with a document
// for another issuer, without a token endpoint, or pointing at plain http.
func (i *Issuer) Metadata(ctx context.Context) (Metadata, error) {
	i.mu.Lock()
	md, fresh := i.md, i.md != nil && !i.stale && i.clock.Since(i.fetched) < i.maxAge
	i.mu.Unlock()
	if fresh {
		return *md, nil
	}
	got, err := i.fetch(ctx)
	i.mu.Lock()
	defer i.mu.Unlock()
	if err != nil {
		if i.md != nil && !tokenmanager.IsPermanent(err) && ctx.Err() == nil {
			return *i.md, nil
		}
		return Metadata{}, err
	}
	i.md, i.fetched, i.stale = &got, i.clock.Now(), false
	return got, nil
}

// invalidate makes the next Metadata call fetch the metadata again.
func (i *Issuer) invalidate() {
	i.mu.Lock()
	i.stale = true
	i.mu.Unlock()
}

// wellKnown returns the metadata URLs to try, in order: OpenID Connect
// Discovery's (the issuer with /.well-known/openid-configuration
// appended), then RFC 8414 §3.1's (the well-known path inserted between
// host and path).
func (i *Issuer) wellKnown() []string {
	u, _ := url.Parse(i.issuer) // checked by Validate
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	oidc := *u
	oidc.RawPath, oidc.Path = "", ""
	oidcURL := oidc.String() + path + "/.well-known/openid-configuration"
	rfc := *u
	rfc.RawPath, rfc.Path = "", ""
	rfcURL := rfc.String() + "/.well-known/oauth-authorization-server" + path
	return []string{oidcURL, rfcURL}
}

// fetch gets the metadata: from the OpenID Connect location and, when
// that is not found, from RFC 8414's.
func (i *Issuer) fetch(ctx context.Context) (Metadata, error) {
	var errs []error
	for _, u := range i.wellKnown() {
		md, err, found := i.fetchFrom(ctx, u)
		if found {
			return md, err
		}
		errs = append(errs, err)
	}
	return Metadata{}, fmt.Errorf("providers: discovering %q: %w", i.issuer, errors.Join(errs...))
}

// fetchFrom gets the metadata at u; found is false when the server has
// no document there (404, 410), so the next location is worth trying.
func (i *Issuer) fetchFrom(ctx context.Context, u string) (md Metadata, err error, found bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Metadata{}, tokenmanager.Permanent(fmt.Errorf("providers: discovering %q: %w", i.issuer, err)), true
	}
	req.Header.Set("Accept", "application/json")
	resp, err := i.client.Do(req)
	if err != nil {
		return Metadata{}, fmt.Errorf("providers: discovering %q: %w", i.issuer, err), true
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil {
		return Metadata{}, fmt.Errorf("providers: discovering %q: reading %s: %w", i.issuer, u, err), true
	}
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return Metadata{}, fmt.Errorf("%s answered %d", u, resp.StatusCode), false
	case resp.StatusCode != http.StatusOK:
		return Metadata{}, fmt.Errorf("providers: discovering %q: %s answered %d", i.issuer, u, resp.StatusCode), true
	case len(body) > maxResponseBody:
		return Metadata{}, fmt.Errorf("providers: discovering %q: %s answered more than %d bytes: %w", i.issuer, u, maxResponseBody, ErrResponseTooLarge), true
	}
	if err := json.Unmarshal(body, &md); err != nil {
		return Metadata{}, fmt.Errorf("providers: discovering %q: %s is not a metadata document: %w", i.issuer, u, err), true
	}
	return md, i.check(md), true
}

// check refuses a document for another issuer (RFC 8414 §3.3: a
// mismatch is an attack or a misconfiguration, and the document must not
// be used), one without a token endpoint, and endpoints in clear text.
func (i *Issuer) check(md Metadata) error {
	if md.Issuer != i.issuer {
		return tokenmanager.Permanent(fmt.Errorf("providers: discovering %q: the metadata is for issuer %q; RFC 8414 §3.3 requires the issuer asked for",
			i.issuer, md.Issuer))
	}
	if md.TokenEndpoint == "" {
		return tokenmanager.Permanent(fmt.Errorf("providers: discovering %q: the metadata names no token_endpoint", i.issuer))
	}
	var p problems
	for _, e := range []struct{ name, url string }{
		{"token_endpoint", md.TokenEndpoint},
		{"mtls_endpoint_aliases.token_endpoint", md.MTLSEndpointAliases.TokenEndpoint},
		{"authorization_endpoint", md.AuthorizationEndpoint},
		{"device_authorization_endpoint", md.DeviceAuthorizationEndpoint},
	} {
		if e.url == "" {
			continue
		}
		switch u, err := url.Parse(e.url); {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			p.add("discovering %q: %s %q is not an absolute http or https URL", i.issuer, e.name, e.url)
		case !i.allowInsecure && !secure.Allowed(u):
			p = append(p, fmt.Errorf("providers: discovering %q: %s %q is plain http to a host that is not loopback, "+
				"so credentials would travel in clear text; set IssuerConfig.AllowInsecureHTTP only where something else "+
				"protects the traffic: %w", i.issuer, e.name, redactURL(u), tokenmanager.ErrInsecureTransport))
		}
	}
	if err := p.err(); err != nil {
		return tokenmanager.Permanent(err)
	}
	return nil
}
