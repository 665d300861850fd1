package providers

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
)

// FuzzParsePEM feeds KeyPEM's parser arbitrary input: it must not panic,
// must return a key that signs or an error, and its error must not show
// any stretch of the input's key bytes, whatever they are.
func FuzzParsePEM(f *testing.F) {
	rsaPEM := pemOf(f, testRSAKey(), "RSA PRIVATE KEY")
	ecPEM := pemOf(f, testECKey(), "EC PRIVATE KEY")
	pkcs8 := pemOf(f, testECKey(), "PRIVATE KEY")
	cert := pemEncodeCert(selfSigned(f, testECKey()))
	for _, seed := range [][]byte{
		rsaPEM, ecPEM, pkcs8, cert,
		append(append([]byte(nil), cert...), pkcs8...),
		append(append(pemEncodeCert(selfSigned(f, testRSAKey())), pkcs8...), cert...),
		append(pemEncodeCert(selfSigned(f, testRSAKey())), pkcs8...),
		[]byte("-----BEGIN RSA PRIVATE KEY-----\nTUFSS0VS\n-----END RSA PRIVATE KEY-----\n"),
		[]byte("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"),
		[]byte("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"),
		[]byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n"),
		[]byte("-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nMAA=\n-----END EC PRIVATE KEY-----\n"),
		[]byte("not pem at all"),
		{},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		key, certs, err := parsePEM(data)
		var cert *x509.Certificate
		if err == nil {
			cert, err = keyCertificate(key, certs)
			if err != nil {
				key, certs = nil, nil
			}
		}
		if err != nil {
			if key != nil || certs != nil || cert != nil {
				t.Fatalf("parsePEM returned %T, %d certificates and an error", key, len(certs))
			}
			text := err.Error()
			for rest := data; ; {
				var b *pem.Block
				if b, rest = pem.Decode(rest); b == nil {
					break
				}
				if b.Type == "CERTIFICATE" {
					continue // public
				}
				enc := base64.StdEncoding.EncodeToString(b.Bytes)
				for i := 0; i+12 <= len(enc); i++ {
					if strings.Contains(text, enc[i:i+12]) {
						t.Fatalf("error %q shows key bytes %q", text, enc[i:i+12])
					}
				}
			}
			return
		}
		if key == nil || key.Public() == nil {
			t.Fatalf("parsePEM = %v, nil error; want a key", key)
		}
		if cert != nil {
			if _, err := x509.ParseCertificate(cert.Raw); err != nil {
				t.Fatalf("certificate does not reparse: %v", err)
			}
			if !cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
				t.Fatal("the certificate picked is not the key's")
			}
		} else if len(certs) > 0 {
			t.Fatalf("%d certificates and none picked, without an error", len(certs))
		}
	})
}

// FuzzCleanValues checks that the forms an assertion or a subject token
// takes in a request (raw, URL-encoded, path-escaped) never survive
// cleaning as whole tokens, wherever a server echoes them.
func FuzzCleanValues(f *testing.F) {
	for _, seed := range [][2]string{
		{"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjIn0.sig", "assertion=eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjIn0.sig&x"},
		{"subject+token/==", "subject_token=subject%2Btoken%2F%3D%3D, raw subject+token/=="},
		{"actor%token value", "got actor%25token+value and actor%25token%20value"},
		{"a.b.c", strings.Repeat("y ", 300) + "a.b.c"},
		{"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjIn0.sig", "Invalid value: eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjIn0.sig."},
		{"subject+token/==", "Invalid subject_token: subject%2Btoken%2F%3D%3D. Raw: subject+token/==."},
		{"actor", "unknown actor. actor.x"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, value, text string) {
		forms := valueForms([]string{value})
		for _, v := range forms {
			if strings.Contains(v, "redacted") {
				t.Skip("the value holds the marker's text")
			}
		}
		got := clean(text, forms)
		body := got
		if len(text) > maxCleanLen {
			body = strings.TrimSuffix(got, "...")
		}
		for _, v := range forms {
			if v := strings.Map(printable, v); v != "" && isWholeToken(body, v) {
				t.Errorf("clean(%q) = %q holds %q as a whole token", text, got, v)
			}
		}
	})
}
