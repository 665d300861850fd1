package providers

import (
	"context"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

// x5cOf returns the x5c header of an assertion, decoded, as subjects.
func x5cOf(t *testing.T, tok string) []string {
	t.Helper()
	raw, ok := rawHeader(t, tok)["x5c"]
	if !ok {
		return nil
	}
	var subjects []string
	for _, v := range raw.([]any) {
		der, err := base64.StdEncoding.DecodeString(v.(string)) // RFC 7515 §4.1.6: not base64url
		if err != nil {
			t.Fatalf("x5c entry %q is not standard base64: %v", v, err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		subjects = append(subjects, c.Subject.CommonName)
	}
	return subjects
}

// TestSendCertificateChain checks the x5c header: the chain, the key's
// certificate first, from KeyPEM in any order or from Certificate, in
// client assertions and in JWT bearer assertions; none by default.
func TestSendCertificateChain(t *testing.T) {
	caKey, interKey, leafKey := testRSAKey2(), mustEC(elliptic.P256()), testECKey()
	ca := issued(t, "root-ca", caKey, nil, nil)
	inter := issued(t, "intermediate-ca", interKey, ca, caKey)
	leaf := issued(t, "billing-service", leafKey, inter, interKey)
	keyPEM := pemOf(t, leafKey, "PRIVATE KEY")
	pemChain := func(certs ...*x509.Certificate) []byte {
		b := append([]byte(nil), keyPEM...)
		for _, c := range certs {
			b = append(b, pemEncodeCert(c)...)
		}
		return b
	}
	tests := []struct {
		name  string
		pkjwt PrivateKeyJWTConfig
		want  []string
	}{
		{"KeyPEM, leaf first", PrivateKeyJWTConfig{KeyPEM: pemChain(leaf, inter, ca), SendCertificateChain: true},
			[]string{"billing-service", "intermediate-ca", "root-ca"}},
		{"KeyPEM, leaf last", PrivateKeyJWTConfig{KeyPEM: pemChain(inter, ca, leaf), SendCertificateChain: true},
			[]string{"billing-service", "intermediate-ca", "root-ca"}},
		{"Key and Certificate", PrivateKeyJWTConfig{Key: leafKey, Certificate: leaf, SendCertificateChain: true},
			[]string{"billing-service"}},
		{"not asked for", PrivateKeyJWTConfig{KeyPEM: pemChain(leaf, inter), SendCertificateChain: false}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.pkjwt.ClientID = "svc"
			auth, err := PrivateKeyJWT(tt.pkjwt)
			if err != nil {
				t.Fatal(err)
			}
			r := &tokenRequest{target: target{tokenURL: "https://idp.example/token"}, form: map[string][]string{}}
			if err := auth.authenticate(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			if got := x5cOf(t, r.form.Get("client_assertion")); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("client assertion x5c = %v; want %v", got, tt.want)
			}

			a, err := JWTAssertion(JWTAssertionConfig{Issuer: "svc", Key: tt.pkjwt.Key, KeyPEM: tt.pkjwt.KeyPEM,
				Certificate: tt.pkjwt.Certificate, SendCertificateChain: tt.pkjwt.SendCertificateChain})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := a(context.Background(), AssertionRequest{TokenURL: "https://idp.example/token"})
			if err != nil {
				t.Fatal(err)
			}
			if got := x5cOf(t, tok); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("JWT bearer assertion x5c = %v; want %v", got, tt.want)
			}
		})
	}

	t.Run("no certificate", func(t *testing.T) {
		_, err := PrivateKeyJWT(PrivateKeyJWTConfig{ClientID: "svc", Key: leafKey, SendCertificateChain: true})
		if err == nil || !strings.Contains(err.Error(), "SendCertificateChain is set and there is no certificate") {
			t.Errorf("err = %v; want SendCertificateChain refused without a certificate", err)
		}
	})
	t.Run("printed", func(t *testing.T) {
		auth, err := PrivateKeyJWT(PrivateKeyJWTConfig{ClientID: "svc", KeyPEM: pemChain(leaf, inter), SendCertificateChain: true})
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(auth); !strings.Contains(got, ", x5c") {
			t.Errorf("Sprint(auth) = %s; want it to say x5c", got)
		}
	})
}
