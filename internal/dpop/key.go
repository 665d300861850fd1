// Package dpop builds DPoP proofs (RFC 9449) and keeps the nonces servers
// hand out. It uses the standard library only; the root package's DPoP
// type is the public face of it.
package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"time"
)

var b64 = base64.RawURLEncoding

// Key signs proofs. Its header (typ, alg, jwk) is the same for every
// proof, so it is encoded once. A Key is immutable and safe for
// concurrent use by multiple goroutines (as far as its Signer is).
type Key struct {
	signer crypto.Signer
	alg    string
	hash   crypto.Hash // 0 for EdDSA
	size   int         // ECDSA: bytes per coordinate
	// header is the proof's encoded JOSE header followed by ".".
	header []byte
	jkt    string // RFC 7638 thumbprint of the public key
}

// NewKey returns a Key over s. Supported: ECDSA on P-256 (ES256), P-384
// (ES384) and P-521 (ES512), Ed25519 (EdDSA) and RSA of 2048 bits or more
// (PS256).
func NewKey(s crypto.Signer) (k *Key, err error) {
	defer func() {
		if r := recover(); r != nil {
			k, err = nil, errors.New("the key's Public or Sign panicked")
		}
	}()
	if s == nil {
		return nil, errors.New("the key is nil")
	}
	k = &Key{signer: s}
	var members [][2]string // the JWK's required members, in lexical order (RFC 7638)
	switch pub := s.Public().(type) {
	case *ecdsa.PublicKey:
		var crv string
		switch pub.Curve {
		case elliptic.P256():
			crv, k.alg, k.hash, k.size = "P-256", "ES256", crypto.SHA256, 32
		case elliptic.P384():
			crv, k.alg, k.hash, k.size = "P-384", "ES384", crypto.SHA384, 48
		case elliptic.P521():
			crv, k.alg, k.hash, k.size = "P-521", "ES512", crypto.SHA512, 66
		default:
			return nil, fmt.Errorf("ECDSA curve %s is not supported; use P-256, P-384 or P-521", pub.Curve.Params().Name)
		}
		raw, err := pub.Bytes() // 0x04 || X || Y
		if err != nil {
			return nil, fmt.Errorf("the ECDSA public key is invalid: %v", err)
		}
		x, y := raw[1:1+k.size], raw[1+k.size:]
		members = [][2]string{{"crv", crv}, {"kty", "EC"}, {"x", b64.EncodeToString(x)}, {"y", b64.EncodeToString(y)}}
	case ed25519.PublicKey:
		k.alg = "EdDSA"
		members = [][2]string{{"crv", "Ed25519"}, {"kty", "OKP"}, {"x", b64.EncodeToString(pub)}}
	case *rsa.PublicKey:
		if pub.N.BitLen() < 2048 {
			return nil, fmt.Errorf("the RSA key has %d bits; at least 2048 are required", pub.N.BitLen())
		}
		k.alg, k.hash = "PS256", crypto.SHA256
		members = [][2]string{{"e", b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes())}, {"kty", "RSA"}, {"n", b64.EncodeToString(pub.N.Bytes())}}
	default:
		return nil, fmt.Errorf("key type %T is not supported; use an ECDSA (P-256, P-384, P-521), Ed25519 or RSA key", pub)
	}
	jwk := []byte{'{'}
	for i, m := range members {
		if i > 0 {
			jwk = append(jwk, ',')
		}
		jwk = strconv.AppendQuote(jwk, m[0]) // names and base64url values need no escaping
		jwk = append(jwk, ':')
		jwk = strconv.AppendQuote(jwk, m[1])
	}
	jwk = append(jwk, '}')
	sum := sha256.Sum256(jwk)
	k.jkt = b64.EncodeToString(sum[:])
	h := `{"typ":"dpop+jwt","alg":"` + k.alg + `","jwk":` + string(jwk) + `}`
	k.header = append(b64.AppendEncode(nil, []byte(h)), '.')
	// Sign once now, so a signer that cannot sign (a KMS without access,
	// a key of the wrong kind) fails here rather than on a request.
	if _, err := k.sign([]byte("probe")); err != nil {
		return nil, err
	}
	return k, nil
}

// Algorithm returns the JWS algorithm of k's proofs.
func (k *Key) Algorithm() string { return k.alg }

// Thumbprint returns the JWK SHA-256 thumbprint (RFC 7638) of k's public
// key, base64url: the cnf.jkt of the tokens bound to it.
func (k *Key) Thumbprint() string { return k.jkt }

// Public returns k's public key.
func (k *Key) Public() crypto.PublicKey { return k.signer.Public() }

// Claims are the proof's claims besides jti, which Proof makes.
type Claims struct {
	Method string    // htm
	URL    string    // htu, normalised (see HTU)
	Issued time.Time // iat
	Token  string    // the access token; ath is its hash. Empty: no ath.
	Nonce  string    // empty: none
}

// Proof returns a new signed proof for c, with a fresh random jti.
func (k *Key) Proof(c Claims) (string, error) {
	var id [16]byte
	if _, err := io.ReadFull(rand.Reader, id[:]); err != nil {
		return "", fmt.Errorf("making a jti: %v", err)
	}
	// The claims, as JSON: jti, htm, htu, iat, then ath and nonce when set.
	p := make([]byte, 0, 160+len(c.URL)+len(c.Nonce))
	p = append(p, `{"jti":"`...)
	p = b64.AppendEncode(p, id[:])
	p = append(p, `","htm":`...)
	p = appendJSONString(p, c.Method)
	p = append(p, `,"htu":`...)
	p = appendJSONString(p, c.URL)
	p = append(p, `,"iat":`...)
	p = strconv.AppendInt(p, c.Issued.Unix(), 10)
	if c.Token != "" {
		sum := sha256.Sum256([]byte(c.Token))
		p = append(p, `,"ath":"`...)
		p = b64.AppendEncode(p, sum[:])
		p = append(p, '"')
	}
	if c.Nonce != "" {
		p = append(p, `,"nonce":`...)
		p = appendJSONString(p, c.Nonce)
	}
	p = append(p, '}')

	buf := make([]byte, 0, len(k.header)+b64.EncodedLen(len(p))+1+b64.EncodedLen(2*66+8))
	buf = append(buf, k.header...)
	buf = b64.AppendEncode(buf, p)
	sig, err := k.sign(buf)
	if err != nil {
		return "", err
	}
	buf = append(buf, '.')
	return string(b64.AppendEncode(buf, sig)), nil
}

// appendJSONString appends s as a JSON string. Method, URL and nonce are
// plain ASCII in practice; anything else goes through encoding/json,
// which also mends invalid UTF-8.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// ATH returns the ath claim for token: base64url(SHA-256(token)).
func ATH(token string) string {
	sum := sha256.Sum256([]byte(token))
	return b64.EncodeToString(sum[:])
}

// sign signs msg as JWS wants for k's algorithm. Errors say nothing of
// the key. A panicking Signer (an HSM or KMS client) is contained.
func (k *Key) sign(msg []byte) (sig []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			sig, err = nil, errors.New("signing a DPoP proof: the signer panicked")
		}
	}()
	if k.hash == 0 {
		sig, err = k.signer.Sign(rand.Reader, msg, crypto.Hash(0))
		if err != nil {
			return nil, fmt.Errorf("signing a DPoP proof: %v", err)
		}
		return sig, nil
	}
	var digest []byte
	if k.hash == crypto.SHA256 {
		sum := sha256.Sum256(msg)
		digest = sum[:]
	} else {
		h := k.hash.New()
		h.Write(msg)
		digest = h.Sum(nil)
	}
	var opts crypto.SignerOpts = k.hash
	if k.alg == "PS256" {
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: k.hash}
	}
	sig, err = k.signer.Sign(rand.Reader, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("signing a DPoP proof: %v", err)
	}
	if k.size == 0 {
		return sig, nil
	}
	return rawECDSA(sig, k.size)
}

// rawECDSA turns an ASN.1 ECDSA signature (what crypto.Signer returns),
// SEQUENCE { INTEGER r, INTEGER s }, into JWS's R || S, each size bytes.
func rawECDSA(der []byte, size int) ([]byte, error) {
	bad := errors.New("signing a DPoP proof: the signer returned a malformed ECDSA signature")
	body, rest, ok := derElement(der, 0x30)
	if !ok || len(rest) != 0 {
		return nil, bad
	}
	out := make([]byte, 2*size)
	for i := range 2 {
		var n []byte
		if n, body, ok = derElement(body, 0x02); !ok {
			return nil, bad
		}
		for len(n) > 0 && n[0] == 0 {
			n = n[1:] // a leading zero keeps a positive integer positive
		}
		if len(n) == 0 || len(n) > size {
			return nil, bad
		}
		copy(out[(i+1)*size-len(n):(i+1)*size], n)
	}
	if len(body) != 0 {
		return nil, bad
	}
	return out, nil
}

// derElement splits off the DER element of tag at the start of b: its
// contents, and what follows it.
func derElement(b []byte, tag byte) (contents, rest []byte, ok bool) {
	if len(b) < 2 || b[0] != tag {
		return nil, nil, false
	}
	n, b := int(b[1]), b[2:]
	if n&0x80 != 0 { // long form; a signature needs one length byte at most
		if n != 0x81 || len(b) < 1 {
			return nil, nil, false
		}
		n, b = int(b[0]), b[1:]
	}
	if n > len(b) {
		return nil, nil, false
	}
	return b[:n], b[n:], true
}
