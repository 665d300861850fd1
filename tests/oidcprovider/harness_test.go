package oidcprovider_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/tests/oidcprovider"
)

const secretClient, secretClientSecret = "secret-client", "a-client-secret-long-enough-for-oidc-provider"

// secretClientMetadata is a client_secret_basic client, which the API
// also uses to call the introspection endpoint.
func secretClientMetadata() map[string]any {
	return map[string]any{
		"client_id": secretClient, "client_secret": secretClientSecret,
		"token_endpoint_auth_method": "client_secret_basic",
	}
}

// introspect asks the provider about tok, as secretClient.
func introspect(t testing.TB, hc *http.Client, endpoint, tok string) map[string]any {
	t.Helper()
	v, err := introspectToken(hc, endpoint, tok)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// introspectToken is introspect for the API's handler, which may not
// call t.Fatal.
func introspectToken(hc *http.Client, endpoint, tok string) (map[string]any, error) {
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(url.Values{"token": {tok}}.Encode()))
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(secretClient, secretClientSecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return nil, fmt.Errorf("introspection answered %d: %w", resp.StatusCode, err)
	}
	return v, nil
}

// TestHarness checks the harness itself: the provider starts, serves its
// discovery document with the mutual-TLS alias, and issues a token that
// its introspection endpoint knows.
func TestHarness(t *testing.T) {
	s := oidcprovider.Start(t, oidcprovider.Config{Clients: []map[string]any{secretClientMetadata()}})
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()

	resp, err := hc.Get(s.Issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var md struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
		Aliases       struct {
			TokenEndpoint string `json:"token_endpoint"`
		} `json:"mtls_endpoint_aliases"`
	}
	err = json.NewDecoder(resp.Body).Decode(&md)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if md.Issuer != s.Issuer || md.TokenEndpoint != s.Issuer+"/token" || md.Aliases.TokenEndpoint != s.MTLSURL+"/token" {
		t.Fatalf("discovery = %+v; want issuer %s, its /token, alias %s/token", md, s.Issuer, s.MTLSURL)
	}

	tok, err := providers.ClientCredentials(providers.ClientCredentialsConfig{
		TokenURL: md.TokenEndpoint, ClientID: secretClient, ClientSecret: secretClientSecret,
		HTTPClient: hc,
	})(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := introspect(t, hc, s.Issuer+"/token/introspection", tok.AccessToken); got["active"] != true || got["client_id"] != secretClient {
		t.Errorf("introspection = %v; want active, client_id %q", got, secretClient)
	}
}
