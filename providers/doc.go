// Package providers holds ready-made [tokenmanager.TokenProvider]s.
//
// [ClientCredentials] implements the OAuth 2.0 client-credentials grant
// (RFC 6749 §4.4) against any token endpoint: Auth0, Microsoft Entra ID,
// Keycloak, Okta, Cognito and the like. It copes with the quirks such
// servers show in the wild: expires_in sent as a string or not at all (the
// lifetime is then read from a JWT access token's exp claim), form-encoded
// responses, JSON served as text/plain, servers that want the client's
// credentials in the body rather than in HTTP Basic auth, and Retry-After
// on 429 and 503 answers.
//
// Credentials without shared secrets: client authentication is separate
// from the grant, so every grant can use every method. A [ClientAuth] is
// a client secret ([ClientSecret]), a signed private_key_jwt assertion
// ([PrivateKeyJWT], RFC 7523 §2.2, with kid and the x5t/x5t#S256
// thumbprints Entra ID certificate credentials use), a client certificate
// ([TLSClientAuth]), an assertion from a
// callback ([ClientAssertion]: a Kubernetes projected service-account
// token, any federated credential) or none ([NoClientAuth], for the
// grants other than client credentials, which RFC 6749 §4.4 reserves for
// confidential clients). The grants
// are [ClientCredentialsGrant], [JWTBearer] (RFC 7523 §2.1, with a
// self-signed [JWTAssertion] or a callback) and [TokenExchange] (RFC
// 8693); they share ClientCredentials' answer handling, and redact every
// assertion and subject token a server echoes, as they do the secret.
//
// Discovery: every grant's config takes an [Issuer] instead of a
// TokenURL. [NewIssuer] names the authorization server by its issuer URL
// alone; its metadata (RFC 8414, OpenID Connect Discovery) is fetched when
// first needed, checked (the issuer must be the one asked for, the
// endpoints https), kept for a day and fetched again sooner when a token
// request fails for want of new endpoints.
//
// Mutual TLS (RFC 8705): [TLSClientAuth] authenticates the client with its
// TLS certificate (tls_client_auth and self_signed_tls_client_auth), to
// the metadata's mtls_endpoint_aliases when there are any;
// [CertificateTransport] sends certificate-bound access tokens to APIs
// over the same certificate. SendCertificateChain puts an assertion's
// certificate chain in its x5c header, as Entra ID's subject name and
// issuer authentication needs.
//
// DPoP (RFC 9449): when the identity has a key (tokenmanager.Settings.DPoP),
// every token request of a grant carries a DPoP proof of it, and the
// token endpoint's use_dpop_nonce with a DPoP-Nonce header is answered by
// one more request with that nonce.
//
// Tokens on behalf of users: [RefreshToken] is the refresh token grant
// (RFC 6749 §6) for one identity (a user, a client, a resource), its
// refresh token kept sealed in a users.Store; each rotated refresh token
// is saved durably before the access token is used, and an invalid_grant
// is a permanent *[ReauthError] wrapping tokenmanager.ErrReauthRequired.
//
// [FromTokenSource] adapts any golang.org/x/oauth2 TokenSource, for the
// flows that package covers (Google credentials, JWT bearer grants, ...).
//
// A token endpoint's error answer becomes a *[RetrieveError]. Its
// RetryAfter method tells the token actor how long the server asked it to
// wait, so a rate-limited endpoint is not hammered; its Permanent method
// tells the manager when retrying cannot help (invalid_client, a 401, ...),
// so waiting requests fail at once. No error from this package contains
// the client secret, a private key, an assertion, a subject token or an
// access token.
//
// Credentials travel only over https, or plain http to a loopback host,
// unless AllowInsecureHTTP is set in the provider's config.
package providers
