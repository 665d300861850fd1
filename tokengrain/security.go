package tokengrain

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// ErrInsecureRemote is why a grain refuses to serve, and a member refuses
// to ask, over a cluster whose remote is plaintext gRPC bound to or
// advertised on a non-loopback address: tokens would cross the network in
// clear, to any process that can reach the port. Configure the remote with
// [MutualTLS], or knowingly with [AllowInsecureHTTP].
var ErrInsecureRemote = errors.New("tokenmanager: token grain: the cluster's remote is plaintext gRPC on a non-loopback address, tokens would cross the network in clear; configure it with tokengrain.MutualTLS (or, knowingly, tokengrain.AllowInsecureHTTP)")

// security is what tokengrain's remote options said about a remote
// configuration.
type security struct {
	mtls          bool
	allowInsecure bool
	err           error // MutualTLS was given an unusable tls.Config
}

// remotes holds what [MutualTLS] and [AllowInsecureHTTP] said about the
// remote configurations they were applied to: remote.Config has no room
// for it. An entry is a few bytes per configuration, kept for the life of
// the process.
var remotes struct {
	mu  sync.Mutex
	cfg map[*remote.Config]security
}

func markRemote(rc *remote.Config, f func(*security)) {
	remotes.mu.Lock()
	defer remotes.mu.Unlock()
	if remotes.cfg == nil {
		remotes.cfg = map[*remote.Config]security{}
	}
	s := remotes.cfg[rc]
	f(&s)
	remotes.cfg[rc] = s
}

func securityOf(rc *remote.Config) security {
	remotes.mu.Lock()
	defer remotes.mu.Unlock()
	return remotes.cfg[rc]
}

// MutualTLS is a remote option (remote.Configure(host, port,
// tokengrain.MutualTLS(cfg))) that makes the member's protoactor remote
// speak TLS 1.3 both ways, with client certificates required: a process
// without a certificate from the cluster's CA can neither connect to a
// member nor be connected to, so it gets no token, and nothing crosses the
// network in clear. Every member, and every cluster client, uses the same
// option.
//
// cfg holds the member's credentials: its certificate (Certificates, or
// GetCertificate and GetClientCertificate), the CA that signs every
// member's certificate (RootCAs and ClientCAs), and ServerName, a name
// every member's certificate carries as a DNS name (members dial each
// other by IP). [TLSFiles.Config] builds one from files that are read
// again when they change. MutualTLS adds to the remote's dial and server
// options, after the ones already set. A cfg without a CA to verify peers
// against makes [CheckRemote] fail, so no token is served.
func MutualTLS(cfg *tls.Config) remote.ConfigOption {
	return func(rc *remote.Config) {
		c, err := mutualTLSConfig(cfg)
		if err != nil {
			markRemote(rc, func(s *security) { s.err = err })
			return
		}
		creds := credentials.NewTLS(c)
		rc.ServerOptions = append(rc.ServerOptions, grpc.Creds(creds))
		rc.DialOptions = append(rc.DialOptions, grpc.WithTransportCredentials(creds))
		markRemote(rc, func(s *security) { s.mtls, s.err = true, nil })
	}
}

// mutualTLSConfig checks cfg and returns the configuration both sides of
// the remote use: client certificates required, TLS 1.3.
func mutualTLSConfig(cfg *tls.Config) (*tls.Config, error) {
	if cfg == nil {
		return nil, errors.New("tokenmanager: tokengrain.MutualTLS: no tls.Config")
	}
	c := cfg.Clone()
	if len(c.Certificates) == 0 && (c.GetCertificate == nil || c.GetClientCertificate == nil) {
		return nil, errors.New("tokenmanager: tokengrain.MutualTLS: the tls.Config has no certificate for the member (Certificates, or GetCertificate and GetClientCertificate)")
	}
	// Without a pool, crypto/tls verifies against the system's roots: any
	// certificate from a public CA would do.
	if c.ClientCAs == nil && c.GetConfigForClient == nil {
		return nil, errors.New("tokenmanager: tokengrain.MutualTLS: the tls.Config has no ClientCAs to verify members against")
	}
	if c.RootCAs == nil && (!c.InsecureSkipVerify || c.VerifyConnection == nil) {
		return nil, errors.New("tokenmanager: tokengrain.MutualTLS: the tls.Config has no RootCAs to verify members against")
	}
	if c.InsecureSkipVerify && c.VerifyConnection == nil {
		return nil, errors.New("tokenmanager: tokengrain.MutualTLS: InsecureSkipVerify without VerifyConnection verifies nothing")
	}
	if c.GetConfigForClient == nil {
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	c.MinVersion = max(c.MinVersion, tls.VersionTLS13)
	return c, nil
}

// AllowInsecureHTTP is a remote option that lets grains serve tokens, and
// members ask for them, over a plaintext remote bound to a non-loopback
// address: tokens then cross the network in clear, and any process that
// can reach a member's port can join as a cluster client and ask for
// them. Use it only where the network itself is private and trusted (a
// service mesh that encrypts and authenticates pod-to-pod traffic, for
// example). Without it, or [MutualTLS], [CheckRemote] fails for such a
// remote.
func AllowInsecureHTTP() remote.ConfigOption {
	return func(rc *remote.Config) {
		markRemote(rc, func(s *security) { s.allowInsecure = true })
	}
}

// CheckRemote returns nil when tokens may cross c's remote: it uses
// [MutualTLS], or it is bound to and advertised on loopback only, or it
// was configured with [AllowInsecureHTTP]. Otherwise it returns an error
// wrapping [ErrInsecureRemote] (or why MutualTLS's configuration is
// unusable), and grains on c refuse to serve tokens, and members on c do
// not ask for them: they fetch on their own, as when the cluster is
// unreachable.
func CheckRemote(c *cluster.Cluster) error {
	if c == nil || c.Config == nil || c.Config.RemoteConfig == nil {
		return errors.New("tokenmanager: token grain: the cluster has no remote configuration")
	}
	rc := c.Config.RemoteConfig
	s := securityOf(rc)
	switch {
	case s.err != nil:
		return s.err
	case s.mtls:
		return nil
	case loopbackOnly(rc):
		return nil
	case s.allowInsecure:
		return nil
	}
	return fmt.Errorf("%w (bound to %q)", ErrInsecureRemote, rc.Address())
}

// loopbackOnly reports whether the remote is bound to, and advertised on,
// a loopback address.
func loopbackOnly(rc *remote.Config) bool {
	if !isLoopback(rc.Host) {
		return false
	}
	if rc.AdvertisedHost == "" {
		return true
	}
	host, _, err := net.SplitHostPort(rc.AdvertisedHost)
	if err != nil {
		host = rc.AdvertisedHost
	}
	return isLoopback(host)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// TLSFiles names a member's credentials as PEM files, as cert-manager
// writes them into a Kubernetes secret mounted as a volume (tls.crt,
// tls.key, ca.crt). The files are read again when one of them changes, at
// the next handshake, so a renewed certificate or CA bundle is picked up
// without a restart; connections already open keep their certificate.
type TLSFiles struct {
	// CertFile is the member's certificate chain (PEM), leaf first. The
	// certificate must allow both server and client authentication and
	// carry ServerName as a DNS name.
	CertFile string
	// KeyFile is its private key (PEM).
	KeyFile string
	// CAFile holds the certificates of the CA (or CAs, during a CA
	// rotation) that signs the members' certificates (PEM).
	CAFile string
	// ServerName is the DNS name every member's certificate carries; a
	// peer whose certificate lacks it is refused.
	ServerName string
}

// Config reads the files and returns a tls.Config for [MutualTLS]: each
// side verifies the other's chain against the CA file's certificates,
// requires ServerName in the peer's certificate, and requires the key
// usage of its role (server or client authentication).
func (f TLSFiles) Config() (*tls.Config, error) {
	if f.ServerName == "" {
		return nil, errors.New("tokenmanager: tokengrain.TLSFiles: no ServerName")
	}
	return f.configWith(&reloader{files: f, now: time.Now})
}

// configWith is Config over r.
func (f TLSFiles) configWith(r *reloader) (*tls.Config, error) {
	if _, err := r.current(); err != nil {
		return nil, err
	}
	verify := func(usage x509.ExtKeyUsage) func(tls.ConnectionState) error {
		return func(cs tls.ConnectionState) error {
			cr, err := r.current()
			if err != nil {
				return err
			}
			return verifyPeer(cs, cr.pool, f.ServerName, usage)
		}
	}
	certificate := func() (*tls.Certificate, error) {
		cr, err := r.current()
		if err != nil {
			return nil, err
		}
		return &cr.cert, nil
	}
	// Both sides verify in VerifyConnection against the CA file as it is
	// now (crypto/tls's own verification would keep the pool it was
	// given): as a client, the server's certificate; as a server (the
	// configuration GetConfigForClient returns), the client's.
	cfg := &tls.Config{
		MinVersion:           tls.VersionTLS13,
		ServerName:           f.ServerName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return certificate() },
		GetCertificate:       func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return certificate() },
		InsecureSkipVerify:   true,
		VerifyConnection:     verify(x509.ExtKeyUsageServerAuth),
	}
	server := &tls.Config{
		MinVersion:       tls.VersionTLS13,
		GetCertificate:   cfg.GetCertificate,
		ClientAuth:       tls.RequireAnyClientCert,
		VerifyConnection: verify(x509.ExtKeyUsageClientAuth),
	}
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		s := server.Clone()
		// gRPC negotiates HTTP/2 through ALPN: keep what the caller
		// (credentials.NewTLS) set on the configuration it was given.
		s.NextProtos = nextProtos(hello)
		return s, nil
	}
	return cfg, nil
}

// nextProtos returns the protocols the server offers: h2, if the client
// asked for it.
func nextProtos(hello *tls.ClientHelloInfo) []string {
	for _, p := range hello.SupportedProtos {
		if p == "h2" {
			return []string{"h2"}
		}
	}
	return nil
}

// verifyPeer verifies the peer's chain against pool, for serverName, with
// the given key usage (server authentication for a peer that is a
// server, client authentication for a client).
func verifyPeer(cs tls.ConnectionState, pool *x509.CertPool, serverName string, usage x509.ExtKeyUsage) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tokenmanager: token grain: the peer sent no certificate")
	}
	opts := x509.VerifyOptions{
		Roots:         pool,
		Intermediates: x509.NewCertPool(),
		DNSName:       serverName,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return fmt.Errorf("tokenmanager: token grain: peer certificate refused: %w", err)
	}
	return nil
}

// reloader keeps a member's key pair and CA pool, read again when a file's
// size or modification time changes (checked at most once a second).
type reloader struct {
	files TLSFiles
	now   func() time.Time

	mu      sync.Mutex
	checked time.Time
	stamp   string
	cr      *credsNow
}

type credsNow struct {
	cert tls.Certificate
	pool *x509.CertPool
}

func (r *reloader) current() (*credsNow, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if r.cr != nil && now.Sub(r.checked) < time.Second {
		return r.cr, nil
	}
	r.checked = now
	stamp, err := r.stampOf()
	if err != nil {
		if r.cr != nil {
			return r.cr, nil // mid-rotation (files being replaced): keep the last good ones
		}
		return nil, err
	}
	if r.cr != nil && stamp == r.stamp {
		return r.cr, nil
	}
	cert, err := tls.LoadX509KeyPair(r.files.CertFile, r.files.KeyFile)
	if err != nil {
		if r.cr != nil {
			return r.cr, nil
		}
		return nil, fmt.Errorf("tokenmanager: tokengrain.TLSFiles: %w", err)
	}
	ca, err := os.ReadFile(r.files.CAFile)
	if err != nil {
		if r.cr != nil {
			return r.cr, nil
		}
		return nil, fmt.Errorf("tokenmanager: tokengrain.TLSFiles: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		if r.cr != nil {
			return r.cr, nil
		}
		return nil, fmt.Errorf("tokenmanager: tokengrain.TLSFiles: no certificate in %s", r.files.CAFile)
	}
	r.cr, r.stamp = &credsNow{cert: cert, pool: pool}, stamp
	return r.cr, nil
}

func (r *reloader) stampOf() (string, error) {
	var s string
	for _, name := range []string{r.files.CertFile, r.files.KeyFile, r.files.CAFile} {
		fi, err := os.Stat(name)
		if err != nil {
			return "", fmt.Errorf("tokenmanager: tokengrain.TLSFiles: %w", err)
		}
		s += fmt.Sprintf("%s:%d:%d;", name, fi.Size(), fi.ModTime().UnixNano())
	}
	return s, nil
}
