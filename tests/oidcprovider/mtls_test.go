package oidcprovider_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/tests/oidcprovider"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// mtlsRig is oidc-provider with two mutual-TLS clients, one per RFC 8705
// method, both getting certificate-bound tokens, and an API that accepts
// a token only over the certificate it is bound to.
type mtlsRig struct {
	s          *oidcprovider.Server
	iss        *providers.Issuer
	md         providers.Metadata
	hc         *http.Client // trusts the provider's mutual-TLS front end
	api        *httptest.Server
	apiRoots   *x509.CertPool
	selfSigned tls.Certificate // self_signed_tls_client_auth
	pki        tls.Certificate // tls_client_auth, issued by ca
	refused    atomic.Int64    // requests the API refused
}

func newMTLSRig(t *testing.T) *mtlsRig {
	t.Helper()
	ca := oidcprovider.NewCA(t, "test client CA")
	r := &mtlsRig{
		selfSigned: oidcprovider.SelfSigned(t, "self-signed-client"),
		pki:        ca.Issue(t, "pki-client"),
	}
	r.s = oidcprovider.Start(t, oidcprovider.Config{
		ClientCAs: ca.Pool(),
		Clients: []map[string]any{
			secretClientMetadata(),
			{
				"client_id": "self-signed-client", "token_endpoint_auth_method": "self_signed_tls_client_auth",
				"jwks": jwks(t, r.selfSigned.Leaf.PublicKey, r.selfSigned.Leaf),
				"tls_client_certificate_bound_access_tokens": true,
			},
			{
				"client_id": "pki-client", "token_endpoint_auth_method": "tls_client_auth",
				"tls_client_auth_subject_dn":                 "CN=pki-client",
				"tls_client_certificate_bound_access_tokens": true,
			},
		},
	})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.s.RootCAs}}
	r.hc = &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	var err error
	if r.iss, err = providers.NewIssuer(providers.IssuerConfig{Issuer: r.s.Issuer, HTTPClient: r.hc}); err != nil {
		t.Fatal(err)
	}
	if r.md, err = r.iss.Metadata(context.Background()); err != nil {
		t.Fatal(err)
	}

	// The API: the token must be active per the provider's introspection
	// and bound to the certificate presented (RFC 8705 §3.2).
	introspector := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(introspector.CloseIdleConnections)
	r.api = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		if !ok {
			r.refused.Add(1)
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		info, err := introspectToken(introspector, r.md.IntrospectionEndpoint, tok)
		cnf, _ := info["cnf"].(map[string]any)
		if err != nil || info["active"] != true || cnf == nil || cnf["x5t#S256"] != oidcprovider.Thumbprint(req.TLS.PeerCertificates[0].Raw) {
			r.refused.Add(1)
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, "token not bound to this certificate", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "hello "+info["client_id"].(string))
	}))
	r.api.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	r.api.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes cut short at Close
	r.api.StartTLS()
	t.Cleanup(r.api.Close)
	r.apiRoots = x509.NewCertPool()
	r.apiRoots.AddCert(r.api.Certificate())
	return r
}

// provider returns a client-credentials provider authenticating with
// cert, found by discovery.
func (r *mtlsRig) provider(clientID string, cert tls.Certificate) tokenmanager.TokenProvider {
	return providers.ClientCredentialsGrant(providers.GrantConfig{
		Issuer: r.iss, Auth: providers.TLSClientAuth(clientID, cert), HTTPClient: r.hc,
	})
}

// apiClient returns a client calling the API over cert, with no token
// manager: for showing what the API does with a given token.
func (r *mtlsRig) apiClient(t *testing.T, cert tls.Certificate) *http.Client {
	tr := providers.CertificateTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.apiRoots}}, cert)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (r *mtlsRig) call(t *testing.T, hc *http.Client, tok string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.api.URL, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestMTLS_certificateBoundTokens checks both RFC 8705 client
// authentication methods against oidc-provider, through the
// mtls_endpoint_aliases discovery names: the tokens carry
// cnf.x5t#S256, the client certificate's thumbprint; the API accepts
// them over that certificate and refuses them over another.
func TestMTLS_certificateBoundTokens(t *testing.T) {
	r := newMTLSRig(t)
	if r.md.MTLSEndpointAliases.TokenEndpoint != r.s.MTLSURL+"/token" {
		t.Fatalf("mtls_endpoint_aliases.token_endpoint = %q; want the front end's", r.md.MTLSEndpointAliases.TokenEndpoint)
	}
	for _, tt := range []struct {
		name, clientID string
		cert           tls.Certificate
	}{
		{"self_signed_tls_client_auth", "self-signed-client", r.selfSigned},
		{"tls_client_auth", "pki-client", r.pki},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := r.provider(tt.clientID, tt.cert)(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			info := introspect(t, r.hc, r.md.IntrospectionEndpoint, tok.AccessToken)
			cnf, _ := info["cnf"].(map[string]any)
			if want := oidcprovider.Thumbprint(tt.cert.Certificate[0]); info["active"] != true || cnf == nil || cnf["x5t#S256"] != want {
				t.Fatalf("introspection = %v; want active with cnf.x5t#S256 %s", info, want)
			}
			if got := r.call(t, r.apiClient(t, tt.cert), tok.AccessToken); got != http.StatusOK {
				t.Errorf("over the token's certificate: %d; want 200", got)
			}
			other := oidcprovider.SelfSigned(t, "thief")
			if got := r.call(t, r.apiClient(t, other), tok.AccessToken); got != http.StatusUnauthorized {
				t.Errorf("over another certificate: %d; want 401", got)
			}
		})
	}
	t.Run("an unregistered certificate gets no token", func(t *testing.T) {
		_, err := r.provider("self-signed-client", oidcprovider.SelfSigned(t, "self-signed-client"))(context.Background())
		var re *providers.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_client" || !tokenmanager.IsPermanent(err) {
			t.Fatalf("err = %v; want a permanent invalid_client", err)
		}
	})
}

// TestMTLS_load runs 8 workers for 5 s through transport.RoundTripper
// with certificate-bound tokens: no request may fail, and the API
// refuses none.
func TestMTLS_load(t *testing.T) {
	if testing.Short() {
		t.Skip("5 s of load")
	}
	r := newMTLSRig(t)
	apiBase := providers.CertificateTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.apiRoots}}, r.selfSigned)
	defer apiBase.CloseIdleConnections()
	rt, err := transport.New(tokenmanager.Settings{GetCredentials: r.provider("self-signed-client", r.selfSigned)},
		transport.WithBase(apiBase))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	hc := &http.Client{Transport: rt}

	const workers, duration = 8, 5 * time.Second
	ok, failed := load(t, workers, duration, func() (*http.Response, error) { return hc.Get(r.api.URL) })
	t.Logf("mutual TLS, %d workers x %v: %d requests succeeded, %d failed, %d refused by the API",
		workers, duration, ok, failed, r.refused.Load())
	if failed != 0 || r.refused.Load() != 0 || ok == 0 {
		t.Errorf("%d failed, %d refused, %d succeeded; want 0 failed, 0 refused", failed, r.refused.Load(), ok)
	}
}

// load runs workers goroutines sending requests with send for duration
// (real time: a real server's load) and counts the requests answered 200
// and the others; the first failure is reported.
func load(t *testing.T, workers int, duration time.Duration, send func() (*http.Response, error)) (ok, failed int64) {
	var okN, failedN atomic.Int64
	var firstErr sync.Once
	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				resp, err := send()
				if err != nil {
					failedN.Add(1)
					firstErr.Do(func() { t.Errorf("request failed: %v", err) })
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failedN.Add(1)
					firstErr.Do(func() { t.Errorf("request answered %d", resp.StatusCode) })
					continue
				}
				okN.Add(1)
			}
		})
	}
	wg.Wait()
	return okN.Load(), failedN.Load()
}
