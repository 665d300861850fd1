// Package grpcauth puts a token manager's tokens on gRPC calls: per-RPC
// credentials that honour each call's context, and client interceptors
// that recover from a rejected token (codes.Unauthenticated) the way the
// HTTP RoundTripper recovers from a 401.
//
// Build [Credentials] over a *transport.RoundTripper (one identity) or a
// *transport.MultiRoundTripper (the identity from each call's context,
// transport.WithIdentity), and make the client with
// [Credentials.DialOptions]:
//
//	creds, err := grpcauth.New(rt)
//	conn, err := grpc.NewClient(target,
//		append(creds.DialOptions(), grpc.WithTransportCredentials(tlsCreds))...)
//
// Tokens travel only over connections with transport security (checked
// per call against the connection's security level, as
// credentials.CheckSecurityLevel does) unless [AllowInsecure] is given.
package grpcauth

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/core"
	"github.com/go-tokenmanager/tokenmanager/internal/request"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// Manager is the constraint of [New]'s token manager: a
// *transport.RoundTripper or a *transport.MultiRoundTripper. Anything else
// fails to compile.
type Manager interface {
	*transport.RoundTripper | *transport.MultiRoundTripper
}

// Option configures [New].
type Option interface {
	apply(*Credentials)
}

type optionFunc func(*Credentials)

func (f optionFunc) apply(c *Credentials) { f(c) }

// AllowInsecure lets tokens travel over connections without transport
// security. Without it a call on such a connection fails with
// codes.Unauthenticated and sends nothing, and grpc.NewClient with
// [Credentials.DialOptions] but without transport credentials fails. Use
// it only where something else protects the traffic: a Unix socket, or a
// service mesh whose sidecar terminates TLS.
func AllowInsecure() Option {
	return optionFunc(func(c *Credentials) { c.insecure = true })
}

// Credentials attaches the manager's token to gRPC calls. It implements
// credentials.PerRPCCredentials, and offers unary and stream client
// interceptors that recover from rejected tokens. It is safe for
// concurrent use by multiple goroutines.
type Credentials struct {
	f        core.Facade
	insecure bool
	// intercepting is set once an interceptor was made: only then may a
	// call's context carry an interceptor's token (a context lookup is
	// not free).
	intercepting atomic.Bool
}

// New returns credentials over m, which comes from transport.New,
// transport.NewFromActor, transport.NewMulti or transport.NewMultiFromActor.
// A nil m (a constructor's result on error) is an error. Closing m ends
// the credentials: calls then fail with codes.Unavailable.
func New[M Manager](m M, opts ...Option) (*Credentials, error) {
	if m == nil {
		return nil, fmt.Errorf("grpcauth: the token manager is a nil %T; check the error its constructor returned", m)
	}
	f, ok := core.FacadeOf(m)
	if !ok {
		return nil, fmt.Errorf("grpcauth: %T is not a token manager of package transport", m)
	}
	if _, single := any(m).(*transport.RoundTripper); single {
		if b, err := f.Bind(context.Background()); err == nil && b.Req.DPoP != nil {
			return nil, errDPoP
		}
	}
	c := &Credentials{f: f}
	for _, o := range opts {
		if o != nil {
			o.apply(c)
		}
	}
	return c, nil
}

// DialOptions returns the options that install c: as per-RPC credentials
// and as unary and stream interceptors. The interceptors are added to the
// client's chains (grpc.WithChainUnaryInterceptor,
// grpc.WithChainStreamInterceptor), so interceptors of the caller's own,
// given before or after these options, run as well; recovery wraps those
// chained after it, which then run once per attempt.
//
// These interceptors hand the token they chose to c installed as per-RPC
// credentials by the same options, rather than attach credentials to each
// call as [Credentials.UnaryClientInterceptor] does: a call costs no more
// allocations than with c as per-RPC credentials alone.
func (c *Credentials) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithPerRPCCredentials(c),
		grpc.WithChainUnaryInterceptor(c.unaryInterceptor(false)),
		grpc.WithChainStreamInterceptor(c.streamInterceptor(false)),
	}
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: true
// unless [AllowInsecure] was given.
func (c *Credentials) RequireTransportSecurity() bool { return !c.insecure }

// GetRequestMetadata implements credentials.PerRPCCredentials: it returns
// the token's header (by default "authorization: Bearer ...") for the
// call, in a map shared by the calls that carry the same token: do not
// modify it. A cached token costs no wait; otherwise it waits for the
// fetch under way, at most until the call's context ends, while other
// calls go on. It does not wait through a failed fetch: once a fetch has
// failed, and until one succeeds, it fails at once with that fetch's
// error, while the manager retries with backoff. Its errors carry the
// status codes gRPC allows from credentials: Unauthenticated for a
// connection without transport security or a permanent fetch failure,
// Unavailable for a temporary one (so that a retry policy on UNAVAILABLE
// retries the call) or a closed manager, and Canceled or DeadlineExceeded
// when the call's context ends first. The cause stays reachable with
// errors.As (*tokenmanager.FetchError) and errors.Is.
func (c *Credentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if c.intercepting.Load() {
		if st := c.stateOf(ctx); st != nil {
			if st.viaCall {
				// The interceptor attaches this call's token
				// (callCreds): one header, not two.
				return nil, nil
			}
			return st.metadata(ctx)
		}
	}
	if err := c.checkSecurity(ctx); err != nil {
		return nil, err
	}
	b, err := c.f.Bind(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	_, value, err := c.token(ctx, &b)
	if err != nil {
		return nil, toStatus(err)
	}
	return metadataFor(b, value), nil
}

// metadataFor returns the metadata carrying value for b, made once per
// token: the map is shared between calls, so a cached token costs a call
// no allocation here. gRPC only reads it.
func metadataFor(b core.Binding, value string) map[string]string {
	if md := b.St.MD.Load(); md != nil && md.Value == value {
		return md.M
	}
	m := map[string]string{metadataKey(b): value}
	b.St.MD.Store(&request.Metadata{Value: value, M: m})
	return m
}

// checkSecurity refuses a connection without privacy and integrity,
// unless AllowInsecure.
func (c *Credentials) checkSecurity(ctx context.Context) error {
	if c.insecure {
		return nil
	}
	ri, _ := credentials.RequestInfoFromContext(ctx)
	if err := credentials.CheckSecurityLevel(ri.AuthInfo, credentials.PrivacyAndIntegrity); err != nil {
		return status.Errorf(codes.Unauthenticated, "grpcauth: refusing to send a token over a connection without transport security (%v); see grpcauth.AllowInsecure", err)
	}
	return nil
}

// token returns b's token and its header value, waiting if none is
// cached for the fetch under way, not through a failed one.
func (c *Credentials) token(ctx context.Context, b *core.Binding) (access, value string, err error) {
	if b.Req.DPoP != nil {
		return "", "", errDPoP
	}
	return c.f.Core.AttachOrFailure(ctx, b)
}

// metadataKey is b's header name as gRPC metadata wants it.
// errDPoP refuses DPoP-bound identities: a DPoP proof names an HTTP
// method and URL (htm, htu), which a gRPC call does not have in any
// standard way, so no server could check one. See docs/grpc.md.
var errDPoP = tokenmanager.Permanent(errors.New("grpcauth: the identity uses DPoP (Settings.DPoP), which has no defined use over gRPC; use a bearer or mutual-TLS identity for gRPC"))

func metadataKey(b core.Binding) string { return b.Req.Key }

// toStatus turns a failure to get a token into a status gRPC accepts from
// credentials (gRFC A54), keeping the cause for errors.Is and errors.As:
// Canceled and DeadlineExceeded when the call's context ended,
// Unauthenticated for a permanent fetch failure, Unavailable for a
// temporary one or a closed manager (worth retrying), and Internal for a
// mistake retrying cannot mend (no identity, bad settings, a panicking
// Formatter).
func toStatus(err error) error {
	code := codes.Internal
	var fe *tokenmanager.FetchError
	switch {
	case errors.Is(err, errDPoP):
		code = codes.FailedPrecondition
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case tokenmanager.IsPermanent(err):
		code = codes.Unauthenticated
	case errors.As(err, &fe), errors.Is(err, tokenmanager.ErrClosed):
		code = codes.Unavailable
	}
	return &statusError{status.New(code, err.Error()), err}
}

// statusError is a gRPC status that keeps its cause.
type statusError struct {
	s     *status.Status
	cause error
}

func (e *statusError) Error() string              { return e.s.Err().Error() }
func (e *statusError) GRPCStatus() *status.Status { return e.s }
func (e *statusError) Unwrap() error              { return e.cause }

// callState is an intercepted call's context: it carries, for its
// Credentials, the token metadata the interceptor chose, how it reaches
// the call, and whether the credentials refused the call (so that their
// Unauthenticated is not taken for the server's). It is the context value
// of key c, so that its lookup allocates nothing, and one allocation per
// attempt.
type callState struct {
	context.Context
	c       *Credentials
	md      map[string]string
	viaCall bool // attached as call credentials (callCreds), not by c at dial time
	failed  bool
}

// Value returns st for its Credentials' key, else the parent's value.
func (st *callState) Value(key any) any {
	if k, ok := key.(*Credentials); ok && k == st.c {
		return st
	}
	return st.Context.Value(key)
}

// stateOf returns the state of a call intercepted by c, or nil.
func (c *Credentials) stateOf(ctx context.Context) *callState {
	st, _ := ctx.Value(c).(*callState)
	return st
}

// metadata returns the call's token metadata once the connection passes
// c's security check; otherwise it marks the call as refused by the
// credentials.
func (st *callState) metadata(ctx context.Context) (map[string]string, error) {
	if err := st.c.checkSecurity(ctx); err != nil {
		st.failed = true
		return nil, err
	}
	return st.md, nil
}

// attempt returns the context of one attempt of an intercepted call
// carrying value, b's header value, and its call options: with viaCall,
// the token goes as call credentials; otherwise c, installed at dial
// time, sends it.
func (c *Credentials) attempt(ctx context.Context, b core.Binding, value string, viaCall bool, opts []grpc.CallOption) (*callState, []grpc.CallOption) {
	st := &callState{Context: ctx, c: c, md: metadataFor(b, value), viaCall: viaCall}
	if viaCall {
		opts = append(opts[:len(opts):len(opts)], grpc.PerRPCCredentials(callCreds{c}))
	}
	return st, opts
}

// callCreds are the credentials an interceptor attaches to one call when
// c may not be installed at dial time. They check transport security
// themselves (gRPC's own check for call credentials answers
// Unauthenticated, which the interceptor would take for the server
// rejecting the token).
type callCreds struct{ c *Credentials }

func (cc callCreds) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	return cc.c.stateOf(ctx).metadata(ctx)
}

func (callCreds) RequireTransportSecurity() bool { return false }

// UnaryClientInterceptor returns an interceptor that attaches the token
// and, when the server answers codes.Unauthenticated, invalidates the
// token the call carried (only if it is still the cached one), waits for
// a fresh one and calls again, at most Settings.MaxRecoveryTries times
// per call, with the same events as HTTP (AuthFailed, RecoveryTried,
// RecoveryAborted, their Host the call's method and Status 16). The same
// hold as for HTTP spares the token endpoint when every new token is
// rejected. It attaches the token itself, so it works with or without the
// credentials installed at dial time.
func (c *Credentials) UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return c.unaryInterceptor(true)
}

// unaryInterceptor is UnaryClientInterceptor; viaCall says whether it
// attaches the token as call credentials, or leaves it to c installed at
// dial time (DialOptions).
func (c *Credentials) unaryInterceptor(viaCall bool) grpc.UnaryClientInterceptor {
	c.intercepting.Store(true)
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		b, err := c.f.Bind(ctx)
		if err != nil {
			return toStatus(err)
		}
		used, value, err := c.token(ctx, &b)
		if err != nil {
			if !viaCall {
				// c, installed at dial time, fails the call's attempt
				// the same way: inside gRPC, where retry policies apply.
				return invoker(ctx, method, req, reply, cc, opts...)
			}
			return toStatus(err)
		}
		st, aopts := c.attempt(ctx, b, value, viaCall, opts)
		err = invoker(st, method, req, reply, cc, aopts...)
		if status.Code(err) != codes.Unauthenticated || st.failed {
			if err == nil {
				c.f.Core.Served(b)
			}
			return err
		}
		call := &unaryCall{c: c, ctx: ctx, method: method, req: req, reply: reply, cc: cc, invoker: invoker, opts: opts, b: b, viaCall: viaCall, last: err}
		if err := c.f.Core.Recover(ctx, b, call, used, value, int(codes.Unauthenticated), core.Rejected); err != nil {
			return err
		}
		return call.last
	}
}

// unaryCall is a unary call under recovery (core.Call); last is its
// latest outcome.
type unaryCall struct {
	c       *Credentials
	ctx     context.Context
	method  string
	req     any
	reply   any
	cc      *grpc.ClientConn
	invoker grpc.UnaryInvoker
	opts    []grpc.CallOption
	b       core.Binding
	viaCall bool
	last    error
}

func (u *unaryCall) Where() string        { return u.method }
func (u *unaryCall) Unreplayable() string { return "" }
func (u *unaryCall) Prepare() error       { return nil }
func (u *unaryCall) Discard()             {}

func (u *unaryCall) Resend(_, value string) (int, core.Verdict, error) {
	st, opts := u.c.attempt(u.ctx, u.b, value, u.viaCall, u.opts)
	u.last = u.invoker(st, u.method, u.req, u.reply, u.cc, opts...)
	switch code := status.Code(u.last); {
	case code == codes.Unauthenticated && !st.failed:
		return int(code), core.Rejected, nil // rejected again
	case u.last != nil:
		// Any other failure is the call's answer, but not a sign the
		// token was accepted: no Served.
		return int(code), core.Accepted, u.last
	}
	return int(codes.OK), core.Accepted, nil
}

// StreamClientInterceptor returns an interceptor that attaches the token
// to streams and, when a stream ends with codes.Unauthenticated,
// invalidates the token it carried (only if it is still the cached one)
// and publishes AuthFailed, so the next stream gets a fresh token.
//
// Streams are not retried: the rejection arrives with the stream's status,
// after messages may have been sent and received, and replaying them is
// the application's decision. Open the stream again.
func (c *Credentials) StreamClientInterceptor() grpc.StreamClientInterceptor {
	return c.streamInterceptor(true)
}

// streamInterceptor is StreamClientInterceptor; viaCall as for
// unaryInterceptor.
func (c *Credentials) streamInterceptor(viaCall bool) grpc.StreamClientInterceptor {
	c.intercepting.Store(true)
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		b, err := c.f.Bind(ctx)
		if err != nil {
			return nil, toStatus(err)
		}
		used, value, err := c.token(ctx, &b)
		if err != nil {
			if !viaCall {
				return streamer(ctx, desc, cc, method, opts...) // as for unary calls
			}
			return nil, toStatus(err)
		}
		st, aopts := c.attempt(ctx, b, value, viaCall, opts)
		s := &stream{c: c, b: b, used: used, method: method, st: st}
		cs, err := streamer(st, desc, cc, method, aopts...)
		if err != nil {
			s.check(err)
			return nil, err
		}
		s.ClientStream = cs
		return s, nil
	}
}

// stream watches a client stream for a rejected token.
type stream struct {
	grpc.ClientStream
	c      *Credentials
	b      core.Binding
	used   string
	method string
	st     *callState
	done   atomic.Bool // the token was invalidated (RecvMsg and CloseSend may run on two goroutines)
}

func (s *stream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	s.check(err)
	return err
}

func (s *stream) CloseSend() error {
	err := s.ClientStream.CloseSend()
	s.check(err)
	return err
}

// check invalidates the stream's token once, when err says the server
// rejected it.
func (s *stream) check(err error) {
	if err == nil || status.Code(err) != codes.Unauthenticated || s.st.failed || !s.done.CompareAndSwap(false, true) {
		return
	}
	s.c.f.Core.Invalidate(s.b, s.used, s.method, int(codes.Unauthenticated))
}
