// Package oidcprovider runs node's oidc-provider (an OpenID Certified
// authorization server) on 127.0.0.1 for the real-server tests, with a
// mutual-TLS front end: a Go TLS reverse proxy that asks for a client
// certificate and hands it to the provider in a header, as oidc-provider
// expects when TLS is terminated in front of it.
//
// The node side is server.js, its dependencies pinned by package-lock.json;
// install them with
//
//	(cd tests/oidcprovider && npm ci --no-audit --no-fund)
//
// Without them (or without node) [Start] skips the test, unless the
// environment variable CI is "true", where it fails it.
package oidcprovider

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Config is what the provider starts with.
type Config struct {
	// Clients are the registered clients, in oidc-provider's client
	// metadata (client_id, client_secret, token_endpoint_auth_method,
	// jwks, tls_client_auth_subject_dn,
	// tls_client_certificate_bound_access_tokens, ...). grant_types
	// defaults to client_credentials and response_types to none.
	Clients []map[string]any
	// TokenTTL is the access tokens' lifetime. Optional; 10 minutes by
	// default.
	TokenTTL time.Duration
	// ClientCAs verify client certificates for tls_client_auth. Optional;
	// without it no certificate is "verified" (self_signed_tls_client_auth
	// and certificate-bound tokens need no verification).
	ClientCAs *x509.CertPool
	// RequireDPoPNonce makes the token endpoint require a server nonce in
	// every DPoP proof (RFC 9449 §8): a proof without one, or with a
	// stale one, is answered 400 use_dpop_nonce with a DPoP-Nonce.
	RequireDPoPNonce bool
}

// Server is a running provider.
type Server struct {
	// Issuer is the provider's issuer identifier,
	// http://127.0.0.1:<port>: discovery, token and introspection
	// endpoints over plain http on loopback.
	Issuer string
	// MTLSURL is the mutual-TLS front end, https://127.0.0.1:<port>,
	// which discovery names in mtls_endpoint_aliases; it requires a
	// client certificate.
	MTLSURL string
	// RootCAs trust the front end's certificate.
	RootCAs *x509.CertPool

	secret string // the front end's, which the seeding endpoint wants
}

// RefreshToken stands for a user's sign in: it creates a grant of scope
// for accountID to clientID (a client with the refresh_token grant) and
// returns its first refresh token. Refresh tokens rotate on every use;
// presenting a spent one revokes the grant.
func (s *Server) RefreshToken(t testing.TB, clientID, accountID, scope string) string {
	t.Helper()
	resp := s.testPost(t, "/test/refresh-token", map[string]any{"clientId": clientID, "accountId": accountID, "scope": scope})
	defer resp.Body.Close()
	var v struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.RefreshToken == "" {
		t.Fatalf("seeding a refresh token: status %d, %v", resp.StatusCode, err)
	}
	return v.RefreshToken
}

// testPost posts v as JSON to one of server.js's test endpoints, with the
// secret they want.
func (s *Server) testPost(t testing.TB, path string, v any) *http.Response {
	t.Helper()
	body, _ := json.Marshal(v)
	req, err := http.NewRequest(http.MethodPost, s.Issuer+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Proxy-Secret", s.secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// Device stands for the user entering userCode on the device flow's
// verification page: it approves the sign-in of accountID, or refuses it
// when deny is set.
func (s *Server) Device(t testing.TB, userCode, accountID string, deny bool) {
	t.Helper()
	resp := s.testPost(t, "/test/device", map[string]any{"userCode": userCode, "accountId": accountID, "deny": deny})
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("confirming user code %q: status %d", userCode, resp.StatusCode)
	}
}

// dir is this package's directory, where server.js and node_modules are.
func dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// skipOrFail skips the test, or fails it in CI.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: the real-server tests must run)", msg)
	}
	t.Skip(msg)
}

// Start runs oidc-provider with cfg and stops it, and its front end, when
// the test ends. It skips the test when node or the npm packages are
// missing (fails it when CI=true).
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		skipOrFail(t, "node is not installed; the oidc-provider tests need Node.js 20 or later")
	}
	if _, err := os.Stat(filepath.Join(dir(), "node_modules", "oidc-provider", "package.json")); err != nil {
		skipOrFail(t, "oidc-provider is not installed; run (cd tests/oidcprovider && npm ci --no-audit --no-fund)")
	}

	secret := rand.Text()
	front := newFront(cfg.ClientCAs, secret)
	t.Cleanup(front.close)

	ttl := int(cfg.TokenTTL / time.Second)
	if ttl == 0 {
		ttl = 600
	}
	raw, err := json.Marshal(map[string]any{
		"clients":     cfg.Clients,
		"tokenTTL":    ttl,
		"proxySecret": secret,
		"mtlsURL":     front.srv.URL,

		"requireDPoPNonce": cfg.RequireDPoPNonce,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(cfgFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	p := startNode(t, node, cfgFile)
	front.setTarget(p.issuer)

	s := &Server{Issuer: p.issuer, MTLSURL: front.srv.URL, RootCAs: x509.NewCertPool(), secret: secret}
	s.RootCAs.AddCert(front.srv.Certificate())
	waitDiscovery(t, s.Issuer, p)
	return s
}

// process is the running node.
type process struct {
	cmd    *exec.Cmd
	stdin  io.Closer
	issuer string
	mu     sync.Mutex
	output bytes.Buffer // stdout and stderr, for failure messages
	done   chan struct{}
}

func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.Write(b)
}

func (p *process) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// startNode starts node server.js and waits for its LISTENING line.
func startNode(t testing.TB, node, cfgFile string) *process {
	t.Helper()
	p := &process{done: make(chan struct{})}
	p.cmd = exec.Command(node, "server.js", cfgFile)
	p.cmd.Dir = dir()
	p.cmd.Stderr = p
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting node: %v", err)
	}
	listening := make(chan string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if rest, ok := strings.CutPrefix(line, "LISTENING "); ok {
				var v struct{ Issuer string }
				if json.Unmarshal([]byte(rest), &v) == nil {
					listening <- v.Issuer
					continue
				}
			}
			fmt.Fprintln(p, line)
		}
		io.Copy(io.Discard, stdout)
	}()
	t.Cleanup(func() { p.stop(t) })

	select {
	case p.issuer = <-listening:
		return p
	case <-p.done:
		t.Fatalf("node exited before listening:\n%s", p.log())
	case <-time.After(30 * time.Second):
		t.Fatalf("node did not listen within 30s:\n%s", p.log())
	}
	return nil
}

// stop closes node's stdin, on which it exits, and waits for it; it kills
// it if it does not exit.
func (p *process) stop(t testing.TB) {
	p.stdin.Close()
	exited := make(chan error, 1)
	go func() {
		<-p.done
		exited <- p.cmd.Wait()
	}()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-exited
	}
	if t.Failed() {
		t.Logf("oidc-provider output:\n%s", p.log())
	}
}

// waitDiscovery waits until the provider serves its discovery document.
func waitDiscovery(t testing.TB, issuer string, p *process) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, issuer+"/.well-known/openid-configuration", nil)
		resp, err := c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		cancel()
		if err == nil && resp.StatusCode == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("oidc-provider does not serve its discovery document (%v):\n%s", err, p.log())
		}
		select {
		case <-p.done:
			t.Fatalf("node exited:\n%s", p.log())
		case <-time.After(50 * time.Millisecond): // polling a process, not a timer under test
		}
	}
}

// front is the mutual-TLS front end.
type front struct {
	srv    *httptest.Server
	tr     *http.Transport
	mu     sync.Mutex
	target *url.URL
}

func newFront(cas *x509.CertPool, secret string) *front {
	f := &front{tr: &http.Transport{}}
	proxy := &httputil.ReverseProxy{
		Transport: f.tr,
		Rewrite: func(r *httputil.ProxyRequest) {
			f.mu.Lock()
			target := f.target
			f.mu.Unlock()
			r.SetURL(target)
			r.Out.Host = r.In.Host
			for _, h := range []string{"X-Client-Cert", "X-Client-Cert-Verified", "X-Client-Cert-Dn", "X-Proxy-Secret"} {
				r.Out.Header.Del(h)
			}
			r.Out.Header.Set("X-Proxy-Secret", secret)
			if r.In.TLS == nil || len(r.In.TLS.PeerCertificates) == 0 {
				return
			}
			leaf := r.In.TLS.PeerCertificates[0]
			block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})
			r.Out.Header.Set("X-Client-Cert", url.PathEscape(string(block))) // decodeURIComponent leaves "+" alone
			r.Out.Header.Set("X-Client-Cert-Dn", leaf.Subject.String())
			if cas != nil {
				inter := x509.NewCertPool()
				for _, c := range r.In.TLS.PeerCertificates[1:] {
					inter.AddCert(c)
				}
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: cas, Intermediates: inter,
					KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
					r.Out.Header.Set("X-Client-Cert-Verified", "SUCCESS")
				}
			}
		},
	}
	f.srv = httptest.NewUnstartedServer(proxy)
	f.srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes cut short at Close
	f.srv.StartTLS()
	return f
}

func (f *front) setTarget(issuer string) {
	u, _ := url.Parse(issuer)
	f.mu.Lock()
	f.target = u
	f.mu.Unlock()
}

func (f *front) close() {
	f.srv.Close()
	f.tr.CloseIdleConnections()
}
