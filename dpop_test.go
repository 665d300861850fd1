package tokenmanager_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
)

func TestDPoP_proofs(t *testing.T) {
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ec521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	tests := []struct {
		name    string
		key     crypto.Signer
		wantAlg string
	}{
		{"generated", nil, "ES256"},
		{"P-384", ec384, "ES384"},
		{"P-521", ec521, "ES512"},
		{"Ed25519", ed, "EdDSA"},
		{"RSA", rsaKey, "PS256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := tokenmanager.NewDPoP(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			proof, err := d.Proof("POST", "HTTPS://API.example.com:443/orders/../items?page=2#top", "the-token")
			if err != nil {
				t.Fatal(err)
			}
			p, err := testutil.ParseDPoP(proof) // checks the signature with the header's public key
			if err != nil {
				t.Fatalf("proof does not verify: %v", err)
			}
			sum := sha256.Sum256([]byte("the-token"))
			switch {
			case p.Typ != "dpop+jwt" || p.Alg != tt.wantAlg:
				t.Errorf("typ %q alg %q; want dpop+jwt %s", p.Typ, p.Alg, tt.wantAlg)
			case p.HTM != "POST" || p.HTU != "https://api.example.com/items":
				t.Errorf("htm %q htu %q; want POST https://api.example.com/items", p.HTM, p.HTU)
			case p.ATH != base64.RawURLEncoding.EncodeToString(sum[:]):
				t.Errorf("ath %q; want base64url(SHA-256(token))", p.ATH)
			case time.Since(time.Unix(p.IAT, 0)).Abs() > 5*time.Second:
				t.Errorf("iat %d is not now", p.IAT)
			case p.JKT != d.Thumbprint():
				t.Errorf("thumbprint %q; the proof's key has %q", d.Thumbprint(), p.JKT)
			case p.Nonce != "" || p.Claims["nonce"] != nil:
				t.Errorf("nonce %q without one given", p.Nonce)
			}
		})
	}
}

func TestDPoP_noATHWithoutToken(t *testing.T) {
	d, _ := tokenmanager.NewDPoP(nil)
	proof, _ := d.Proof("POST", "https://idp.example.com/token", "")
	p, err := testutil.ParseDPoP(proof)
	if err != nil || p.Claims["ath"] != nil {
		t.Errorf("token request proof: %v, claims %v; want no ath", err, p.Claims)
	}
}

func TestDPoP_uniqueJTI(t *testing.T) {
	d, _ := tokenmanager.NewDPoP(nil)
	seen := map[string]bool{}
	for range 1000 {
		proof, _ := d.Proof("GET", "https://api.example.com/", "t")
		p, err := testutil.ParseDPoP(proof)
		if err != nil {
			t.Fatal(err)
		}
		if seen[p.JTI] {
			t.Fatalf("jti %q repeated", p.JTI)
		}
		seen[p.JTI] = true
	}
}

func TestDPoP_noncesPerOrigin(t *testing.T) {
	d, _ := tokenmanager.NewDPoP(nil)
	d.SetNonce("https://api.example.com/a?x", "n-api")
	d.SetNonce("https://idp.example.com/token", "n-idp")
	tests := []struct{ url, want string }{
		{"https://api.example.com:443/other", "n-api"},
		{"https://API.EXAMPLE.COM/b", "n-api"},
		{"https://idp.example.com/x", "n-idp"},
		{"https://api.example.com:8443/", ""}, // another port: another origin
		{"http://api.example.com/", ""},       // another scheme
	}
	for _, tt := range tests {
		proof, _ := d.Proof("GET", tt.url, "")
		p, _ := testutil.ParseDPoP(proof)
		if p.Nonce != tt.want {
			t.Errorf("nonce for %s = %q; want %q", tt.url, p.Nonce, tt.want)
		}
	}
}

func TestDPoP_keyNeverPrinted(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	d, err := tokenmanager.NewDPoP(key)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := key.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	secret := base64.RawURLEncoding.EncodeToString(raw)
	s := tokenmanager.Settings{DPoP: d}
	for _, out := range []string{
		fmt.Sprint(d), fmt.Sprintf("%v", d), fmt.Sprintf("%+v", d), fmt.Sprintf("%#v", d), fmt.Sprintf("%+v", s), fmt.Sprintf("%#v", s),
	} {
		if strings.Contains(out, secret) || strings.Contains(out, fmt.Sprintf("%x", raw)) || strings.Contains(out, new(big.Int).SetBytes(raw).String()) {
			t.Errorf("printed the private key: %s", out)
		}
	}
	if got := fmt.Sprint(d); !strings.Contains(got, d.Thumbprint()) || !strings.Contains(got, "ES256") {
		t.Errorf("String() = %q; want the algorithm and thumbprint", got)
	}
}

func TestDPoP_badKeys(t *testing.T) {
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	for name, k := range map[string]crypto.Signer{"P-224": p224, "RSA-1024": small, "broken signer": brokenSigner{}, "panicking signer": &panicSigner{}} {
		if _, err := tokenmanager.NewDPoP(k); err == nil || !strings.HasPrefix(err.Error(), "tokenmanager: ") {
			t.Errorf("%s: NewDPoP = %v; want a clear error", name, err)
		}
	}
}

// brokenSigner is a KMS key the caller may not use.
type brokenSigner struct{}

func (brokenSigner) Public() crypto.PublicKey {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return &k.PublicKey
}

func (brokenSigner) Sign(_ io.Reader, _ []byte, _ crypto.SignerOpts) ([]byte, error) {
	return nil, fmt.Errorf("kms: permission denied")
}

func TestDPoP_setKey(t *testing.T) {
	d, _ := tokenmanager.NewDPoP(nil)
	before := d.Thumbprint()
	if err := d.SetKey(nil); err != nil {
		t.Fatal(err)
	}
	proof, _ := d.Proof("GET", "https://api.example.com/", "t")
	p, _ := testutil.ParseDPoP(proof)
	if d.Thumbprint() == before || p.JKT != d.Thumbprint() {
		t.Errorf("after SetKey: thumbprint %q (before %q), proof key %q; want the new key", d.Thumbprint(), before, p.JKT)
	}
}

func TestSettings_DPoPValidate(t *testing.T) {
	d, _ := tokenmanager.NewDPoP(nil)
	get := func(ctx context.Context) (tokenmanager.Token, error) { return tokenmanager.Token{}, nil }
	if err := (tokenmanager.Settings{GetCredentials: get, DPoP: d}).Validate(); err != nil {
		t.Errorf("DPoP alone: %v", err)
	}
	err := tokenmanager.Settings{GetCredentials: get, DPoP: d, Header: "X-Token", Formatter: func(s string) string { return s }}.Validate()
	if err == nil || !strings.Contains(err.Error(), "Formatter") || !strings.Contains(err.Error(), "Header") {
		t.Errorf("DPoP with Header and Formatter: %v; want both refused", err)
	}
}

// panicSigner is an HSM client that panics from its (after-th) call on.
type panicSigner struct {
	key   *ecdsa.PrivateKey
	after int
	calls int
}

func (p *panicSigner) Public() crypto.PublicKey {
	if p.key == nil {
		p.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return &p.key.PublicKey
}

func (p *panicSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if p.calls++; p.calls > p.after {
		panic("hsm: session lost")
	}
	return p.key.Sign(r, digest, opts)
}

// A signer that panics fails the proof, and the caller goes on.
func TestDPoP_panickingSigner(t *testing.T) {
	d, err := tokenmanager.NewDPoP(&panicSigner{after: 1}) // NewDPoP's own check passes
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Proof("GET", "https://api.example.com/", "t"); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Errorf("Proof with a panicking signer: %v; want an error", err)
	}
}
