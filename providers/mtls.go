package providers

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
)

// TLSClientAuth authenticates with a client certificate, mutual TLS (RFC
// 8705 §2): the token request goes over a TLS connection presenting cert,
// with client_id in the body. It serves both of RFC 8705's methods, the
// difference being the server's: tls_client_auth (§2.1, the certificate
// issued by a CA the server trusts, matched by subject or SAN) and
// self_signed_tls_client_auth (§2.2, the certificate registered with the
// client, as a JWK's x5c). cert needs its private key.
//
// With a grant configured by discovery ([Issuer]), the request goes to
// mtls_endpoint_aliases.token_endpoint when the metadata names it. Servers
// that bind tokens to the certificate (tls_client_certificate_bound_access_tokens,
// RFC 8705 §3) issue tokens that APIs accept only over the same
// certificate: send them through [CertificateTransport].
//
// The grant's HTTPClient, if any, must have a nil Transport or an
// *http.Transport; its TLS settings (RootCAs, ...) are kept and cert is
// added, on a copy that opens a connection per token request, which is
// closed after it. An *http.Transport already presenting a certificate
// (Certificates or GetClientCertificate set) is used as it is, connections
// reused.
func TLSClientAuth(clientID string, cert tls.Certificate) ClientAuth {
	return &tlsClientAuth{id: clientID, cert: cert}
}

type tlsClientAuth struct {
	id   string
	cert tls.Certificate
}

func (a *tlsClientAuth) authenticate(_ context.Context, r *tokenRequest) error {
	r.form.Set("client_id", a.id)
	return nil
}

func (a *tlsClientAuth) clientID() string      { return a.id }
func (a *tlsClientAuth) secretForms() []string { return nil }

func (a *tlsClientAuth) problems() []error {
	var p problems
	if a.id == "" {
		p.add("Auth: TLSClientAuth's client ID is empty; the client's identifier is required")
	}
	if len(a.cert.Certificate) == 0 {
		p.add("Auth: TLSClientAuth's certificate is empty")
	}
	if a.cert.PrivateKey == nil {
		p.add("Auth: TLSClientAuth's certificate has no private key")
	}
	return p
}

// Format prints a without its key, whatever the verb.
func (a *tlsClientAuth) Format(f fmt.State, _ rune) {
	subject := "none"
	if leaf := a.leafSubject(); leaf != "" {
		subject = fmt.Sprintf("%q", leaf)
	}
	fmt.Fprintf(f, "TLSClientAuth(%q, certificate %s, key [redacted])", a.id, subject)
}

func (a *tlsClientAuth) leafSubject() string {
	if a.cert.Leaf != nil {
		return a.cert.Leaf.Subject.String()
	}
	return ""
}

// clientWithCertificate returns the client that sends a's token requests:
// hc's settings, presenting a's certificate.
func (a *tlsClientAuth) clientWithCertificate(hc *http.Client) (*http.Client, error) {
	var base *http.Transport
	switch t := hc.Transport.(type) {
	case nil:
		base = http.DefaultTransport.(*http.Transport)
	case *http.Transport:
		if c := t.TLSClientConfig; c != nil && (len(c.Certificates) > 0 || c.GetClientCertificate != nil) {
			return hc, nil
		}
		base = t
	default:
		return nil, fmt.Errorf("providers: Auth is TLSClientAuth and HTTPClient's Transport is a %T; "+
			"it needs nil or an *http.Transport, to which the client certificate is added", t)
	}
	tr := CertificateTransport(base, a.cert)
	// Token requests are rare: one connection each, closed after it,
	// rather than an idle pool no one can close.
	tr.DisableKeepAlives = true
	cp := *hc
	cp.Transport = tr
	return &cp, nil
}

// CertificateTransport returns a clone of base (http.DefaultTransport
// when nil) whose TLS connections present cert: the base of a
// transport.RoundTripper sending certificate-bound access tokens (RFC
// 8705 §3), which APIs accept only over the certificate the token was
// issued to:
//
//	rt, err := transport.New(settings, transport.WithBase(providers.CertificateTransport(nil, cert)))
//
// base's TLS settings are kept; cert replaces any certificates it has.
func CertificateTransport(base *http.Transport, cert tls.Certificate) *http.Transport {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport)
	}
	tr := base.Clone()
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{}
	}
	tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
	tr.TLSClientConfig.GetClientCertificate = nil
	return tr
}
