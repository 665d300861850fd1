package providers

import (
	"context"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// mtlsServer is a token endpoint over TLS that requires a client
// certificate and records the certificates and forms it gets.
type mtlsServer struct {
	srv   *httptest.Server
	mu    sync.Mutex
	certs []*x509.Certificate
	ids   []string
}

func newMTLSServer(t *testing.T) *mtlsServer {
	t.Helper()
	m := &mtlsServer{}
	m.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		m.mu.Lock()
		m.certs = append(m.certs, r.TLS.PeerCertificates[0])
		m.ids = append(m.ids, r.PostForm.Get("client_id")+"|"+r.PostForm.Get("client_secret"))
		m.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"access_token":"bound","token_type":"Bearer","expires_in":60}`))
	}))
	m.srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	m.srv.StartTLS()
	t.Cleanup(m.srv.Close)
	return m
}

// client returns an HTTP client trusting the server, without a
// certificate of its own.
func (m *mtlsServer) client() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(m.srv.Certificate())
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func clientCert(t *testing.T) tls.Certificate {
	t.Helper()
	key := mustEC(elliptic.P256())
	c := selfSigned(t, key)
	return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}
}

func TestTLSClientAuth(t *testing.T) {
	m := newMTLSServer(t)
	cert := clientCert(t)
	f := newFakeIssuer(t, "")
	f.set(func(f *fakeIssuer) { f.alias = m.srv.URL + "/token" })
	iss := mustIssuer(t, IssuerConfig{Issuer: f.issuer})
	tests := []struct {
		name string
		cfg  GrantConfig
	}{
		{"TokenURL", GrantConfig{TokenURL: m.srv.URL + "/token"}},
		{"discovery: the mutual-TLS alias", GrantConfig{Issuer: iss}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hc := m.client()
			tt.cfg.Auth, tt.cfg.HTTPClient = TLSClientAuth("svc", cert), hc
			tok, err := ClientCredentialsGrant(tt.cfg)(context.Background())
			if err != nil || tok.AccessToken != "bound" {
				t.Fatalf("got %v, %v; want the token from the mutual-TLS endpoint", tok, err)
			}
			m.mu.Lock()
			defer m.mu.Unlock()
			if got := m.certs[len(m.certs)-1]; !got.Equal(cert.Leaf) {
				t.Errorf("the server saw certificate %q; want the client's", got.Subject)
			}
			if got := m.ids[len(m.ids)-1]; got != "svc|" {
				t.Errorf("client_id|client_secret = %q; want %q", got, "svc|")
			}
			if tr := hc.Transport.(*http.Transport); len(tr.TLSClientConfig.Certificates) != 0 {
				t.Error("the caller's HTTPClient was changed")
			}
		})
	}
	t.Run("a client secret goes to the ordinary endpoint", func(t *testing.T) {
		_, err := ClientCredentialsGrant(GrantConfig{Issuer: iss, Auth: ClientSecret("svc", "s", AuthStyleInParams)})(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if f.lastForm().Get("client_secret") != "s" {
			t.Error("the token request did not reach the ordinary token endpoint")
		}
	})
}

func TestTLSClientAuth_problems(t *testing.T) {
	cert := clientCert(t)
	tests := []struct {
		name string
		cfg  GrantConfig
		want []string
	}{
		{"empty", GrantConfig{TokenURL: "https://idp.example/token", Auth: TLSClientAuth("", tls.Certificate{})},
			[]string{"client ID is empty", "certificate is empty", "no private key"}},
		{"a transport it cannot add the certificate to", GrantConfig{TokenURL: "https://idp.example/token", Auth: TLSClientAuth("svc", cert),
			HTTPClient: &http.Client{Transport: roundTripFunc(nil)}}, []string{"HTTPClient's Transport is a providers.roundTripFunc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ClientCredentialsGrant(tt.cfg)(context.Background())
			for _, w := range tt.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v; want it to say %q", err, w)
				}
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestTLSClientAuth_Format(t *testing.T) {
	a := TLSClientAuth("svc", clientCert(t))
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		got := fmt.Sprintf(verb, a)
		if !strings.HasPrefix(got, `TLSClientAuth("svc", certificate "CN=`) || strings.Contains(got, "PrivateKey") || strings.Contains(got, "D:") {
			t.Errorf("Sprintf(%s) = %s; want the id and subject, no key", verb, got)
		}
	}
}

func TestCertificateTransport(t *testing.T) {
	pool := x509.NewCertPool()
	base := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "api"}}
	cert := clientCert(t)
	tr := CertificateTransport(base, cert)
	if tr == base || tr.TLSClientConfig == base.TLSClientConfig || len(base.TLSClientConfig.Certificates) != 0 {
		t.Fatal("CertificateTransport changed its base; want a clone")
	}
	if c := tr.TLSClientConfig; c.RootCAs != pool || c.ServerName != "api" || len(c.Certificates) != 1 || !c.Certificates[0].Leaf.Equal(cert.Leaf) {
		t.Errorf("TLSClientConfig = %+v; want the base's settings and the certificate", c)
	}
	if tr := CertificateTransport(nil, cert); len(tr.TLSClientConfig.Certificates) != 1 || tr.Proxy == nil {
		t.Error("CertificateTransport(nil, cert) is not http.DefaultTransport's clone with the certificate")
	}
}
