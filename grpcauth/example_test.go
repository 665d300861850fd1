package grpcauth_test

import (
	"context"
	"fmt"
	"log"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/grpcauth"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

func ExampleNew() {
	// A gRPC server that accepts only "Bearer token-2": the first token
	// the manager fetches is rejected, and the interceptor recovers.
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer token-2" {
			return nil, status.Error(codes.Unauthenticated, "invalid token")
		}
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()

	n := 0
	rt, err := transport.New(tokenmanager.Settings{
		GetCredentials: func(ctx context.Context) (tokenmanager.Token, error) {
			n++ // one fetch at a time
			return tokenmanager.Token{AccessToken: fmt.Sprintf("token-%d", n), ExpiresIn: 3600}, nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close()

	// Over TLS in production; this loopback demo opts out explicitly.
	creds, err := grpcauth.New(rt, grpcauth.AllowInsecure())
	if err != nil {
		log.Fatal(err)
	}
	conn, err := grpc.NewClient(lis.Addr().String(),
		append(creds.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	fmt.Println(resp.GetStatus(), err, "tokens fetched:", n)
	// Output: SERVING <nil> tokens fetched: 2
}
