package grpcauth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"go.uber.org/goleak"
	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/credentials/local"
	"google.golang.org/grpc/credentials/oauth"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/grpcauth"
	"github.com/go-tokenmanager/tokenmanager/internal/loopcert"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// authServer is a real grpc-go server on 127.0.0.1 running the standard
// health service behind interceptors that accept only tokens issued by
// its issuer and not revoked.
type authServer struct {
	addr     string
	certPool *x509.CertPool
	srv      *grpc.Server

	mu      sync.Mutex
	valid   map[string]bool
	seen    []string // authorization values, in order
	checked atomic.Int64
	refused atomic.Int64
}

func (a *authServer) issue(tok string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.valid[tok] = true
}

func (a *authServer) revokeAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.valid)
}

func (a *authServer) authorize(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(vals) == 1 {
		a.seen = append(a.seen, vals[0])
		if tok, ok := strings.CutPrefix(vals[0], "Bearer "); ok && a.valid[tok] {
			a.checked.Add(1)
			return nil
		}
	}
	a.refused.Add(1)
	return status.Error(codes.Unauthenticated, "invalid token")
}

// newAuthServer starts the server, with TLS when secure.
func newAuthServer(t *testing.T, secure bool) *authServer {
	t.Helper()
	a := &authServer{valid: map[string]bool{}}
	var opts []grpc.ServerOption
	if secure {
		cert, pool, err := loopcert.New()
		if err != nil {
			t.Fatal(err)
		}
		a.certPool = pool
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	}
	opts = append(opts,
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := a.authorize(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := a.authorize(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}))
	a.srv = grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(a.srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.addr = lis.Addr().String()
	go a.srv.Serve(lis)
	t.Cleanup(a.srv.Stop)
	return a
}

// dial connects to a with opts, over TLS when a has a certificate.
func dial(t *testing.T, a *authServer, opts ...grpc.DialOption) healthpb.HealthClient {
	t.Helper()
	if a.certPool != nil {
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: a.certPool})))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	conn, err := grpc.NewClient(a.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

func check(ctx context.Context, c healthpb.HealthClient) error {
	_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestCredentials_coldStartSingleFlight(t *testing.T) {
	a := newAuthServer(t, true)
	p := &testutil.Provider{ExpiresIn: 3600, Delay: 50 * time.Millisecond, OnIssue: a.issue}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, nil)
	creds, err := grpcauth.New(rt)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, a, creds.DialOptions()...)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 1000 {
		wg.Go(func() {
			if err := check(context.Background(), c); err != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of 1000 calls failed", n)
	}
	if got := p.Calls.Load(); got != 1 {
		t.Errorf("provider calls = %d for 1000 concurrent cold calls; want 1", got)
	}
}

func TestCredentials_perRPCOnlyAttachesToken(t *testing.T) {
	// The credentials alone, without the interceptors, as grpc-go's own
	// oauth credentials are used.
	a := newAuthServer(t, true)
	p := &testutil.Provider{ExpiresIn: 3600, OnIssue: a.issue}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, nil)
	creds, _ := grpcauth.New(rt)
	c := dial(t, a, grpc.WithPerRPCCredentials(creds))
	if err := check(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.seen) != 1 || a.seen[0] != "Bearer tok-1" {
		t.Errorf("server saw %q; want one Bearer tok-1", a.seen)
	}
}

func TestCredentials_revocationUnderLoad(t *testing.T) {
	a := newAuthServer(t, true)
	p := &testutil.Provider{ExpiresIn: 3600, OnIssue: a.issue}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, nil)
	var tried atomic.Int64
	var lastTried atomic.Value
	defer rt.Subscribe(func(ev messages.Event) {
		if e, ok := ev.(messages.RecoveryTried); ok {
			tried.Add(1)
			lastTried.Store(e)
		}
	})()
	creds, _ := grpcauth.New(rt)
	c := dial(t, a, creds.DialOptions()...)
	if err := check(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	var calls, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				calls.Add(1)
				if err := check(context.Background(), c); err != nil {
					failed.Add(1)
					t.Error(err)
				}
			}
		})
	}
	const revocations = 3
	for i := range revocations {
		time.Sleep(100 * time.Millisecond) // load runs
		a.revokeAll()
		// The next revocation must find the token this one made the
		// calls fetch; on a loaded machine that fetch can take longer
		// than the pause above.
		for deadline := time.Now().Add(5 * time.Second); p.Calls.Load() < int64(2+i) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d calls failed across %d revocations", n, calls.Load(), revocations)
	}
	if got := p.Calls.Load(); got != 1+revocations {
		t.Errorf("provider calls = %d; want %d (one per revocation)", got, 1+revocations)
	}
	if tried.Load() == 0 {
		t.Fatal("no RecoveryTried event")
	}
	if ev := lastTried.Load().(messages.RecoveryTried); !strings.Contains(ev.Message, "/grpc.health.v1.Health/Check") {
		t.Errorf("RecoveryTried message %q; want the method", ev.Message)
	}
}

func TestCredentials_rejectedEveryTimeGivesUp(t *testing.T) {
	// A server that rejects every token: each call is retried at most
	// MaxRecoveryTries times, and gets Unauthenticated back.
	a := newAuthServer(t, true)
	var calls atomic.Int64
	provider := func(context.Context) (tokenmanager.Token, error) {
		return tokenmanager.Token{AccessToken: fmt.Sprintf("never-%d", calls.Add(1)), ExpiresIn: 3600}, nil
	}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: provider, MaxRecoveryTries: 2}, nil)
	var aborted atomic.Int64
	defer rt.Subscribe(func(ev messages.Event) {
		if _, ok := ev.(messages.RecoveryAborted); ok {
			aborted.Add(1)
		}
	})()
	creds, _ := grpcauth.New(rt)
	c := dial(t, a, creds.DialOptions()...)
	if err := check(context.Background(), c); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("err %v; want Unauthenticated", err)
	}
	if got := calls.Load(); got != 3 {
		t.Errorf("provider calls = %d; want 3 (the first token and 2 recoveries)", got)
	}
	testutil.Eventually(t, "one RecoveryAborted event", func() bool { return aborted.Load() == 1 })
}

func TestCredentials_contextCancelledWhileWaiting(t *testing.T) {
	a := newAuthServer(t, true)
	hang := func(ctx context.Context) (tokenmanager.Token, error) {
		<-ctx.Done()
		return tokenmanager.Token{}, ctx.Err()
	}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: hang}, nil)
	creds, _ := grpcauth.New(rt)
	for _, tt := range []struct {
		name string
		opts []grpc.DialOption
	}{
		{"credentials", []grpc.DialOption{grpc.WithPerRPCCredentials(creds)}},
		{"interceptors", creds.DialOptions()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, a, tt.opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			began := time.Now()
			err := check(ctx, c)
			if code := status.Code(err); code != codes.DeadlineExceeded {
				t.Errorf("err %v; want DeadlineExceeded", err)
			}
			if took := time.Since(began); took > testutil.Patience {
				t.Errorf("call took %v; want it to end with its context", took)
			}
		})
	}
}

func TestCredentials_permanentFailureIsUnauthenticated(t *testing.T) {
	a := newAuthServer(t, true)
	bad := func(context.Context) (tokenmanager.Token, error) {
		return tokenmanager.Token{}, tokenmanager.Permanent(errors.New("invalid_client"))
	}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: bad}, nil)
	creds, _ := grpcauth.New(rt)
	c := dial(t, a, creds.DialOptions()...)
	err := check(context.Background(), c)
	var fe *tokenmanager.FetchError
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "invalid_client") || !errors.As(err, &fe) {
		t.Errorf("err %v; want Unauthenticated wrapping the *FetchError", err)
	}
	if n := a.refused.Load() + a.checked.Load(); n != 0 {
		t.Errorf("server saw %d calls; want 0 (no token, nothing sent)", n)
	}
}

func TestCredentials_insecureRefusedByDefault(t *testing.T) {
	a := newAuthServer(t, false)
	p := &testutil.Provider{ExpiresIn: 3600, OnIssue: a.issue}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, nil)
	creds, _ := grpcauth.New(rt)

	// Installed on the client, gRPC refuses to make it.
	_, err := grpc.NewClient(a.addr, append(creds.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err == nil || !strings.Contains(err.Error(), "transport") {
		t.Errorf("NewClient without TLS: err %v; want it refused for lacking transport security", err)
	}
	// The interceptor alone refuses each call, without recovery.
	c := dial(t, a, grpc.WithUnaryInterceptor(creds.UnaryClientInterceptor()))
	err = check(context.Background(), c)
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "AllowInsecure") {
		t.Errorf("call without TLS: err %v; want Unauthenticated naming AllowInsecure", err)
	}
	if n := a.refused.Load() + a.checked.Load(); n != 0 {
		t.Errorf("server saw %d calls; want none", n)
	}
	if got := p.Calls.Load(); got > 1 {
		t.Errorf("provider calls = %d; want at most 1 (no recovery for a refusal of ours)", got)
	}
}

func TestCredentials_allowInsecure(t *testing.T) {
	a := newAuthServer(t, false)
	p := &testutil.Provider{ExpiresIn: 3600, OnIssue: a.issue}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, nil)
	creds, _ := grpcauth.New(rt, grpcauth.AllowInsecure())
	c := dial(t, a, creds.DialOptions()...)
	if err := check(context.Background(), c); err != nil {
		t.Fatalf("call over a plain connection with AllowInsecure: %v", err)
	}
	a.revokeAll()
	if err := check(context.Background(), c); err != nil {
		t.Errorf("recovery over a plain connection: %v", err)
	}
}

func TestCredentials_streamInvalidatesRejectedToken(t *testing.T) {
	a := newAuthServer(t, true)
	p := &testutil.Provider{ExpiresIn: 3600, OnIssue: a.issue}
	rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, nil)
	var failed atomic.Value
	defer rt.Subscribe(func(ev messages.Event) {
		if e, ok := ev.(messages.AuthFailed); ok {
			failed.Store(e)
		}
	})()
	creds, _ := grpcauth.New(rt)
	c := dial(t, a, creds.DialOptions()...)
	if err := check(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	a.revokeAll()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("stream Recv: %v; want Unauthenticated", err)
	}
	// The rejected token is gone: the next stream carries a fresh one.
	s2, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Recv(); err != nil {
		t.Fatalf("second stream: %v", err)
	}
	if got := p.Calls.Load(); got != 2 {
		t.Errorf("provider calls = %d; want 2", got)
	}
	testutil.Eventually(t, "an AuthFailed event", func() bool { return failed.Load() != nil })
	if ev, _ := failed.Load().(messages.AuthFailed); ev.Host != "/grpc.health.v1.Health/Watch" || ev.Status != int(codes.Unauthenticated) {
		t.Errorf("AuthFailed = %+v; want the stream's method and status 16", ev)
	}
}

func TestCredentials_identityFromContext(t *testing.T) {
	a := newAuthServer(t, true)
	var issued atomic.Int64
	m, err := transport.NewMulti(tokenmanager.OwnerSettings{
		SettingsFor: func(id string) (tokenmanager.Settings, error) {
			return tokenmanager.Settings{GetCredentials: func(context.Context) (tokenmanager.Token, error) {
				tok := fmt.Sprintf("%s-%d", id, issued.Add(1))
				a.issue(tok)
				return tokenmanager.Token{AccessToken: tok, ExpiresIn: 3600}, nil
			}}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	creds, _ := grpcauth.New(m)
	c := dial(t, a, creds.DialOptions()...)
	for _, id := range []string{"acme", "globex"} {
		if err := check(transport.WithIdentity(context.Background(), id), c); err != nil {
			t.Fatalf("call as %s: %v", id, err)
		}
	}
	a.mu.Lock()
	seen := append([]string(nil), a.seen...)
	a.mu.Unlock()
	if len(seen) != 2 || !strings.HasPrefix(seen[0], "Bearer acme-") || !strings.HasPrefix(seen[1], "Bearer globex-") {
		t.Errorf("server saw %q; want each call's identity's token", seen)
	}
	err = check(context.Background(), c)
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "WithIdentity") || !errors.Is(err, transport.ErrNoIdentity) {
		t.Errorf("call naming no identity: %v; want Internal (not worth retrying) wrapping transport.ErrNoIdentity", err)
	}
}

func TestNew_nilManager(t *testing.T) {
	// A constructor's result on error is a typed nil; New says so rather
	// than panic. (An untyped nil, or anything but the two managers, does
	// not compile.)
	rt, rtErr := transport.New(tokenmanager.Settings{})
	m, mErr := transport.NewMulti(tokenmanager.OwnerSettings{})
	if rt != nil || rtErr == nil || m != nil || mErr == nil {
		t.Fatalf("constructors on bad settings: %v, %v, %v, %v; want nil managers and errors", rt, rtErr, m, mErr)
	}
	for _, tt := range []struct {
		name string
		new  func() (*grpcauth.Credentials, error)
		want string
	}{
		{"RoundTripper", func() (*grpcauth.Credentials, error) { return grpcauth.New(rt) }, "nil *transport.RoundTripper"},
		{"MultiRoundTripper", func() (*grpcauth.Credentials, error) { return grpcauth.New(m) }, "nil *transport.MultiRoundTripper"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			creds, err := tt.new()
			if creds != nil || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, %v; want an error naming a %s", creds, err, tt.want)
			}
		})
	}
}

func TestTokenSource_underGRPCOAuth(t *testing.T) {
	// grpc-go's own oauth credentials over our TokenSource adapter.
	a := newAuthServer(t, true)
	p := &testutil.Provider{ExpiresIn: 3600, OnIssue: a.issue}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, Clock: clock.New()}, nil)
	ts := oauth.TokenSource{TokenSource: oauth2.ReuseTokenSource(nil, rt.TokenSource())}
	c := dial(t, a, grpc.WithPerRPCCredentials(ts))
	for range 10 {
		if err := check(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.Calls.Load(); got != 1 {
		t.Errorf("provider calls = %d; want 1 (served from the cache)", got)
	}
}

func TestDialOptions_keepsUserInterceptors(t *testing.T) {
	// Interceptors of the caller's own, given before or after
	// DialOptions, with or without chaining: each runs, and a revoked
	// token is still recovered (unary) or dropped (stream).
	type userOpts func(grpc.UnaryClientInterceptor, grpc.StreamClientInterceptor) []grpc.DialOption
	single := func(u grpc.UnaryClientInterceptor, s grpc.StreamClientInterceptor) []grpc.DialOption {
		return []grpc.DialOption{grpc.WithUnaryInterceptor(u), grpc.WithStreamInterceptor(s)}
	}
	chained := func(u grpc.UnaryClientInterceptor, s grpc.StreamClientInterceptor) []grpc.DialOption {
		return []grpc.DialOption{grpc.WithChainUnaryInterceptor(u), grpc.WithChainStreamInterceptor(s)}
	}
	for _, tt := range []struct {
		name   string
		user   userOpts
		before bool
	}{
		{"WithInterceptor before", single, true},
		{"WithInterceptor after", single, false},
		{"WithChainInterceptor before", chained, true},
		{"WithChainInterceptor after", chained, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthServer(t, true)
			p := &testutil.Provider{ExpiresIn: 3600, OnIssue: a.issue}
			rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, nil)
			creds, err := grpcauth.New(rt)
			if err != nil {
				t.Fatal(err)
			}
			var unaryRan, streamRan atomic.Int64
			user := tt.user(
				func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
					unaryRan.Add(1)
					return invoker(ctx, method, req, reply, cc, opts...)
				},
				func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
					streamRan.Add(1)
					return streamer(ctx, desc, cc, method, opts...)
				})
			var opts []grpc.DialOption
			if tt.before {
				opts = append(user, creds.DialOptions()...)
			} else {
				opts = append(creds.DialOptions(), user...)
			}
			c := dial(t, a, opts...)

			if err := check(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			a.revokeAll()
			if err := check(context.Background(), c); err != nil {
				t.Errorf("unary call after a revocation: %v; want it recovered", err)
			}
			if unaryRan.Load() == 0 {
				t.Error("the caller's unary interceptor never ran")
			}

			a.revokeAll()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); status.Code(err) != codes.Unauthenticated {
				t.Fatalf("stream with a revoked token: %v; want Unauthenticated", err)
			}
			s, err = c.Watch(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); err != nil {
				t.Errorf("next stream: %v; want a fresh token", err)
			}
			if streamRan.Load() != 2 {
				t.Errorf("the caller's stream interceptor ran %d times; want 2", streamRan.Load())
			}
			if got := p.Calls.Load(); got != 3 {
				t.Errorf("provider calls = %d; want 3 (the first token and one per revocation)", got)
			}
		})
	}
}

func TestInterceptors_eachSetupSendsOneTokenAndRecovers(t *testing.T) {
	// However the credentials and interceptors are installed, a call
	// carries exactly one authorization value (the server refuses two)
	// and a revoked token is recovered.
	for _, tt := range []struct {
		name string
		opts func(*grpcauth.Credentials) []grpc.DialOption
	}{
		{"DialOptions", (*grpcauth.Credentials).DialOptions},
		{"interceptor alone", func(c *grpcauth.Credentials) []grpc.DialOption {
			return []grpc.DialOption{grpc.WithUnaryInterceptor(c.UnaryClientInterceptor())}
		}},
		{"interceptor and credentials", func(c *grpcauth.Credentials) []grpc.DialOption {
			return []grpc.DialOption{grpc.WithPerRPCCredentials(c), grpc.WithUnaryInterceptor(c.UnaryClientInterceptor())}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthServer(t, true)
			p := &testutil.Provider{ExpiresIn: 3600, OnIssue: a.issue}
			rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, nil)
			creds, _ := grpcauth.New(rt)
			c := dial(t, a, tt.opts(creds)...)
			if err := check(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			a.revokeAll()
			if err := check(context.Background(), c); err != nil {
				t.Errorf("call after a revocation: %v; want it recovered", err)
			}
			a.mu.Lock()
			defer a.mu.Unlock()
			want := []string{"Bearer tok-1", "Bearer tok-1", "Bearer tok-2"}
			if !slices.Equal(a.seen, want) {
				t.Errorf("server saw %q; want %q", a.seen, want)
			}
		})
	}
}

func TestInterceptors_refuseConnectionWithoutSecurity(t *testing.T) {
	// A connection whose transport credentials give no security (local
	// credentials over TCP), which gRPC accepts when the client is made:
	// with the credentials installed, gRPC refuses to connect
	// (Unavailable); the interceptor alone refuses each call itself
	// (Unauthenticated naming AllowInsecure). Nothing is sent, and there
	// is no recovery.
	for _, tt := range []struct {
		name string
		opts func(*grpcauth.Credentials) []grpc.DialOption
		code codes.Code
		says string
	}{
		{"DialOptions", (*grpcauth.Credentials).DialOptions, codes.Unavailable, "insecure connection"},
		{"interceptor alone", func(c *grpcauth.Credentials) []grpc.DialOption {
			return []grpc.DialOption{grpc.WithUnaryInterceptor(c.UnaryClientInterceptor())}
		}, codes.Unauthenticated, "AllowInsecure"},
		{"interceptor and credentials", func(c *grpcauth.Credentials) []grpc.DialOption {
			return []grpc.DialOption{grpc.WithPerRPCCredentials(c), grpc.WithUnaryInterceptor(c.UnaryClientInterceptor())}
		}, codes.Unavailable, "insecure connection"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthServer(t, false)
			p := &testutil.Provider{ExpiresIn: 3600, OnIssue: a.issue}
			rt, _ := testutil.NewMockRT(t, tokenmanager.Settings{GetCredentials: p.Get}, nil)
			creds, _ := grpcauth.New(rt)
			conn, err := grpc.NewClient(a.addr, append(tt.opts(creds), grpc.WithTransportCredentials(local.NewCredentials()))...)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			err = check(context.Background(), healthpb.NewHealthClient(conn))
			if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("err %v; want %v saying %q", err, tt.code, tt.says)
			}
			if n := a.refused.Load() + a.checked.Load(); n != 0 {
				t.Errorf("server saw %d calls; want none", n)
			}
			if got := p.Calls.Load(); got != 1 {
				t.Errorf("provider calls = %d; want 1 (no recovery for a refusal of ours)", got)
			}
		})
	}
}

// attemptCounter is per-RPC credentials that count the attempts gRPC
// makes (it asks every per-RPC credentials once per attempt) and add
// nothing.
type attemptCounter struct{ n atomic.Int64 }

func (a *attemptCounter) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	a.n.Add(1)
	return nil, nil
}

func (*attemptCounter) RequireTransportSecurity() bool { return false }

func TestCredentials_temporaryFailureIsUnavailableAndRetried(t *testing.T) {
	// The token endpoint fails once (temporarily): a call fails at once
	// with Unavailable carrying the cause, so a service-config retry
	// policy on UNAVAILABLE retries it (each attempt fails at once while
	// the manager backs off); once the backoff is over, the manager's
	// retry succeeds and calls go through.
	const serviceConfig = `{"methodConfig": [{
		"name": [{"service": "grpc.health.v1.Health"}],
		"retryPolicy": {
			"maxAttempts": 3,
			"initialBackoff": "0.001s",
			"maxBackoff": "0.001s",
			"backoffMultiplier": 1,
			"retryableStatusCodes": ["UNAVAILABLE"]
		}
	}]}`
	for _, tt := range []struct {
		name string
		opts func(*grpcauth.Credentials) []grpc.DialOption
	}{
		{"DialOptions", (*grpcauth.Credentials).DialOptions},
		{"credentials", func(c *grpcauth.Credentials) []grpc.DialOption {
			return []grpc.DialOption{grpc.WithPerRPCCredentials(c)}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthServer(t, true)
			p := &testutil.Provider{ExpiresIn: 3600, OnIssue: a.issue}
			var fetches atomic.Int64
			provider := func(ctx context.Context) (tokenmanager.Token, error) {
				if fetches.Add(1) == 1 {
					return tokenmanager.Token{}, errors.New("token endpoint: 503 Service Unavailable")
				}
				return p.Get(ctx)
			}
			mock := clock.NewMock()
			rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: provider, Clock: mock, RetryBaseDelay: time.Second}, nil)
			refreshed := make(chan struct{}, 1)
			defer rt.Subscribe(func(ev messages.Event) {
				if _, ok := ev.(messages.TokenRefreshed); ok {
					select {
					case refreshed <- struct{}{}:
					default:
					}
				}
			})()
			creds, _ := grpcauth.New(rt)
			attempts := &attemptCounter{}
			opts := append([]grpc.DialOption{grpc.WithPerRPCCredentials(attempts), grpc.WithDefaultServiceConfig(serviceConfig)}, tt.opts(creds)...)
			c := dial(t, a, opts...)

			ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience)
			defer cancel()
			err := check(ctx, c)
			var fe *tokenmanager.FetchError
			if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "503 Service Unavailable") || !errors.As(err, &fe) {
				t.Fatalf("call while the token endpoint fails: %v; want Unavailable carrying the *FetchError", err)
			}
			if got := attempts.n.Load(); got != 3 {
				t.Errorf("attempts = %d; want 3 (the retry policy retried Unavailable)", got)
			}
			if got := fetches.Load(); got != 1 {
				t.Errorf("fetches = %d during the backoff; want 1", got)
			}
			if n := a.refused.Load() + a.checked.Load(); n != 0 {
				t.Errorf("server saw %d calls; want none", n)
			}

			mock.Add(2 * time.Second) // past the backoff: the manager retries
			select {
			case <-refreshed:
			case <-time.After(testutil.Patience):
				t.Fatal("no token after the backoff")
			}
			if err := check(ctx, c); err != nil {
				t.Errorf("call after the manager's retry: %v", err)
			}
			if got := fetches.Load(); got != 2 {
				t.Errorf("fetches = %d; want 2", got)
			}
		})
	}
}
