package tokenmanager

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-tokenmanager/tokenmanager/internal/dpop"
)

// DPoP is a client's proof-of-possession key (RFC 9449) and the DPoP
// nonces servers gave it. Set it as [Settings.DPoP] to bind an identity's
// tokens to the key: the token requests of package providers' grants
// carry a proof of it, and a token the server issues as token_type DPoP
// is sent as "Authorization: DPoP <token>" with a fresh proof on every
// request. See docs/sender-constrained.md.
//
// The private key never leaves the [crypto.Signer]: a DPoP prints as its
// public key's thumbprint only. It is safe for concurrent use by multiple
// goroutines.
type DPoP struct {
	key    atomic.Pointer[dpop.Key]
	nonces dpop.Nonces
	now    func() time.Time // iat; time.Now except in tests
}

// NewDPoP returns a DPoP over key: an ECDSA key on P-256 (ES256), P-384
// (ES384) or P-521 (ES512), an Ed25519 key (EdDSA) or an RSA key of 2048
// bits or more (PS256). Any [crypto.Signer] will do, one in an HSM or a
// KMS included; NewDPoP signs once to check it can. If key is nil, a new
// P-256 key is generated in memory (ES256, which every server supporting
// DPoP accepts).
func NewDPoP(key crypto.Signer) (*DPoP, error) {
	d := &DPoP{now: time.Now}
	if err := d.SetKey(key); err != nil {
		return nil, err
	}
	return d, nil
}

// SetKey replaces d's key (nil: a new P-256 key), for rotation. Tokens
// bound to the old key no longer match the proofs: the first request
// that carries one is rejected, and recovery fetches a token bound to the
// new key.
func (d *DPoP) SetKey(key crypto.Signer) error {
	if key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("tokenmanager: generating a DPoP key: %w", err)
		}
		key = k
	}
	k, err := dpop.NewKey(key)
	if err != nil {
		return fmt.Errorf("tokenmanager: DPoP key: %w", err)
	}
	d.key.Store(k)
	return nil
}

// Thumbprint returns the JWK SHA-256 thumbprint (RFC 7638) of d's public
// key, base64url-encoded: the "jkt" that tokens bound to d carry in their
// "cnf" claim, and the dpop_jkt of an authorization request.
func (d *DPoP) Thumbprint() string { return d.key.Load().Thumbprint() }

// Proof returns a new DPoP proof for a request of method to rawURL: a
// JWT of type dpop+jwt whose header holds d's public key, with a unique
// jti, htm, htu (rawURL without query and fragment, normalised), iat, the
// nonce last given for rawURL's origin (see [DPoP.SetNonce]) and, when
// accessToken is not empty, ath, the hash of the token it accompanies.
// The transports and grants of this module call it on every request;
// call it yourself for a request they do not make.
func (d *DPoP) Proof(method, rawURL, accessToken string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("tokenmanager: DPoP proof for an invalid URL: %w", err)
	}
	return d.ProofFor(method, u, accessToken)
}

// ProofFor is [DPoP.Proof] for a parsed URL.
func (d *DPoP) ProofFor(method string, u *url.URL, accessToken string) (string, error) {
	if u == nil || u.Host == "" || (!strings.EqualFold(u.Scheme, "https") && !strings.EqualFold(u.Scheme, "http")) {
		return "", errors.New("tokenmanager: a DPoP proof needs an absolute http or https URL")
	}
	if method == "" {
		method = "GET"
	}
	p, err := d.key.Load().Proof(dpop.Claims{
		Method: method,
		URL:    dpop.HTU(u),
		Issued: d.now(),
		Token:  accessToken,
		Nonce:  d.nonces.Get(dpop.Origin(u)),
	})
	if err != nil {
		return "", fmt.Errorf("tokenmanager: %w", err)
	}
	return p, nil
}

// SetNonce records nonce, from a DPoP-Nonce response header, as the
// nonce for the origin (scheme, host and port) of rawURL: the next proofs
// for that origin carry it. An empty or malformed nonce is ignored.
func (d *DPoP) SetNonce(rawURL, nonce string) {
	if u, err := url.Parse(rawURL); err == nil {
		d.SetNonceFor(u, nonce)
	}
}

// SetNonceFor is [DPoP.SetNonce] for a parsed URL.
func (d *DPoP) SetNonceFor(u *url.URL, nonce string) {
	d.nonces.Set(dpop.Origin(u), nonce)
}

// String returns "DPoP(<alg> <thumbprint>)": never the key.
func (d *DPoP) String() string {
	if d == nil {
		return "DPoP(nil)"
	}
	k := d.key.Load()
	if k == nil {
		return "DPoP(no key)"
	}
	return "DPoP(" + k.Algorithm() + " " + k.Thumbprint() + ")"
}

// GoString is String, for %#v.
func (d *DPoP) GoString() string { return d.String() }

// Format prints d as String does, whatever the verb.
func (d *DPoP) Format(f fmt.State, _ rune) { fmt.Fprint(f, d.String()) }

// IsDPoP reports whether tok was issued as a DPoP-bound token: its
// token_type is "DPoP" (compared without regard to case).
func IsDPoP(tok Token) bool { return strings.EqualFold(tok.TokenType, "DPoP") }
