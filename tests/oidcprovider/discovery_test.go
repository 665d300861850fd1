package oidcprovider_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/tests/oidcprovider"
)

// jwks returns a JWK Set holding pub (and certs as x5c) in the form
// oidc-provider's client metadata takes.
func jwks(t testing.TB, pub crypto.PublicKey, certs ...*x509.Certificate) map[string]any {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, Certificates: certs, Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestDiscovery_issuerAlone checks, against oidc-provider, that an issuer
// URL alone is enough for the client-credentials grant with a client
// secret and with private_key_jwt (aud the token endpoint, or the issuer).
func TestDiscovery_issuerAlone(t *testing.T) {
	key := newKey(t)
	s := oidcprovider.Start(t, oidcprovider.Config{Clients: []map[string]any{
		secretClientMetadata(),
		{"client_id": "jwt-client", "token_endpoint_auth_method": "private_key_jwt", "jwks": jwks(t, &key.PublicKey)},
	}})
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	iss, err := providers.NewIssuer(providers.IssuerConfig{Issuer: s.Issuer, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	md, err := iss.Metadata(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if md.MTLSEndpointAliases.TokenEndpoint != s.MTLSURL+"/token" || len(md.DPoPSigningAlgValuesSupported) == 0 ||
		!md.TLSClientCertificateBoundAccessTokens {
		t.Errorf("metadata = %+v; want the mutual-TLS alias, DPoP algorithms, certificate-bound tokens", md)
	}

	pkjwt := func(issuerAud bool) providers.ClientAuth {
		a, err := providers.PrivateKeyJWT(providers.PrivateKeyJWTConfig{ClientID: "jwt-client", Key: key, IssuerAudience: issuerAud})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	tests := []struct {
		name   string
		client string
		p      tokenmanager.TokenProvider
	}{
		{"client secret, auto-detected style", secretClient, providers.ClientCredentials(providers.ClientCredentialsConfig{
			Issuer: iss, ClientID: secretClient, ClientSecret: secretClientSecret, HTTPClient: hc})},
		{"private_key_jwt, aud the token endpoint", "jwt-client", providers.ClientCredentialsGrant(providers.GrantConfig{
			Issuer: iss, Auth: pkjwt(false), HTTPClient: hc})},
		{"private_key_jwt, aud the issuer", "jwt-client", providers.ClientCredentialsGrant(providers.GrantConfig{
			Issuer: iss, Auth: pkjwt(true), HTTPClient: hc})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := tt.p(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got := introspect(t, hc, md.IntrospectionEndpoint, tok.AccessToken); got["active"] != true || got["client_id"] != tt.client {
				t.Errorf("introspection = %v; want active, client_id %q", got, tt.client)
			}
		})
	}
}
