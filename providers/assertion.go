package providers

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/go-tokenmanager/tokenmanager"
)

// JWTAssertionConfig describes a self-signed JWT assertion (RFC 7523
// §3), for the JWT bearer grant ([JWTBearer]) or as a client assertion
// ([ClientAssertion]): for every token request, iss, sub, aud, a unique
// jti, iat, nbf, exp, and Claims, signed with the private key. Printing
// or logging it never shows the key.
type JWTAssertionConfig struct {
	// Issuer is the iss claim: who made the assertion (a service
	// account, a client id). Required.
	Issuer string
	// Subject is the sub claim: whom the token is for. Optional; Issuer
	// by default.
	Subject string
	// Audience is the aud claim. Optional; by default the URL of the
	// token endpoint the assertion is sent to.
	Audience string
	// IssuerAudience sends the issuer identifier found by discovery as
	// aud, as in [PrivateKeyJWTConfig]. Optional; not with Audience.
	IssuerAudience bool
	// Key, KeyPEM, KeyID, Certificate, SendCertificateChain and
	// Algorithm are as in [PrivateKeyJWTConfig]: set Key or KeyPEM.
	Key                  crypto.Signer
	KeyPEM               []byte
	KeyID                string
	Certificate          *x509.Certificate
	SendCertificateChain bool
	Algorithm            string
	// Lifetime is how long each assertion is valid. Optional; 5 minutes
	// by default.
	Lifetime time.Duration
	// Claims are more claims to send ("scope" for Google service
	// accounts, ...). Optional; they may not set iss, sub, aud, exp, nbf,
	// iat or jti.
	Claims map[string]any
}

// JWTAssertion returns an AssertionFunc that signs a new assertion, as
// cfg describes, for every call. It checks cfg at once, returning every
// problem; no error names the key's bytes. It copies what it needs from
// cfg.
func JWTAssertion(cfg JWTAssertionConfig) (AssertionFunc, error) {
	var p problems
	if cfg.Issuer == "" {
		p.add("JWTAssertionConfig: Issuer is empty; the iss claim is required")
	}
	sub := cfg.Subject
	if sub == "" {
		sub = cfg.Issuer
	}
	for _, k := range registeredClaims {
		if _, ok := cfg.Claims[k]; ok {
			p.add("JWTAssertionConfig: Claims sets %q, which is set from the other fields", k)
		}
	}
	a := newAssertionMaker(assertionSettings{
		issuer: cfg.Issuer, subject: sub, audience: cfg.Audience, issuerAudience: cfg.IssuerAudience, lifetime: cfg.Lifetime, claims: maps.Clone(cfg.Claims),
		key: signingKey{key: cfg.Key, pem: cfg.KeyPEM, kid: cfg.KeyID, cert: cfg.Certificate, x5c: cfg.SendCertificateChain, alg: cfg.Algorithm},
	}, "JWTAssertionConfig", &p)
	if err := p.err(); err != nil {
		return nil, err
	}
	return a.assertion, nil
}

// Format prints c without its key.
func (c JWTAssertionConfig) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, "JWTAssertionConfig{Issuer:%q Subject:%q Audience:%q IssuerAudience:%v Key:%s KeyID:%q Certificate:%s SendCertificateChain:%v Algorithm:%q Lifetime:%v Claims:%q}",
		c.Issuer, c.Subject, c.Audience, c.IssuerAudience, keyText(c.Key, c.KeyPEM), c.KeyID, certText(c.Certificate), c.SendCertificateChain, c.Algorithm,
		c.Lifetime, slices.Sorted(maps.Keys(c.Claims)))
}

// LogValue logs c without its key.
func (c JWTAssertionConfig) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(c)) }

// MarshalJSON encodes c as the string Format prints, without its key.
func (c JWTAssertionConfig) MarshalJSON() ([]byte, error) { return json.Marshal(fmt.Sprint(c)) }

// registeredClaims are the claims an assertion's settings set.
var registeredClaims = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti"}

// defaultAssertionLifetime is an assertion's lifetime unless set.
const defaultAssertionLifetime = 5 * time.Minute

// signingKey is the key settings of PrivateKeyJWTConfig and
// JWTAssertionConfig.
type signingKey struct {
	key  crypto.Signer
	pem  []byte
	kid  string
	cert *x509.Certificate
	x5c  bool // send the chain as the x5c header
	alg  string
}

// assertionSettings is what an assertion says and how it is signed.
type assertionSettings struct {
	issuer, subject string
	audience        string // "": the token URL
	issuerAudience  bool   // aud is the discovered issuer
	lifetime        time.Duration
	claims          map[string]any
	key             signingKey
}

// assertionMaker signs assertions.
type assertionMaker struct {
	issuer, subject, audience string
	issuerAudience            bool
	lifetime                  time.Duration
	claims                    map[string]any
	signer                    jose.Signer
	alg                       jose.SignatureAlgorithm
	kid                       string
	x5t, x5c                  bool
	now                       func() time.Time
}

// newAssertionMaker checks s and, when it is usable, returns its maker;
// problems go to p, prefixed with where.
func newAssertionMaker(s assertionSettings, where string, p *problems) *assertionMaker {
	if s.lifetime < 0 {
		p.add("%s: Lifetime is %v; want a positive duration, or 0 for the default of %v", where, s.lifetime, defaultAssertionLifetime)
	}
	if s.lifetime == 0 {
		s.lifetime = defaultAssertionLifetime
	}
	if s.issuerAudience && s.audience != "" {
		p.add("%s: Audience and IssuerAudience are both set; set one", where)
	}
	key, chain := loadKey(s.key, where, p)
	if key == nil {
		return nil
	}
	alg, err := pickAlgorithm(key.Public(), s.key.alg)
	if err != nil {
		p.add("%s: %v", where, err)
		return nil
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	var cert *x509.Certificate
	if len(chain) > 0 {
		cert = chain[0]
	}
	if s.key.x5c {
		if cert == nil {
			p.add("%s: SendCertificateChain is set and there is no certificate; set Certificate, or put it in KeyPEM", where)
			return nil
		}
		// RFC 7515 §4.1.6: standard base64 DER, the key's certificate first.
		x5c := make([]string, len(chain))
		for i, c := range chain {
			x5c[i] = base64.StdEncoding.EncodeToString(c.Raw)
		}
		opts = opts.WithHeader("x5c", x5c)
	}
	if cert != nil {
		eq, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !eq.Equal(key.Public()) {
			p.add("%s: the certificate (%s) is not the key's: its public key differs", where, certText(cert))
			return nil
		}
		sum1, sum256 := sha1.Sum(cert.Raw), sha256.Sum256(cert.Raw)
		opts = opts.WithHeader("x5t", base64.RawURLEncoding.EncodeToString(sum1[:])).
			WithHeader("x5t#S256", base64.RawURLEncoding.EncodeToString(sum256[:]))
	}
	var sk any
	switch k := key.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
		sk = k
	default: // an HSM, a KMS: go-jose signs through crypto.Signer
		sk = cryptosigner.Opaque(key)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: sk, KeyID: s.key.kid}}, opts)
	if err != nil {
		p.add("%s: the key cannot sign with %s: %v", where, alg, err)
		return nil
	}
	return &assertionMaker{
		issuer: s.issuer, subject: s.subject, audience: s.audience, issuerAudience: s.issuerAudience, lifetime: s.lifetime, claims: s.claims,
		signer: signer, alg: alg, kid: s.key.kid, x5t: cert != nil, x5c: s.key.x5c, now: time.Now,
	}
}

// assertion signs a new assertion for r, an AssertionFunc.
func (m *assertionMaker) assertion(_ context.Context, r AssertionRequest) (string, error) {
	aud := m.audience
	switch {
	case m.issuerAudience:
		if r.Issuer == "" {
			return "", tokenmanager.Permanent(errors.New("IssuerAudience is set and the grant has no Issuer to take it from; " +
				"configure the grant with an Issuer, or set Audience"))
		}
		aud = r.Issuer
	case aud == "":
		aud = r.TokenURL
	}
	now := m.now()
	claims := jwt.Claims{
		Issuer:    m.issuer,
		Subject:   m.subject,
		Audience:  jwt.Audience{aud},
		ID:        rand.Text(), // 128 random bits: unique per assertion
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		Expiry:    jwt.NewNumericDate(now.Add(m.lifetime)),
	}
	b := jwt.Signed(m.signer).Claims(claims)
	if len(m.claims) > 0 {
		b = b.Claims(m.claims)
	}
	tok, err := b.Serialize()
	if err != nil {
		return "", fmt.Errorf("signing the assertion with %s: %w", m.alg, err)
	}
	return tok, nil
}

// describe names the maker's settings, never its key.
func (m *assertionMaker) describe(name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s(%q, %s", name, m.issuer, m.alg)
	if m.kid != "" {
		fmt.Fprintf(&b, ", kid %q", m.kid)
	}
	if m.x5t {
		b.WriteString(", x5t")
	}
	if m.x5c {
		b.WriteString(", x5c")
	}
	if m.audience != "" {
		fmt.Fprintf(&b, ", aud %q", m.audience)
	}
	if m.issuerAudience {
		b.WriteString(", aud issuer")
	}
	b.WriteString(", key [redacted])")
	return b.String()
}

// loadKey returns the signing key and its certificate chain, the key's
// certificate first (none when it has none), or nil after adding the
// problem to p. The chain is Certificate alone when it is set, else
// KeyPEM's certificates, the key's first and the others in their order.
func loadKey(k signingKey, where string, p *problems) (crypto.Signer, []*x509.Certificate) {
	switch {
	case k.key != nil && len(k.pem) > 0:
		p.add("%s: Key and KeyPEM are both set; set one", where)
		return nil, nil
	case k.key != nil:
		if k.cert == nil {
			return k.key, nil
		}
		return k.key, []*x509.Certificate{k.cert}
	case len(k.pem) == 0:
		p.add("%s: no key; set Key or KeyPEM", where)
		return nil, nil
	}
	key, certs, err := parsePEM(k.pem)
	if err != nil {
		p.add("%s: KeyPEM %v", where, err)
		return nil, nil
	}
	if k.cert != nil {
		return key, []*x509.Certificate{k.cert}
	}
	cert, err := keyCertificate(key, certs)
	if err != nil {
		p.add("%s: KeyPEM %v", where, err)
		return nil, nil
	}
	if cert == nil {
		return key, nil
	}
	chain := []*x509.Certificate{cert}
	for _, c := range certs {
		if c != cert {
			chain = append(chain, c)
		}
	}
	return key, chain
}

// keyCertificate returns the certificate among certs whose public key is
// key's, whatever its place in the chain (a CA before the leaf, as some
// exports order it), or nil when certs is empty.
func keyCertificate(key crypto.Signer, certs []*x509.Certificate) (*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, nil
	}
	for _, c := range certs {
		if eq, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); ok && eq.Equal(key.Public()) {
			return c, nil
		}
	}
	subjects := make([]string, len(certs))
	for i, c := range certs {
		subjects[i] = certText(c)
	}
	return nil, fmt.Errorf("holds %d certificates (%s) and none is the private key's: their public keys differ", len(certs), strings.Join(subjects, ", "))
}

// parsePEM reads the one private key in data and its certificates, if
// any, in order. Its errors name block types and parser messages, never
// bytes.
func parsePEM(data []byte) (crypto.Signer, []*x509.Certificate, error) {
	var key crypto.Signer
	var certs []*x509.Certificate
	blocks := 0
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		blocks++
		switch b.Type {
		case "ENCRYPTED PRIVATE KEY":
			return nil, nil, errors.New("holds an encrypted private key; decrypt it first")
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
			if strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED") {
				return nil, nil, errors.New("holds an encrypted private key; decrypt it first")
			}
			if key != nil {
				return nil, nil, errors.New("holds more than one private key")
			}
			k, err := parseKeyBlock(b)
			if err != nil {
				return nil, nil, fmt.Errorf("has a %s block that does not parse: %w", b.Type, err)
			}
			key = k
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("has a CERTIFICATE block that does not parse: %w", err)
			}
			certs = append(certs, c)
		}
	}
	if key == nil {
		if blocks == 0 {
			return nil, nil, errors.New("holds no PEM block")
		}
		return nil, nil, errors.New("holds no private key (want a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)")
	}
	return key, certs, nil
}

func parseKeyBlock(b *pem.Block) (crypto.Signer, error) {
	var k any
	var err error
	switch b.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T cannot sign", k)
	}
	return s, nil
}

// pickAlgorithm returns want, checked against the key, or the key's
// default algorithm when want is empty.
func pickAlgorithm(pub crypto.PublicKey, want string) (jose.SignatureAlgorithm, error) {
	var allowed []jose.SignatureAlgorithm
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 {
			return "", fmt.Errorf("the RSA key has %d bits; use 2048 or more", n)
		}
		allowed = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			allowed = []jose.SignatureAlgorithm{jose.ES256}
		case elliptic.P384():
			allowed = []jose.SignatureAlgorithm{jose.ES384}
		case elliptic.P521():
			allowed = []jose.SignatureAlgorithm{jose.ES512}
		default:
			return "", fmt.Errorf("the ECDSA key's curve %s is not one of P-256, P-384, P-521", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
		allowed = []jose.SignatureAlgorithm{jose.EdDSA}
	default:
		return "", fmt.Errorf("a %T key cannot sign JWTs; use RSA, ECDSA or Ed25519", pub)
	}
	if want == "" {
		return allowed[0], nil
	}
	if slices.Contains(allowed, jose.SignatureAlgorithm(want)) {
		return jose.SignatureAlgorithm(want), nil
	}
	return "", fmt.Errorf("the key cannot sign with Algorithm %q; use one of %v", want, allowed)
}
