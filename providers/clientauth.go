package providers

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"time"
)

// ClientAuth is how a client proves who it is to the token endpoint
// (RFC 6749 §2.3, RFC 7521 §4.2), separate from the grant, so every grant
// can use every method. Its values come from [ClientSecret],
// [PrivateKeyJWT], [ClientAssertion], [TLSClientAuth] and [NoClientAuth];
// it is safe for concurrent use, and printing or logging it never shows a
// secret or a key.
type ClientAuth interface {
	// authenticate adds the client's credentials to r.
	authenticate(ctx context.Context, r *tokenRequest) error
	// clientID is the client's identifier, or "" when it sends none.
	clientID() string
	// problems lists what is wrong with the method's settings.
	problems() []error
	// secretForms are the forms a fixed secret takes in a request.
	secretForms() []string
}

// clientAssertionType is RFC 7523 §2.2's client_assertion_type.
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// ClientSecret authenticates with a client secret ("client_secret_basic"
// or "client_secret_post"), as [ClientCredentialsConfig] does: style says
// where it travels, and AuthStyleAutoDetect tries the header, then the
// body, remembering what worked. An empty secret sends only the client
// id.
func ClientSecret(clientID, secret string, style AuthStyle) ClientAuth {
	return &clientSecret{id: clientID, secret: secret, style: style}
}

type clientSecret struct {
	id, secret string
	style      AuthStyle
}

func (a *clientSecret) authenticate(_ context.Context, r *tokenRequest) error {
	if r.style == AuthStyleInHeader {
		// RFC 6749 §2.3.1: both are form-url-encoded before Basic auth.
		basic := url.QueryEscape(a.id) + ":" + url.QueryEscape(a.secret)
		r.header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(basic)))
		return nil
	}
	r.form.Set("client_id", a.id)
	if a.secret != "" {
		r.form.Set("client_secret", a.secret)
	}
	return nil
}

func (a *clientSecret) clientID() string { return a.id }

func (a *clientSecret) problems() []error {
	var p problems
	if a.id == "" {
		p.add("Auth: ClientSecret's client ID is empty; the client's identifier is required")
	}
	if !a.style.valid() {
		p.add("Auth: ClientSecret's style is %v; use AuthStyleAutoDetect, AuthStyleInHeader or AuthStyleInParams", a.style)
	}
	return p
}

// secretForms returns the forms the client secret takes in a request:
// the HTTP Basic credentials, URL-encoded, path-escaped and raw. It
// returns nil for a public client.
func (a *clientSecret) secretForms() []string {
	if a.secret == "" {
		return nil
	}
	basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(a.id) + ":" + url.QueryEscape(a.secret)))
	return []string{basic, url.QueryEscape(a.secret), url.PathEscape(a.secret), a.secret}
}

// NoClientAuth is a public client, one without credentials: only its
// client_id is sent, in the body. JWTBearer and TokenExchange take it
// (and also a nil Auth, which sends no client_id either);
// ClientCredentialsGrant refuses it, the client-credentials grant being
// only for confidential clients (RFC 6749 §4.4).
func NoClientAuth(clientID string) ClientAuth { return &noClientAuth{id: clientID} }

type noClientAuth struct{ id string }

func (a *noClientAuth) authenticate(_ context.Context, r *tokenRequest) error {
	r.form.Set("client_id", a.id)
	return nil
}

func (a *noClientAuth) clientID() string      { return a.id }
func (a *noClientAuth) secretForms() []string { return nil }

func (a *noClientAuth) problems() []error {
	var p problems
	if a.id == "" {
		p.add("Auth: NoClientAuth's client ID is empty; the client's identifier is required")
	}
	return p
}

// AssertionRequest tells an [AssertionFunc] what the assertion is for.
type AssertionRequest struct {
	// ClientID is the client's identifier: the one given to
	// ClientAssertion or PrivateKeyJWT, or, for a JWT bearer grant's
	// assertion, the Auth's ("" without one).
	ClientID string
	// TokenURL is the token endpoint the assertion is sent to, the usual
	// audience (aud) of a signed assertion. With discovery it is the
	// metadata's token_endpoint, even when the request goes to its
	// mutual-TLS alias.
	TokenURL string
	// Issuer is the authorization server's issuer identifier when the
	// grant was configured with an [Issuer], "" otherwise: the audience
	// some servers want instead of TokenURL.
	Issuer string
}

// AssertionFunc returns an assertion, a JWT for RFC 7523, to send to a
// token endpoint: as the client's credentials ([ClientAssertion]) or as
// the grant itself ([JWTBearerConfig.Assertion]). It is called for every
// token request, from the token actor, with the request's context; it
// must be safe for concurrent use. [JWTAssertion] makes one that signs
// with a private key; for a Kubernetes projected service-account token or
// any other federated credential, read it anew on each call, since such
// tokens rotate. An error is returned to the manager wrapped: temporary
// unless it says it is permanent (tokenmanager.Permanent).
type AssertionFunc func(ctx context.Context, r AssertionRequest) (string, error)

// ClientAssertion authenticates with an assertion from fn (RFC 7521 §4.2,
// RFC 7523 §2.2): client_assertion_type
// "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
// client_assertion, and client_id when clientID is not empty (Entra ID
// requires it; RFC 7521 allows it). Use it for a workload identity token
// (Entra workload identity on Kubernetes: the file named by
// AZURE_FEDERATED_TOKEN_FILE), or for a key kept where PrivateKeyJWT
// cannot reach it. The assertion never appears in an error: a server
// echoing it gets it shown as [redacted].
func ClientAssertion(clientID string, fn AssertionFunc) ClientAuth {
	return &clientAssertion{id: clientID, fn: fn, name: "ClientAssertion"}
}

type clientAssertion struct {
	id   string
	fn   AssertionFunc
	name string // ClientAssertion or PrivateKeyJWT, for messages
	desc string // PrivateKeyJWT's settings, for String
}

func (a *clientAssertion) authenticate(ctx context.Context, r *tokenRequest) error {
	tok, err := a.fn(ctx, AssertionRequest{ClientID: a.id, TokenURL: r.tokenURL, Issuer: r.issuer})
	if err != nil {
		return fmt.Errorf("providers: %s: making the client assertion: %w", a.name, err)
	}
	if tok == "" {
		return fmt.Errorf("providers: %s: the client assertion is empty", a.name)
	}
	r.secrets = append(r.secrets, tok)
	r.form.Set("client_assertion_type", clientAssertionType)
	r.form.Set("client_assertion", tok)
	if a.id != "" {
		r.form.Set("client_id", a.id)
	}
	return nil
}

func (a *clientAssertion) clientID() string      { return a.id }
func (a *clientAssertion) secretForms() []string { return nil }

func (a *clientAssertion) problems() []error {
	var p problems
	if a.fn == nil {
		p.add("Auth: ClientAssertion's function is nil")
	}
	return p
}

// PrivateKeyJWTConfig describes private_key_jwt client authentication
// (RFC 7523 §2.2, OpenID Connect Core §9): for every token request, a
// short-lived JWT signed with the client's private key, with iss and sub
// the client id, aud the token endpoint, a unique jti, iat, nbf and exp.
// Printing or logging it never shows the key.
type PrivateKeyJWTConfig struct {
	// ClientID is the client's identifier: iss, sub and client_id.
	// Required.
	ClientID string
	// Key signs the assertions: an *rsa.PrivateKey (2048 bits or more),
	// an *ecdsa.PrivateKey (P-256, P-384, P-521), an ed25519.PrivateKey,
	// or any crypto.Signer over such a key (an HSM, a cloud KMS). Set
	// Key or KeyPEM.
	Key crypto.Signer
	// KeyPEM is the private key in PEM: PKCS #8 ("PRIVATE KEY"), PKCS #1
	// ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY"), unencrypted. It
	// may also hold the key's certificate ("CERTIFICATE", as Azure Key
	// Vault's and most PEM exports do), alone or in a chain in any order,
	// which is then used as Certificate unless Certificate is set; a
	// chain none of whose certificates is the key's is refused. Set Key
	// or KeyPEM.
	KeyPEM []byte
	// KeyID is sent as the kid header, naming the key among those the
	// server knows for the client (Okta, Keycloak with a JWKS URL).
	// Optional.
	KeyID string
	// Certificate is the key's X.509 certificate, for servers that find
	// the key by its thumbprint (Microsoft Entra ID certificate
	// credentials): its SHA-1 and SHA-256 thumbprints are sent as the
	// x5t and x5t#S256 headers. Optional; its public key must be Key's.
	Certificate *x509.Certificate
	// SendCertificateChain sends the certificate chain in the x5c header
	// (RFC 7515 §4.1.6), the key's certificate first, as Microsoft Entra
	// ID's subject name and issuer authentication needs (azidentity's
	// SendCertificateChain, MSAL's WithX5C): Certificate alone when it is
	// set, else every certificate in KeyPEM, the key's first and the
	// others in their order there. Optional; it needs a certificate.
	SendCertificateChain bool
	// Algorithm is the JWS algorithm: RS256, RS384, RS512, PS256, PS384,
	// PS512, ES256, ES384, ES512 or EdDSA. Optional; by default RS256 for
	// RSA keys, ES256/ES384/ES512 by curve, EdDSA for Ed25519.
	Algorithm string
	// Audience is the assertion's aud. Optional; by default the token
	// endpoint's URL, which Entra ID, Okta and Keycloak accept; some
	// servers (ZITADEL, Keycloak optionally) want their issuer URL.
	Audience string
	// IssuerAudience sends the issuer identifier found by discovery as
	// aud instead of the token endpoint's URL, as
	// draft-ietf-oauth-rfc7523bis and FAPI 2.0 ask: the grant must be
	// configured with an [Issuer]. Optional; not with Audience.
	IssuerAudience bool
	// Lifetime is how long each assertion is valid. Optional; 5 minutes
	// by default.
	Lifetime time.Duration
}

// PrivateKeyJWT returns private_key_jwt client authentication. It checks
// cfg at once, returning every problem (an unreadable key, a certificate
// for another key, an algorithm the key cannot do, ...); no error names
// the key's bytes. It copies what it needs from cfg.
func PrivateKeyJWT(cfg PrivateKeyJWTConfig) (ClientAuth, error) {
	var p problems
	if cfg.ClientID == "" {
		p.add("PrivateKeyJWTConfig: ClientID is empty; the client's identifier is required (iss and sub)")
	}
	a := newAssertionMaker(assertionSettings{
		issuer: cfg.ClientID, subject: cfg.ClientID, audience: cfg.Audience, issuerAudience: cfg.IssuerAudience, lifetime: cfg.Lifetime,
		key: signingKey{key: cfg.Key, pem: cfg.KeyPEM, kid: cfg.KeyID, cert: cfg.Certificate, x5c: cfg.SendCertificateChain, alg: cfg.Algorithm},
	}, "PrivateKeyJWTConfig", &p)
	if err := p.err(); err != nil {
		return nil, err
	}
	return &clientAssertion{id: cfg.ClientID, fn: a.assertion, name: "PrivateKeyJWT", desc: a.describe("PrivateKeyJWT")}, nil
}

// Format prints c without its key.
func (c PrivateKeyJWTConfig) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, "PrivateKeyJWTConfig{ClientID:%q Key:%s KeyID:%q Certificate:%s SendCertificateChain:%v Algorithm:%q Audience:%q IssuerAudience:%v Lifetime:%v}",
		c.ClientID, keyText(c.Key, c.KeyPEM), c.KeyID, certText(c.Certificate), c.SendCertificateChain, c.Algorithm, c.Audience, c.IssuerAudience, c.Lifetime)
}

// LogValue logs c without its key.
func (c PrivateKeyJWTConfig) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(c)) }

// MarshalJSON encodes c as the string Format prints, without its key, so
// a config logged as JSON (inside a slice or a struct, where slog does
// not call LogValue) does not show it.
func (c PrivateKeyJWTConfig) MarshalJSON() ([]byte, error) { return json.Marshal(fmt.Sprint(c)) }

// keyText describes a key without showing it.
func keyText(key crypto.Signer, pem []byte) string {
	switch {
	case key != nil:
		return fmt.Sprintf("[redacted %T]", key)
	case len(pem) > 0:
		return fmt.Sprintf("[redacted PEM, %d bytes]", len(pem))
	}
	return "none"
}

// certText describes a certificate by its subject.
func certText(c *x509.Certificate) string {
	if c == nil {
		return "none"
	}
	return fmt.Sprintf("%q", c.Subject.String())
}

// Format prints a without its secret, whatever the verb.
func (a *clientSecret) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "ClientSecret(%q, [redacted], %v)", a.id, a.style)
}

// Format prints a, whatever the verb.
func (a *noClientAuth) Format(f fmt.State, _ rune) { fmt.Fprintf(f, "NoClientAuth(%q)", a.id) }

// Format prints a without its key, whatever the verb.
func (a *clientAssertion) Format(f fmt.State, _ rune) {
	if a.desc != "" {
		io.WriteString(f, a.desc)
		return
	}
	fmt.Fprintf(f, "%s(%q)", a.name, a.id)
}
