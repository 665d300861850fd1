// Package bench compares tokenmanager's request path with
// golang.org/x/oauth2 and with the least a correct RoundTripper can do.
// It holds benchmarks only; run them with
//
//	go test -bench . -benchmem -run '^$' ./bench/
//
// The whole suite takes well under a minute of real time on two cores.
// Rows that belong together are sub-benchmarks of one benchmark, so they
// print next to each other:
//
//   - BenchmarkCachedToken and BenchmarkCachedTokenParallel: the cost a
//     cached token adds to a request, over an in-memory base RoundTripper
//     (no network). Rows: oauth2 (oauth2.Transport over
//     oauth2.ReuseTokenSource), tokenmanager (transport.RoundTripper),
//     floor (req.Clone plus one header, nothing else) and actor_ask (a
//     messages.Get ask per request, the path the snapshot replaces).
//   - BenchmarkLoopback: requests per second to an httptest server on
//     127.0.0.1 from 64 concurrent callers, through a plain http.Client
//     and through tokenmanager. BenchmarkLoopbackInterleaved measures the
//     same in alternating rounds, so machine noise hits both alike, and
//     reports their ratio.
//   - BenchmarkRollover: short-lived tokens and a slow token endpoint;
//     counts requests that stalled while the token was replaced.
//   - BenchmarkStampede: 10,000 concurrent requests at cold start and
//     after a revocation; counts provider calls and reports latency
//     percentiles.
//   - BenchmarkIdentities*: an owner of many identities (memory per
//     identity, passivation, an idle hour, cached-token ratio against the
//     single RoundTripper, first-request overhead); see identities_test.go.
//   - BenchmarkGRPCCredentials and BenchmarkGRPCRollover: grpcauth's
//     per-RPC credentials against grpc-go's oauth.TokenSource over
//     oauth2.ReuseTokenSource, per call on a cached token and at rollover
//     with a slow token endpoint.
//   - BenchmarkGRPCUnaryCall: a whole unary call over TLS on 127.0.0.1
//     with a cached token, with oauth.TokenSource, with grpcauth's per-RPC
//     credentials alone and with grpcauth's DialOptions; reports ns/op and
//     allocations per call against oauth.TokenSource.
//   - BenchmarkSignIn: one sign-in with the authorization code and PKCE
//     on loopback, the refresh token stored durably: oauth2.Config's
//     AuthCodeURL and Exchange plus users.Seed, against
//     providers.AuthCode's Start and Exchange.
//
// `go test ./bench/` runs each scenario once at a tiny size, so the
// harness is checked wherever the tests run.
package bench
