package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"maps"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/oauth"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/grpcauth"
	"github.com/go-tokenmanager/tokenmanager/internal/loopcert"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// The gRPC benchmarks compare grpcauth.Credentials with grpc-go's
// credentials/oauth.TokenSource over oauth2.ReuseTokenSource:
//
//   - BenchmarkGRPCCredentials: the cost of GetRequestMetadata on a cached
//     token, called directly with the context of a real call over TLS.
//   - BenchmarkGRPCRollover: BenchmarkRollover over real unary health
//     checks on a TLS loopback connection.
//   - BenchmarkGRPCUnaryCall: a whole unary call over a TLS loopback
//     connection with a cached token, per-RPC credentials alone and
//     DialOptions; TestGRPCUnaryCallAllocs holds DialOptions to no more
//     allocations per call than oauth.TokenSource.

// grpcURI is the audience gRPC passes to GetRequestMetadata for calls to
// the health service.
const grpcURI = "https://127.0.0.1/grpc.health.v1.Health"

// benchCert is a self-signed certificate for 127.0.0.1, made once, and a
// pool that trusts it.
var benchCert = sync.OnceValues(func() (*tls.Certificate, *x509.CertPool) {
	cert, pool, err := loopcert.New()
	if err != nil {
		panic(err)
	}
	return &cert, pool
})

// grpcServer is a TLS gRPC server on 127.0.0.1 serving the standard health
// service.
type grpcServer struct {
	srv   *grpc.Server
	addr  string
	roots *x509.CertPool
	done  chan struct{}
}

// startGRPCServer starts a server; with requireToken it answers
// codes.Unauthenticated to calls without a bearer token (it accepts any).
func startGRPCServer(tb testing.TB, requireToken bool) *grpcServer {
	cert, roots := benchCert()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	opts := []grpc.ServerOption{grpc.Creds(credentials.NewServerTLSFromCert(cert))}
	if requireToken {
		opts = append(opts, grpc.UnaryInterceptor(requireBearer))
	}
	s := &grpcServer{srv: grpc.NewServer(opts...), addr: lis.Addr().String(), roots: roots, done: make(chan struct{})}
	healthpb.RegisterHealthServer(s.srv, health.NewServer())
	go func() {
		defer close(s.done)
		s.srv.Serve(lis)
	}()
	return s
}

// stop stops the server and waits until it has stopped serving.
func (s *grpcServer) stop() {
	s.srv.Stop()
	<-s.done
}

// dial returns a TLS connection to s with opts.
func (s *grpcServer) dial(tb testing.TB, opts ...grpc.DialOption) *grpc.ClientConn {
	tlsCreds := credentials.NewTLS(&tls.Config{RootCAs: s.roots})
	conn, err := grpc.NewClient(s.addr, append([]grpc.DialOption{grpc.WithTransportCredentials(tlsCreds)}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	return conn
}

func requireBearer(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("authorization"); len(v) != 1 || !strings.HasPrefix(v[0], "Bearer ") {
		return nil, status.Errorf(codes.Unauthenticated, "authorization = %q; want one bearer token", v)
	}
	return handler(ctx, req)
}

// probeCreds records the context gRPC passes to per-RPC credentials.
type probeCreds struct {
	ctx atomic.Pointer[context.Context]
}

func (p *probeCreds) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	p.ctx.Store(&ctx)
	return map[string]string{}, nil
}

func (p *probeCreds) RequireTransportSecurity() bool { return true }

// liveCtx is a captured call context with its values but not its
// cancellation (gRPC cancels a call's context when the call ends).
// Unlike context.WithoutCancel's, its Value does not allocate.
type liveCtx struct{ context.Context }

func (*liveCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (*liveCtx) Done() <-chan struct{}       { return nil }
func (*liveCtx) Err() error                  { return nil }

// captureRequestInfo returns the context gRPC passed to per-RPC
// credentials on a real call over TLS: it carries the connection's
// credentials.RequestInfo, which both sides check and which only gRPC can
// make. The call's cancellation is dropped (liveCtx); the connection and
// server are gone by the time it returns.
func captureRequestInfo(tb testing.TB) context.Context {
	srv := startGRPCServer(tb, false)
	defer srv.stop()
	probe := &probeCreds{}
	conn := srv.dial(tb, grpc.WithPerRPCCredentials(probe))
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		tb.Fatal(err)
	}
	got := probe.ctx.Load()
	if got == nil {
		tb.Fatal("gRPC did not call the probe credentials")
	}
	ri, ok := credentials.RequestInfoFromContext(*got)
	if !ok {
		tb.Fatal("no RequestInfo in the credentials' context")
	}
	if err := credentials.CheckSecurityLevel(ri.AuthInfo, credentials.PrivacyAndIntegrity); err != nil {
		tb.Fatal(err)
	}
	return &liveCtx{*got}
}

// grpcCredRow is one per-RPC credentials under comparison.
type grpcCredRow struct {
	name  string
	creds credentials.PerRPCCredentials
}

// newGRPCCredRows returns the rows of BenchmarkGRPCCredentials in print
// order, oauth first, both with a long-lived token, and their cleanup.
func newGRPCCredRows(tb testing.TB) ([]grpcCredRow, func()) {
	expiry := time.Now().Add(longLifetime * time.Second)
	src := tokenSourceFunc(func() (*oauth2.Token, error) {
		return &oauth2.Token{AccessToken: benchToken, TokenType: "Bearer", Expiry: expiry}, nil
	})
	rt, err := transport.New(tokenmanager.Settings{GetCredentials: staticProvider})
	if err != nil {
		tb.Fatal(err)
	}
	ours, err := grpcauth.New(rt)
	if err != nil {
		rt.Close()
		tb.Fatal(err)
	}
	return []grpcCredRow{
		{"oauth", oauth.TokenSource{TokenSource: oauth2.ReuseTokenSource(nil, src)}},
		{"tokenmanager", ours},
	}, func() { rt.Close() }
}

// BenchmarkGRPCCredentials measures GetRequestMetadata on a cached token,
// called directly with the context of a real TLS call: oauth is grpc-go's
// credentials/oauth.TokenSource over oauth2.ReuseTokenSource, tokenmanager
// is grpcauth.Credentials. Each tokenmanager row reports ratio-vs-oauth,
// its ns/op over the oauth row measured just before it. The _parallel rows
// run 64 goroutines per GOMAXPROCS.
func BenchmarkGRPCCredentials(b *testing.B) {
	ctx := captureRequestInfo(b)
	rows, cleanup := newGRPCCredRows(b)
	defer cleanup()
	for _, parallel := range []bool{false, true} {
		var oauthNs float64
		for _, row := range rows {
			name := row.name
			if parallel {
				name += "_parallel"
			}
			b.Run(name, func(b *testing.B) {
				if _, err := row.creds.GetRequestMetadata(ctx, grpcURI); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				if parallel {
					b.SetParallelism(64)
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if _, err := row.creds.GetRequestMetadata(ctx, grpcURI); err != nil {
								b.Error(err)
								return
							}
						}
					})
				} else {
					for b.Loop() {
						if _, err := row.creds.GetRequestMetadata(ctx, grpcURI); err != nil {
							b.Fatal(err)
						}
					}
				}
				ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
				if row.name == "oauth" {
					oauthNs = ns
				} else if oauthNs > 0 {
					b.ReportMetric(ns/oauthNs, "ratio-vs-oauth")
				}
			})
		}
	}
}

// grpcCallSides are the sides of BenchmarkGRPCUnaryCall in print order:
// grpc-go's oauth.TokenSource over oauth2.ReuseTokenSource, grpcauth's
// per-RPC credentials alone, and grpcauth's full DialOptions.
var grpcCallSides = []string{"oauth", "tokenmanager_creds", "tokenmanager_dialoptions"}

// grpcCallSide returns the dial options of one side of
// BenchmarkGRPCUnaryCall, each with a long-lived token, and its cleanup.
func grpcCallSide(tb testing.TB, side string) ([]grpc.DialOption, func()) {
	if side == "oauth" {
		expiry := time.Now().Add(longLifetime * time.Second)
		src := tokenSourceFunc(func() (*oauth2.Token, error) {
			return &oauth2.Token{AccessToken: benchToken, TokenType: "Bearer", Expiry: expiry}, nil
		})
		ts := oauth.TokenSource{TokenSource: oauth2.ReuseTokenSource(nil, src)}
		return []grpc.DialOption{grpc.WithPerRPCCredentials(ts)}, func() {}
	}
	rt, err := transport.New(tokenmanager.Settings{GetCredentials: staticProvider})
	if err != nil {
		tb.Fatal(err)
	}
	creds, err := grpcauth.New(rt)
	if err != nil {
		rt.Close()
		tb.Fatal(err)
	}
	opts := creds.DialOptions()
	if side == "tokenmanager_creds" {
		opts = []grpc.DialOption{grpc.WithPerRPCCredentials(creds)}
	}
	return opts, func() { rt.Close() }
}

// grpcCaller is a connection to a TLS server on 127.0.0.1 that requires a
// bearer token, with one side's credentials, primed by a first call.
type grpcCaller struct {
	srv     *grpcServer
	conn    *grpc.ClientConn
	client  healthpb.HealthClient
	req     *healthpb.HealthCheckRequest
	cleanup func()
}

func newGRPCCaller(tb testing.TB, side string) *grpcCaller {
	srv := startGRPCServer(tb, true)
	opts, cleanup := grpcCallSide(tb, side)
	conn := srv.dial(tb, opts...)
	g := &grpcCaller{srv: srv, conn: conn, client: healthpb.NewHealthClient(conn), req: &healthpb.HealthCheckRequest{}, cleanup: cleanup}
	if err := g.call(); err != nil {
		g.close()
		tb.Fatal(err)
	}
	return g
}

// call makes one unary health check.
func (g *grpcCaller) call() error {
	_, err := g.client.Check(context.Background(), g.req)
	return err
}

func (g *grpcCaller) close() {
	g.conn.Close()
	g.srv.stop()
	g.cleanup()
}

// BenchmarkGRPCUnaryCall measures a whole unary call (client and server,
// in this process) over TLS on 127.0.0.1 with a cached token, to a server
// that requires a bearer token: oauth is grpc-go's
// credentials/oauth.TokenSource over oauth2.ReuseTokenSource,
// tokenmanager_creds grpcauth.Credentials as per-RPC credentials alone,
// tokenmanager_dialoptions grpcauth.Credentials.DialOptions (credentials
// and recovering interceptors). Each tokenmanager row reports
// ratio-vs-oauth, its ns/op over the oauth row's, and
// allocs-ratio-vs-oauth, its allocations per call over the oauth row's.
func BenchmarkGRPCUnaryCall(b *testing.B) {
	var oauthNs, oauthAllocs float64
	for _, side := range grpcCallSides {
		b.Run(side, func(b *testing.B) {
			g := newGRPCCaller(b, side)
			defer g.close()
			b.ReportAllocs()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for b.Loop() {
				if err := g.call(); err != nil {
					b.Fatal(err)
				}
			}
			runtime.ReadMemStats(&after)
			ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			allocs := float64(after.Mallocs-before.Mallocs) / float64(b.N)
			if side == "oauth" {
				oauthNs, oauthAllocs = ns, allocs
			} else if oauthNs > 0 {
				b.ReportMetric(ns/oauthNs, "ratio-vs-oauth")
				b.ReportMetric(allocs/oauthAllocs, "allocs-ratio-vs-oauth")
			}
		})
	}
}

// grpcRolloverBench is BenchmarkRollover's scenario over gRPC: 2s tokens
// replaced 1s before expiry by a token endpoint that takes 300ms, 8
// callers each sending a health check per millisecond for 3s of real time
// per side.
var grpcRolloverBench = rolloverConfig{
	callers:    8,
	window:     3 * time.Second,
	fetchDelay: 300 * time.Millisecond,
	lifetime:   2,
	early:      time.Second,
	pace:       time.Millisecond,
}

// grpcRolloverSide returns the dial options of one side of the gRPC
// rollover comparison and its cleanup. As in rolloverSide, both sides
// replace a token cfg.early before it expires: oauth2's ReuseTokenSource
// would, with its default 10s, refetch a 2s token on every call.
func grpcRolloverSide(tb testing.TB, side string, cfg rolloverConfig, calls *atomic.Int64) ([]grpc.DialOption, func()) {
	switch side {
	case "oauth":
		ts := slowTokenSource(cfg, calls)
		return []grpc.DialOption{grpc.WithPerRPCCredentials(oauth.TokenSource{TokenSource: ts})}, func() {}
	case "tokenmanager":
		rt, err := transport.New(slowSettings(cfg, calls))
		if err != nil {
			tb.Fatal(err)
		}
		creds, err := grpcauth.New(rt)
		if err != nil {
			rt.Close()
			tb.Fatal(err)
		}
		return creds.DialOptions(), func() { rt.Close() }
	}
	tb.Fatalf("unknown side %q", side)
	return nil, nil
}

// runGRPCRollover is runRollover over unary health checks to a TLS server
// on 127.0.0.1 that accepts any bearer token. It also returns the first
// failed call's error.
func runGRPCRollover(tb testing.TB, side string, cfg rolloverConfig) (rolloverResult, error) {
	srv := startGRPCServer(tb, true)
	defer srv.stop()
	var calls atomic.Int64
	opts, cleanup := grpcRolloverSide(tb, side, cfg, &calls)
	defer cleanup()
	conn := srv.dial(tb, opts...)
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.window+time.Minute)
	defer cancel()
	check := func() error {
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	// Prime the token and the connection; neither is counted.
	if err := check(); err != nil {
		tb.Fatal(err)
	}
	before := calls.Load()

	res, err := measureRollover(cfg, check)
	res.fetches = calls.Load() - before
	return res, err
}

// BenchmarkGRPCRollover is BenchmarkRollover over gRPC: unary health
// checks over TLS on 127.0.0.1 from 8 callers while 2s tokens are
// replaced by a token endpoint that takes 300ms, oauth (grpc-go's
// credentials/oauth.TokenSource over oauth2.ReuseTokenSourceWithExpiry)
// first, then tokenmanager (grpcauth.Credentials.DialOptions). It counts
// calls slower than 150ms (stalls).
func BenchmarkGRPCRollover(b *testing.B) {
	for _, side := range []string{"oauth", "tokenmanager"} {
		b.Run(side, func(b *testing.B) {
			var total rolloverResult
			for range b.N {
				r, err := runGRPCRollover(b, side, grpcRolloverBench)
				if err != nil {
					b.Errorf("%d failed calls, the first: %v", r.errors, err)
				}
				total.add(r)
			}
			total.report(b, "calls")
		})
	}
}

// TestGRPCScenarios runs the gRPC benchmarks' setups at a tiny size, so
// `go test` proves their harness: both credentials give the same header
// on the captured context (and refuse without it), and a short rollover
// over real calls replaces a token without a failed call.
func TestGRPCScenarios(t *testing.T) {
	t.Run("credentials", func(t *testing.T) {
		ctx := captureRequestInfo(t)
		rows, cleanup := newGRPCCredRows(t)
		defer cleanup()
		want := map[string]string{"authorization": benchValue}
		for _, row := range rows {
			for range 3 {
				md, err := row.creds.GetRequestMetadata(ctx, grpcURI)
				if err != nil {
					t.Fatalf("%s: %v", row.name, err)
				}
				if !maps.Equal(md, want) {
					t.Errorf("%s: metadata %v; want %v", row.name, md, want)
				}
			}
			if !row.creds.RequireTransportSecurity() {
				t.Errorf("%s: RequireTransportSecurity() = false", row.name)
			}
			// The security check is on the measured path: without the
			// captured RequestInfo both refuse.
			if md, err := row.creds.GetRequestMetadata(context.Background(), grpcURI); err == nil {
				t.Errorf("%s: metadata %v without transport security; want an error", row.name, md)
			}
		}
	})

	t.Run("rollover", func(t *testing.T) {
		// 1s tokens replaced after 500ms: one replacement in the window.
		cfg := rolloverConfig{
			callers:    2,
			window:     700 * time.Millisecond,
			fetchDelay: 20 * time.Millisecond,
			lifetime:   1,
			early:      500 * time.Millisecond,
			pace:       time.Millisecond,
		}
		for _, side := range []string{"oauth", "tokenmanager"} {
			r, err := runGRPCRollover(t, side, cfg)
			if r.requests == 0 || r.errors != 0 || r.fetches == 0 {
				t.Errorf("%s: %d calls, %d errors (first: %v), %d fetches; want calls, no errors, a fetch", side, r.requests, r.errors, err, r.fetches)
			}
		}
	})
}

// TestGRPCUnaryCallAllocs checks that a whole unary call with grpcauth's
// DialOptions (credentials and recovering interceptors) allocates no more
// than with grpc-go's oauth.TokenSource over oauth2.ReuseTokenSource, and
// with the credentials alone no more than with their DialOptions.
func TestGRPCUnaryCallAllocs(t *testing.T) {
	allocs := map[string]float64{}
	for _, side := range grpcCallSides {
		g := newGRPCCaller(t, side)
		allocs[side] = testing.AllocsPerRun(200, func() {
			if err := g.call(); err != nil {
				t.Fatal(err)
			}
		})
		g.close()
	}
	t.Logf("allocations per call: %v", allocs)
	if ours, theirs := allocs["tokenmanager_dialoptions"], allocs["oauth"]; ours > theirs {
		t.Errorf("allocations per call with DialOptions = %v; want at most oauth.TokenSource's %v", ours, theirs)
	}
	if creds, all := allocs["tokenmanager_creds"], allocs["tokenmanager_dialoptions"]; creds > all {
		t.Errorf("allocations per call with the credentials alone = %v; want at most DialOptions' %v", creds, all)
	}
}
