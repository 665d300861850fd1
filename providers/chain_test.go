package providers

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"
	"time"
)

// issued returns a certificate for key named cn, signed by ca's key
// (caKey); a nil ca makes it a self-signed CA.
func issued(t testing.TB, cn string, key crypto.Signer, ca *x509.Certificate, caKey crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  ca == nil,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca, caKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPrivateKeyJWT_certificateChain checks that a KeyPEM holding a chain
// uses the certificate of the key, wherever it stands in the chain, and
// that a chain without it is refused.
func TestPrivateKeyJWT_certificateChain(t *testing.T) {
	caKey, leafKey := testRSAKey2(), testECKey()
	ca := issued(t, "example-ca", caKey, nil, nil)
	leaf := issued(t, "billing-service", leafKey, ca, caKey)
	keyPEM := pemOf(t, leafKey, "PRIVATE KEY")
	join := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	sum1, sum256 := sha1.Sum(leaf.Raw), sha256.Sum256(leaf.Raw)
	wantX5t, wantX5tS256 := base64.RawURLEncoding.EncodeToString(sum1[:]), base64.RawURLEncoding.EncodeToString(sum256[:])

	for name, data := range map[string][]byte{
		"CA first, leaf second, key last": join(pemEncodeCert(ca), pemEncodeCert(leaf), keyPEM),
		"key first, CA, leaf":             join(keyPEM, pemEncodeCert(ca), pemEncodeCert(leaf)),
		"leaf first, CA second":           join(pemEncodeCert(leaf), pemEncodeCert(ca), keyPEM),
	} {
		t.Run(name, func(t *testing.T) {
			auth, err := PrivateKeyJWT(PrivateKeyJWTConfig{ClientID: "c", KeyPEM: data})
			if err != nil {
				t.Fatalf("PrivateKeyJWT: %v", err)
			}
			r := &tokenRequest{target: target{tokenURL: "https://idp.example/token"}, form: map[string][]string{}}
			if err := auth.authenticate(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			tok := r.form.Get("client_assertion")
			verifyAssertion(t, tok, leafKey.Public())
			if h := rawHeader(t, tok); h["x5t"] != wantX5t || h["x5t#S256"] != wantX5tS256 {
				t.Errorf("x5t %v, x5t#S256 %v; want the leaf's %s, %s", h["x5t"], h["x5t#S256"], wantX5t, wantX5tS256)
			}
		})
	}

	t.Run("no certificate of the key", func(t *testing.T) {
		other := issued(t, "other-service", testRSAKey(), ca, caKey)
		auth, err := PrivateKeyJWT(PrivateKeyJWTConfig{ClientID: "c", KeyPEM: join(pemEncodeCert(ca), pemEncodeCert(other), keyPEM)})
		if err == nil || auth != nil {
			t.Fatalf("PrivateKeyJWT = %v, %v; want an error", auth, err)
		}
		for _, want := range []string{"KeyPEM holds 2 certificates", `"CN=example-ca"`, `"CN=other-service"`, "none is the private key's"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("err = %q; want it to contain %q", err, want)
			}
		}
	})

	t.Run("Certificate set wins over the chain", func(t *testing.T) {
		auth, err := PrivateKeyJWT(PrivateKeyJWTConfig{ClientID: "c", KeyPEM: join(pemEncodeCert(ca), keyPEM), Certificate: leaf})
		if err != nil {
			t.Fatalf("PrivateKeyJWT: %v", err)
		}
		r := &tokenRequest{target: target{tokenURL: "https://idp.example/token"}, form: map[string][]string{}}
		if err := auth.authenticate(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		if h := rawHeader(t, r.form.Get("client_assertion")); h["x5t"] != wantX5t {
			t.Errorf("x5t %v; want the leaf's %s", h["x5t"], wantX5t)
		}
	})
}
