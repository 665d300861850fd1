package providers

import (
	"bytes"
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
)

// fetchGrant runs provider p once and returns the last request the
// server recorded.
func fetchGrant(t *testing.T, p tokenmanager.TokenProvider, rec *recorder) seen {
	t.Helper()
	if _, err := p(context.Background()); err != nil {
		t.Fatal(err)
	}
	reqs := rec.all()
	if len(reqs) == 0 {
		t.Fatal("no request reached the server")
	}
	return reqs[len(reqs)-1]
}

// TestClientSecret_sameAsClientCredentials pins that ClientSecret with
// ClientCredentialsGrant sends exactly what ClientCredentials sends, for
// every style, including auto-detection's fallback and memory.
func TestClientSecret_sameAsClientCredentials(t *testing.T) {
	const id, secret = "my client@example", "s3cr:t&+=/ é"
	postOnly := func(w http.ResponseWriter, r *http.Request) {
		if r.FormValue("client_secret") == "" {
			writeJSON(w, 401, map[string]string{"error": "invalid_client"})
			return
		}
		okToken(w, r)
	}
	for _, style := range []AuthStyle{AuthStyleAutoDetect, AuthStyleInHeader, AuthStyleInParams} {
		for _, h := range []http.HandlerFunc{okToken, postOnly} {
			srvOld, recOld := tokenServer(t, h)
			srvNew, recNew := tokenServer(t, h)
			old := ClientCredentials(ClientCredentialsConfig{TokenURL: srvOld.URL, ClientID: id, ClientSecret: secret,
				AuthStyle: style, Scopes: []string{"a", "b"}})
			cur := ClientCredentialsGrant(GrantConfig{TokenURL: srvNew.URL, Auth: ClientSecret(id, secret, style),
				Scopes: []string{"a", "b"}})
			for i := 0; i < 2; i++ {
				_, errOld := old(context.Background())
				_, errNew := cur(context.Background())
				if (errOld == nil) != (errNew == nil) {
					t.Fatalf("%v: errors differ: %v vs %v", style, errOld, errNew)
				}
			}
			a, b := recOld.all(), recNew.all()
			if len(a) != len(b) {
				t.Fatalf("%v: %d requests vs %d", style, len(a), len(b))
			}
			for i := range a {
				if a[i].form.Encode() != b[i].form.Encode() || a[i].header.Get("Authorization") != b[i].header.Get("Authorization") {
					t.Errorf("%v request %d: ClientCredentials sent %v %q; ClientCredentialsGrant sent %v %q", style, i,
						a[i].form, a[i].header.Get("Authorization"), b[i].form, b[i].header.Get("Authorization"))
				}
			}
		}
	}
}

// TestPrivateKeyJWT_assertion pins the client assertion: the request's
// parameters, the header (alg, typ, kid), the claims (iss and sub the
// client id, aud the token URL, jti, iat = nbf, exp = iat + lifetime) and
// the signature.
func TestPrivateKeyJWT_assertion(t *testing.T) {
	srv, rec := tokenServer(t, okToken)
	auth, err := PrivateKeyJWT(PrivateKeyJWTConfig{ClientID: "billing-service", KeyPEM: pemOf(t, testRSAKey(), "PRIVATE KEY"), KeyID: "key-1"})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	r := fetchGrant(t, ClientCredentialsGrant(GrantConfig{TokenURL: srv.URL, Auth: auth, Scopes: []string{"invoices:read"}}), rec)
	if got := r.form.Get("client_assertion_type"); got != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		t.Errorf("client_assertion_type = %q", got)
	}
	if got := r.form.Get("client_id"); got != "billing-service" {
		t.Errorf("client_id = %q; want billing-service", got)
	}
	if r.form.Has("client_secret") || r.header.Get("Authorization") != "" {
		t.Errorf("request carries a client secret: %v %q", r.form, r.header.Get("Authorization"))
	}
	if got := r.form.Get("grant_type") + " " + r.form.Get("scope"); got != "client_credentials invoices:read" {
		t.Errorf("grant_type, scope = %q", got)
	}
	tok := r.form.Get("client_assertion")
	hdr, all, c := verifyAssertion(t, tok, testRSAKey().Public())
	if hdr.Algorithm != "RS256" || hdr.KeyID != "key-1" {
		t.Errorf("header alg %q kid %q; want RS256, key-1", hdr.Algorithm, hdr.KeyID)
	}
	if raw := rawHeader(t, tok); raw["typ"] != "JWT" || raw["x5t"] != nil || raw["x5t#S256"] != nil {
		t.Errorf("header = %v; want typ JWT and no x5t without a certificate", raw)
	}
	if c.Issuer != "billing-service" || c.Subject != "billing-service" {
		t.Errorf("iss %q sub %q; want the client id", c.Issuer, c.Subject)
	}
	if aud, ok := all["aud"].(string); !ok || aud != srv.URL {
		t.Errorf("aud = %#v; want the token URL %q as a string", all["aud"], srv.URL)
	}
	if len(c.ID) < 20 {
		t.Errorf("jti = %q; want 128 random bits", c.ID)
	}
	iat, nbf, exp := c.IssuedAt.Time(), c.NotBefore.Time(), c.Expiry.Time()
	if iat.Before(before.Truncate(time.Second)) || iat.After(time.Now()) || !nbf.Equal(iat) {
		t.Errorf("iat %v nbf %v; want now (%v)", iat, nbf, before)
	}
	if got := exp.Sub(iat); got != 5*time.Minute {
		t.Errorf("exp - iat = %v; want the default lifetime, 5m", got)
	}
	if len(all) != 7 {
		t.Errorf("claims = %v; want exactly iss, sub, aud, jti, iat, nbf, exp", all)
	}
}

// TestPrivateKeyJWT_uniqueJTI pins that every request, concurrent ones
// included, gets a new assertion with its own jti.
func TestPrivateKeyJWT_uniqueJTI(t *testing.T) {
	srv, rec := tokenServer(t, okToken)
	auth, err := PrivateKeyJWT(PrivateKeyJWTConfig{ClientID: "c", Key: testECKey()})
	if err != nil {
		t.Fatal(err)
	}
	p := ClientCredentialsGrant(GrantConfig{TokenURL: srv.URL, Auth: auth})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := p(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	seenJTI := map[string]bool{}
	for _, r := range rec.all() {
		_, _, c := verifyAssertion(t, r.form.Get("client_assertion"), testECKey().Public())
		if seenJTI[c.ID] {
			t.Errorf("jti %q used twice", c.ID)
		}
		seenJTI[c.ID] = true
	}
	if len(seenJTI) != 20 {
		t.Errorf("%d distinct jti; want 20", len(seenJTI))
	}
}

// TestPrivateKeyJWT_options pins audience choice, lifetime, algorithm by
// key type, crypto.Signer keys and the certificate thumbprint headers.
func TestPrivateKeyJWT_options(t *testing.T) {
	rsaKey, ecKey := testRSAKey(), testECKey()
	p384, ed := mustEC(elliptic.P384()), mustEd25519()
	cert := selfSigned(t, rsaKey)
	sum1, sum256 := sha1.Sum(cert.Raw), sha256.Sum256(cert.Raw)
	x5t, x5tS256 := base64.RawURLEncoding.EncodeToString(sum1[:]), base64.RawURLEncoding.EncodeToString(sum256[:])
	tests := []struct {
		name     string
		cfg      PrivateKeyJWTConfig
		pub      crypto.PublicKey
		alg      string
		aud      string // "" means the token URL
		lifetime time.Duration
		x5t      bool
	}{
		{name: "RSA PKCS #1 PEM", cfg: PrivateKeyJWTConfig{KeyPEM: pemOf(t, rsaKey, "RSA PRIVATE KEY")}, pub: rsaKey.Public(), alg: "RS256"},
		{name: "RSA PS256", cfg: PrivateKeyJWTConfig{Key: rsaKey, Algorithm: "PS256"}, pub: rsaKey.Public(), alg: "PS256"},
		{name: "EC SEC 1 PEM", cfg: PrivateKeyJWTConfig{KeyPEM: pemOf(t, ecKey, "EC PRIVATE KEY")}, pub: ecKey.Public(), alg: "ES256"},
		{name: "EC P-384", cfg: PrivateKeyJWTConfig{Key: p384}, pub: p384.Public(), alg: "ES384"},
		{name: "Ed25519 PKCS #8 PEM", cfg: PrivateKeyJWTConfig{KeyPEM: pemOf(t, ed, "PRIVATE KEY")}, pub: ed.Public(), alg: "EdDSA"},
		{name: "opaque RSA signer", cfg: PrivateKeyJWTConfig{Key: opaqueSigner{rsaKey}}, pub: rsaKey.Public(), alg: "RS256"},
		{name: "opaque EC signer", cfg: PrivateKeyJWTConfig{Key: opaqueSigner{ecKey}}, pub: ecKey.Public(), alg: "ES256"},
		{name: "issuer audience", cfg: PrivateKeyJWTConfig{Key: ecKey, Audience: "https://idp.example/realms/r"},
			pub: ecKey.Public(), alg: "ES256", aud: "https://idp.example/realms/r"},
		{name: "lifetime", cfg: PrivateKeyJWTConfig{Key: ecKey, Lifetime: 90 * time.Second}, pub: ecKey.Public(), alg: "ES256", lifetime: 90 * time.Second},
		{name: "certificate", cfg: PrivateKeyJWTConfig{Key: rsaKey, Certificate: cert}, pub: rsaKey.Public(), alg: "RS256", x5t: true},
		{name: "certificate in the PEM", cfg: PrivateKeyJWTConfig{KeyPEM: append(pemOf(t, rsaKey, "PRIVATE KEY"),
			pemEncodeCert(cert)...)}, pub: rsaKey.Public(), alg: "RS256", x5t: true},
		{name: "certificate first in the PEM, PS256", cfg: PrivateKeyJWTConfig{KeyPEM: append(pemEncodeCert(cert),
			pemOf(t, rsaKey, "RSA PRIVATE KEY")...), Algorithm: "PS256"}, pub: rsaKey.Public(), alg: "PS256", x5t: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, rec := tokenServer(t, okToken)
			tt.cfg.ClientID = "c"
			auth, err := PrivateKeyJWT(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			r := fetchGrant(t, ClientCredentialsGrant(GrantConfig{TokenURL: srv.URL, Auth: auth}), rec)
			tok := r.form.Get("client_assertion")
			hdr, _, c := verifyAssertion(t, tok, tt.pub)
			if hdr.Algorithm != tt.alg {
				t.Errorf("alg = %q; want %q", hdr.Algorithm, tt.alg)
			}
			wantAud := tt.aud
			if wantAud == "" {
				wantAud = srv.URL
			}
			if len(c.Audience) != 1 || c.Audience[0] != wantAud {
				t.Errorf("aud = %v; want %q", c.Audience, wantAud)
			}
			wantLife := tt.lifetime
			if wantLife == 0 {
				wantLife = 5 * time.Minute
			}
			if got := c.Expiry.Time().Sub(c.IssuedAt.Time()); got != wantLife {
				t.Errorf("lifetime = %v; want %v", got, wantLife)
			}
			raw := rawHeader(t, tok)
			if tt.x5t {
				if raw["x5t"] != x5t || raw["x5t#S256"] != x5tS256 {
					t.Errorf("x5t %v, x5t#S256 %v; want %s, %s", raw["x5t"], raw["x5t#S256"], x5t, x5tS256)
				}
			} else if raw["x5t"] != nil || raw["x5t#S256"] != nil {
				t.Errorf("header = %v; want no x5t", raw)
			}
		})
	}
}

// TestPrivateKeyJWT_configErrors pins the problems PrivateKeyJWT reports,
// all at once, and that none shows the key.
func TestPrivateKeyJWT_configErrors(t *testing.T) {
	rsaPEM := pemOf(t, testRSAKey(), "PRIVATE KEY")
	body := strings.Join(strings.Split(string(rsaPEM), "\n")[1:3], "")
	corrupt := []byte("-----BEGIN RSA PRIVATE KEY-----\nTUFSS0VSLXNlY3JldC1rZXktYnl0ZXMtTUFSS0VS\n-----END RSA PRIVATE KEY-----\n")
	tests := []struct {
		name string
		cfg  PrivateKeyJWTConfig
		want []string
	}{
		{name: "empty", cfg: PrivateKeyJWTConfig{},
			want: []string{"ClientID is empty", "no key; set Key or KeyPEM"}},
		{name: "both keys", cfg: PrivateKeyJWTConfig{ClientID: "c", Key: testECKey(), KeyPEM: rsaPEM},
			want: []string{"Key and KeyPEM are both set"}},
		{name: "not PEM", cfg: PrivateKeyJWTConfig{ClientID: "c", KeyPEM: []byte("MARKER-secret-key-bytes")},
			want: []string{"KeyPEM holds no PEM block"}},
		{name: "only a certificate", cfg: PrivateKeyJWTConfig{ClientID: "c", KeyPEM: pemEncodeCert(selfSigned(t, testECKey()))},
			want: []string{"holds no private key"}},
		{name: "corrupt key", cfg: PrivateKeyJWTConfig{ClientID: "c", KeyPEM: corrupt},
			want: []string{"has a RSA PRIVATE KEY block that does not parse"}},
		{name: "encrypted", cfg: PrivateKeyJWTConfig{ClientID: "c", KeyPEM: []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nTUFSS0VS\n-----END ENCRYPTED PRIVATE KEY-----\n")},
			want: []string{"encrypted private key; decrypt it first"}},
		{name: "two keys", cfg: PrivateKeyJWTConfig{ClientID: "c", KeyPEM: append(append([]byte(nil), rsaPEM...), rsaPEM...)},
			want: []string{"more than one private key"}},
		{name: "algorithm for another key type", cfg: PrivateKeyJWTConfig{ClientID: "c", KeyPEM: rsaPEM, Algorithm: "ES256"},
			want: []string{`cannot sign with Algorithm "ES256"`}},
		{name: "HS256", cfg: PrivateKeyJWTConfig{ClientID: "c", Key: testECKey(), Algorithm: "HS256"},
			want: []string{`cannot sign with Algorithm "HS256"`}},
		{name: "short RSA key", cfg: PrivateKeyJWTConfig{ClientID: "c", Key: mustRSA(1024)},
			want: []string{"the RSA key has 1024 bits; use 2048 or more"}},
		{name: "certificate of another key", cfg: PrivateKeyJWTConfig{ClientID: "c", KeyPEM: rsaPEM, Certificate: selfSigned(t, testRSAKey2())},
			want: []string{`the certificate ("CN=billing-service") is not the key's`}},
		{name: "negative lifetime", cfg: PrivateKeyJWTConfig{ClientID: "c", Key: testECKey(), Lifetime: -time.Second},
			want: []string{"Lifetime is -1s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth, err := PrivateKeyJWT(tt.cfg)
			if err == nil || auth != nil {
				t.Fatalf("PrivateKeyJWT = %v, %v; want an error", auth, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q; want it to contain %q", err, w)
				}
			}
			for _, leak := range []string{body, "MARKER", "TUFSS0VS", fmt.Sprint(testRSAKey().D)} {
				if strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, err), leak) {
					t.Errorf("err = %q shows key material %.20q", err, leak)
				}
			}
		})
	}
}

// TestClientAssertion_callback pins what the callback is given and what
// its answers do.
func TestClientAssertion_callback(t *testing.T) {
	t.Run("request", func(t *testing.T) {
		srv, rec := tokenServer(t, okToken)
		var got AssertionRequest
		auth := ClientAssertion("0000-client", func(_ context.Context, r AssertionRequest) (string, error) {
			got = r
			return "federated.jwt.token", nil
		})
		r := fetchGrant(t, ClientCredentialsGrant(GrantConfig{TokenURL: srv.URL, Auth: auth}), rec)
		if got != (AssertionRequest{ClientID: "0000-client", TokenURL: srv.URL}) {
			t.Errorf("callback got %+v", got)
		}
		if r.form.Get("client_assertion") != "federated.jwt.token" || r.form.Get("client_id") != "0000-client" ||
			r.form.Get("client_assertion_type") != clientAssertionType {
			t.Errorf("form = %v", r.form)
		}
	})
	t.Run("without client id", func(t *testing.T) {
		srv, rec := tokenServer(t, okToken)
		auth := ClientAssertion("", func(context.Context, AssertionRequest) (string, error) { return "a.b.c", nil })
		if r := fetchGrant(t, ClientCredentialsGrant(GrantConfig{TokenURL: srv.URL, Auth: auth}), rec); r.form.Has("client_id") {
			t.Errorf("form = %v; want no client_id", r.form)
		}
	})
	errBoom := errors.New("token file not yet mounted")
	tests := []struct {
		name      string
		fn        AssertionFunc
		want      string
		permanent bool
	}{
		{name: "error", fn: func(context.Context, AssertionRequest) (string, error) { return "", errBoom },
			want: "ClientAssertion: making the client assertion: token file not yet mounted"},
		{name: "permanent error", fn: func(context.Context, AssertionRequest) (string, error) {
			return "", tokenmanager.Permanent(errBoom)
		}, want: "token file not yet mounted", permanent: true},
		{name: "empty", fn: func(context.Context, AssertionRequest) (string, error) { return "", nil },
			want: "the client assertion is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, rec := tokenServer(t, okToken)
			_, err := ClientCredentialsGrant(GrantConfig{TokenURL: srv.URL, Auth: ClientAssertion("c", tt.fn)})(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want %q", err, tt.want)
			}
			if tokenmanager.IsPermanent(err) != tt.permanent {
				t.Errorf("IsPermanent = %v; want %v", !tt.permanent, tt.permanent)
			}
			if tt.name != "empty" && !errors.Is(err, errBoom) {
				t.Errorf("err = %v; want it to wrap the callback's error", err)
			}
			if n := len(rec.all()); n != 0 {
				t.Errorf("%d requests sent; want none", n)
			}
		})
	}
}

// TestClientAuth_neverPrinted pins that printing or logging a ClientAuth
// or a key config never shows the secret or the key.
func TestClientAuth_neverPrinted(t *testing.T) {
	key := testRSAKey()
	keyPEM := pemOf(t, key, "PRIVATE KEY")
	pk, err := PrivateKeyJWT(PrivateKeyJWTConfig{ClientID: "c", KeyPEM: keyPEM, KeyID: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	values := []any{
		ClientSecret("c", "hunter2-secret", AuthStyleInHeader),
		pk,
		ClientAssertion("c", func(context.Context, AssertionRequest) (string, error) { return "", nil }),
		PrivateKeyJWTConfig{ClientID: "c", KeyPEM: keyPEM},
		PrivateKeyJWTConfig{ClientID: "c", Key: key},
		JWTAssertionConfig{Issuer: "c", Key: key, Claims: map[string]any{"scope": "x"}},
		GrantConfig{TokenURL: "https://idp.example/token", Auth: ClientSecret("c", "hunter2-secret", AuthStyleInParams)},
	}
	leaks := []string{"hunter2-secret", string(keyPEM[40:80]), key.D.String()[:20], fmt.Sprint(keyPEM[40:50])[1:20]}
	for _, v := range values {
		for _, format := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x", "%q"} {
			text := fmt.Sprintf(format, v)
			for _, leak := range leaks {
				if strings.Contains(text, leak) {
					t.Errorf("Sprintf(%q, %T) = %.200q shows %.20q", format, v, text, leak)
				}
			}
		}
	}
	var logged bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&logged, nil), slog.NewTextHandler(&logged, nil)} {
		slog.New(h).Info("config", "values", values, "pk", values[3], "auth", values[0], "jwt", values[5])
	}
	for _, leak := range append(leaks, base64.StdEncoding.EncodeToString(keyPEM)[:40]) {
		if strings.Contains(logged.String(), leak) {
			t.Errorf("slog output %.300q shows %.20q", logged.String(), leak)
		}
	}
	if got, want := fmt.Sprint(pk), `PrivateKeyJWT("c", RS256, kid "k1", key [redacted])`; got != want {
		t.Errorf("PrivateKeyJWT prints as %q; want %q", got, want)
	}
}
