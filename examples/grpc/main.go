// Command grpc shows package grpcauth at work against a gRPC server it
// starts itself on 127.0.0.1 with TLS (a self-signed certificate made in
// memory): tokens ride on unary calls and streams, and when the server
// revokes the current token mid-run, the unary interceptor recovers with
// a fresh one so that no call fails. It exits on its own after ~6 seconds,
// with status 1 if any call failed.
//
// The server is the standard gRPC health service, so no code generation
// is needed; two server interceptors accept only "authorization: Bearer
// <token>" with a token the token endpoint issued, unexpired and not
// revoked, and answer codes.Unauthenticated otherwise.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/grpcauth"
	"github.com/go-tokenmanager/tokenmanager/internal/loopcert"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

const (
	tokenLifetime = 3 // seconds
	workers       = 4
	runFor        = 5 * time.Second
	revokeAt      = 2500 * time.Millisecond
)

func main() { os.Exit(run()) }

func run() int {
	start := time.Now()
	logf := func(format string, args ...any) {
		fmt.Printf("[%5.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	fatal := func(what string, err error) int {
		logf("%s: %v", what, err)
		return 1
	}

	// The token endpoint, in process: it issues tok-1, tok-2, ... living
	// tokenLifetime seconds, and records them for the server to check.
	var (
		mu      sync.Mutex
		valid   = map[string]time.Time{} // token -> expiry
		latest  string                   // the token issued last
		fetches atomic.Int64
	)
	provider := func(ctx context.Context) (tokenmanager.Token, error) {
		tok := fmt.Sprintf("tok-%d", fetches.Add(1))
		mu.Lock()
		valid[tok] = time.Now().Add(tokenLifetime * time.Second)
		latest = tok
		mu.Unlock()
		return tokenmanager.Token{AccessToken: tok, TokenType: "Bearer", ExpiresIn: tokenLifetime}, nil
	}

	// The server's check: exactly one authorization value, "Bearer " and
	// a token the endpoint issued, unexpired and not revoked.
	var (
		lastSeen   atomic.Value // string: the token of the last call accepted
		rejections atomic.Int64
	)
	authorize := func(ctx context.Context) (string, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		vals := md.Get("authorization")
		if len(vals) != 1 {
			rejections.Add(1)
			return "", status.Errorf(codes.Unauthenticated, "want one authorization value, got %d", len(vals))
		}
		tok, ok := strings.CutPrefix(vals[0], "Bearer ")
		mu.Lock()
		exp, known := valid[tok]
		mu.Unlock()
		if !ok || !known || time.Now().After(exp) {
			rejections.Add(1)
			return "", status.Error(codes.Unauthenticated, "invalid or revoked token")
		}
		lastSeen.Store(tok)
		return tok, nil
	}

	// TLS: a self-signed ECDSA certificate for 127.0.0.1, which the client
	// trusts and nothing else.
	cert, pool, err := loopcert.New()
	if err != nil {
		return fatal("certificate", err)
	}
	serverTLS := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	clientTLS := credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13})

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fatal("listen", err)
	}
	srv := grpc.NewServer(grpc.Creds(serverTLS),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if _, err := authorize(ctx); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			tok, err := authorize(ss.Context())
			if err != nil {
				return err
			}
			logf("server: stream %s opened with %s", info.FullMethod, tok)
			return handler(srv, ss)
		}))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		srv.GracefulStop()
		<-served
	}()
	addr := lis.Addr().String()
	logf("gRPC health server with TLS on %s; tokens live %ds, refreshed 1s early", addr, tokenLifetime)

	// The client side: a token manager, and credentials over it.
	rt, err := transport.New(tokenmanager.Settings{
		GetCredentials: provider,
		RefreshBuffer:  time.Second,
	})
	if err != nil {
		return fatal("transport.New", err)
	}
	defer rt.Close()

	var authFailed, recovered, aborted atomic.Int64
	unsubscribe := rt.Subscribe(func(ev messages.Event) {
		switch e := ev.(type) {
		case messages.TokenRefreshed:
			logf("event: token refreshed (%s)", e.Reason)
		case messages.AuthFailed:
			authFailed.Add(1)
			logf("event: auth failed: %s", e.Message)
		case messages.RecoveryTried:
			recovered.Add(1)
			logf("event: recover: %s", e.Message)
		case messages.RecoveryAborted:
			aborted.Add(1)
			logf("event: %s", e.Message)
		case messages.TokenRequestFailed:
			logf("event: token request failed: %v", e.Err)
		}
	})
	defer unsubscribe()

	creds, err := grpcauth.New(rt)
	if err != nil {
		return fatal("grpcauth.New", err)
	}

	// Tokens travel only with transport security: the same credentials
	// without TLS are refused when the client is made. (grpcauth.AllowInsecure()
	// lifts this, for a Unix socket or a mesh sidecar that terminates TLS.)
	plain, err := grpc.NewClient(addr, append(creds.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err == nil {
		plain.Close()
		logf("client without TLS: unexpectedly accepted")
		return 1
	}
	logf("client without TLS refused: %v", err)

	conn, err := grpc.NewClient(addr, append(creds.DialOptions(), grpc.WithTransportCredentials(clientTLS))...)
	if err != nil {
		return fatal("grpc.NewClient", err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// A stream carries the token too; the server checks it when the
	// stream opens.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	watch, err := client.Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fatal("watch", err)
	}
	first, err := watch.Recv()
	if err != nil {
		return fatal("watch", err)
	}
	logf("watch stream: health is %v", first.GetStatus())

	// Several goroutines call Check for runFor; the server revokes the
	// current token at revokeAt.
	var calls, failed atomic.Int64
	deadline := time.Now().Add(runFor)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
				resp, err := client.Check(cctx, &healthpb.HealthCheckRequest{})
				ccancel()
				calls.Add(1)
				if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
					err = fmt.Errorf("health is %v", resp.GetStatus())
				}
				if err != nil {
					if failed.Add(1) <= 5 {
						logf("call failed: %v", err)
					}
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()

	var revocations int
	revoke := time.After(revokeAt)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var prev int64
loop:
	for {
		select {
		case <-revoke:
			mu.Lock()
			tok := latest
			delete(valid, tok)
			mu.Unlock()
			revocations++
			logf("server revokes %s, the current token", tok)
		case <-tick.C:
			n := calls.Load()
			seen, _ := lastSeen.Load().(string)
			logf("progress: calls=%d (+%d) failed=%d fetches=%d server last accepted %s", n, n-prev, failed.Load(), fetches.Load(), seen)
			prev = n
		case <-workersDone:
			break loop
		}
	}

	// The stream was authorized when it opened; it outlives its token.
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if next, err := watch.Recv(); err != nil {
		logf("watch stream: %v", err)
		failed.Add(1)
	} else {
		logf("watch stream, still open on its first token: health is %v", next.GetStatus())
	}
	wcancel()
	if _, err := watch.Recv(); status.Code(err) != codes.Canceled && !errors.Is(err, context.Canceled) {
		logf("watch stream ended: %v", err)
	}

	conn.Close()
	srv.GracefulStop()
	rt.Close() // delivers the events still queued
	logf("grpc: calls=%d failed=%d fetches=%d revocations=%d recovered=%d (auth_failed=%d aborted=%d server rejections=%d)",
		calls.Load(), failed.Load(), fetches.Load(), revocations, recovered.Load(), authFailed.Load(), aborted.Load(), rejections.Load())
	if failed.Load() > 0 {
		return 1
	}
	return 0
}
