package testutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"
)

// DPoPProof is a DPoP proof whose signature checked out against the key
// in its own header.
type DPoPProof struct {
	Typ, Alg string
	JWK      map[string]string
	JKT      string // RFC 7638 thumbprint of JWK
	JTI      string `json:"jti"`
	HTM      string `json:"htm"`
	HTU      string `json:"htu"`
	IAT      int64  `json:"iat"`
	ATH      string `json:"ath"`
	Nonce    string `json:"nonce"`
	// Claims holds every claim, to check there are no others.
	Claims map[string]any
}

// ParseDPoP parses proof and checks its signature with the public key its
// header carries; it checks no claim.
func ParseDPoP(proof string) (*DPoPProof, error) {
	parts := strings.Split(proof, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS")
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	pb, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, err
	}
	var h struct {
		Typ string            `json:"typ"`
		Alg string            `json:"alg"`
		JWK map[string]string `json:"jwk"`
	}
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, fmt.Errorf("header: %v", err)
	}
	p := &DPoPProof{Typ: h.Typ, Alg: h.Alg, JWK: h.JWK}
	if err := json.Unmarshal(pb, p); err != nil {
		return nil, fmt.Errorf("claims: %v", err)
	}
	if err := json.Unmarshal(pb, &p.Claims); err != nil {
		return nil, err
	}
	pub, members, err := jwkKey(h.JWK)
	if err != nil {
		return nil, err
	}
	if _, private := h.JWK["d"]; private {
		return nil, errors.New("the jwk holds a private key")
	}
	p.JKT = thumbprint(h.JWK, members)
	if err := verifySig(pub, h.Alg, []byte(parts[0]+"."+parts[1]), sig); err != nil {
		return nil, err
	}
	return p, nil
}

func b64int(s string) *big.Int {
	b, _ := base64.RawURLEncoding.DecodeString(s)
	return new(big.Int).SetBytes(b)
}

// jwkKey returns the public key of jwk and its required members.
func jwkKey(jwk map[string]string) (crypto.PublicKey, []string, error) {
	switch jwk["kty"] {
	case "EC":
		var c elliptic.Curve
		switch jwk["crv"] {
		case "P-256":
			c = elliptic.P256()
		case "P-384":
			c = elliptic.P384()
		case "P-521":
			c = elliptic.P521()
		default:
			return nil, nil, fmt.Errorf("curve %q", jwk["crv"])
		}
		x, err1 := base64.RawURLEncoding.DecodeString(jwk["x"])
		y, err2 := base64.RawURLEncoding.DecodeString(jwk["y"])
		k, err := ecdsa.ParseUncompressedPublicKey(c, append(append([]byte{4}, x...), y...))
		if err := errors.Join(err1, err2, err); err != nil {
			return nil, nil, fmt.Errorf("bad EC key: %v", err)
		}
		return k, []string{"crv", "kty", "x", "y"}, nil
	case "OKP":
		x, err := base64.RawURLEncoding.DecodeString(jwk["x"])
		if err != nil || jwk["crv"] != "Ed25519" || len(x) != ed25519.PublicKeySize {
			return nil, nil, errors.New("bad OKP key")
		}
		return ed25519.PublicKey(x), []string{"crv", "kty", "x"}, nil
	case "RSA":
		return &rsa.PublicKey{N: b64int(jwk["n"]), E: int(b64int(jwk["e"]).Int64())}, []string{"e", "kty", "n"}, nil
	}
	return nil, nil, fmt.Errorf("kty %q", jwk["kty"])
}

// thumbprint computes RFC 7638's thumbprint on its own (not the
// library's code), for tests to compare.
func thumbprint(jwk map[string]string, members []string) string {
	parts := make([]string, len(members))
	for i, m := range members {
		k, _ := json.Marshal(m)
		v, _ := json.Marshal(jwk[m])
		parts[i] = string(k) + ":" + string(v)
	}
	sum := sha256.Sum256([]byte("{" + strings.Join(parts, ",") + "}"))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func verifySig(pub crypto.PublicKey, alg string, msg, sig []byte) error {
	digest := func(h crypto.Hash) []byte { w := h.New(); w.Write(msg); return w.Sum(nil) }
	bad := errors.New("bad signature")
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		h, size := map[string]crypto.Hash{"ES256": crypto.SHA256, "ES384": crypto.SHA384, "ES512": crypto.SHA512}[alg], (k.Curve.Params().BitSize+7)/8
		if h == 0 || len(sig) != 2*size || !ecdsa.Verify(k, digest(h), new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])) {
			return bad
		}
	case ed25519.PublicKey:
		if alg != "EdDSA" || !ed25519.Verify(k, msg, sig) {
			return bad
		}
	case *rsa.PublicKey:
		if alg != "PS256" || rsa.VerifyPSS(k, crypto.SHA256, digest(crypto.SHA256), sig, nil) != nil {
			return bad
		}
	}
	return nil
}

// ErrDPoPNonce is returned by [DPoPVerifier.Verify] for a proof without
// the current nonce: the server answers use_dpop_nonce.
var ErrDPoPNonce = errors.New("use_dpop_nonce")

// DPoPVerifier checks proofs as a resource server does (RFC 9449 §4.3,
// §7): typ, alg, signature, htm, htu, iat, jti not seen before, ath,
// the key's thumbprint and, when Nonce is set, the nonce. It is safe for
// concurrent use by multiple goroutines.
type DPoPVerifier struct {
	// Nonce returns the nonce proofs must carry; nil: none required.
	Nonce func() string
	// Window bounds how far iat may be from now; zero means a minute.
	Window time.Duration

	mu   sync.Mutex
	seen map[string]bool // jti; guarded by mu
}

// Verify checks proof, sent with a request of method to htu (normalised
// by the caller) carrying token bound to the key of thumbprint jkt.
// Empty token or jkt: not checked (a token request's proof).
func (v *DPoPVerifier) Verify(proof, method, htu, token, jkt string) (*DPoPProof, error) {
	p, err := ParseDPoP(proof)
	if err != nil {
		return nil, err
	}
	window := v.Window
	if window == 0 {
		window = time.Minute
	}
	allowed := map[string]bool{"jti": true, "htm": true, "htu": true, "iat": true, "ath": true, "nonce": true}
	for c := range p.Claims {
		if !allowed[c] {
			return nil, fmt.Errorf("unexpected claim %q", c)
		}
	}
	switch {
	case p.Typ != "dpop+jwt":
		return nil, fmt.Errorf("typ %q", p.Typ)
	case p.HTM != method:
		return nil, fmt.Errorf("htm %q; want %q", p.HTM, method)
	case p.HTU != htu:
		return nil, fmt.Errorf("htu %q; want %q", p.HTU, htu)
	case time.Since(time.Unix(p.IAT, 0)).Abs() > window:
		return nil, fmt.Errorf("iat %d too far from now", p.IAT)
	case len(p.JTI) < 16:
		return nil, fmt.Errorf("jti %q too short", p.JTI)
	case token != "" && p.ATH != dpopATH(token):
		return nil, errors.New("ath does not match the token")
	case token == "" && p.ATH != "":
		return nil, errors.New("ath without a token")
	case jkt != "" && p.JKT != jkt:
		return nil, errors.New("the proof's key is not the token's")
	}
	if v.Nonce != nil {
		if want := v.Nonce(); want != "" && p.Nonce != want {
			return nil, ErrDPoPNonce
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seen[p.JTI] {
		return nil, fmt.Errorf("jti %q replayed", p.JTI)
	}
	if v.seen == nil {
		v.seen = map[string]bool{}
	}
	v.seen[p.JTI] = true
	return p, nil
}

func dpopATH(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
