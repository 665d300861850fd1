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
	"github.com/go-tokenmanager/tokenmanager/internal/link"
)

// Manager is a token manager of package transport: a
// *transport.RoundTripper or a *transport.MultiRoundTripper.
type Manager interface {
	Close() error
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

// New returns credentials over m, which must come from transport.New,
// transport.NewFromActor, transport.NewMulti or transport.NewMultiFromActor.
// Closing m ends them: calls then fail with codes.Unavailable.
func New(m Manager, opts ...Option) (*Credentials, error) {
	f, ok := core.FacadeOf(m)
	if !ok {
		return nil, fmt.Errorf("grpcauth: %T is not a token manager of package transport", m)
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
func (c *Credentials) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithPerRPCCredentials(c),
		grpc.WithChainUnaryInterceptor(c.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(c.StreamClientInterceptor()),
	}
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: true
// unless [AllowInsecure] was given.
func (c *Credentials) RequireTransportSecurity() bool { return !c.insecure }

// GetRequestMetadata implements credentials.PerRPCCredentials: it returns
// the token's header (by default "authorization: Bearer ...") for the
// call, in a map shared by the calls that carry the same token: do not
// modify it. A cached token costs no wait; otherwise it waits for the token,
// at most until the call's context ends, while other calls go on. Its
// errors carry the status codes gRPC allows from credentials:
// Unauthenticated for a connection without transport security or a
// permanent fetch failure, Unavailable for a temporary one or a closed
// manager, and Canceled or DeadlineExceeded when the call's context ends.
func (c *Credentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if c.intercepting.Load() && stateOf(ctx) != nil {
		// An interceptor attaches this call's token (callCreds): one
		// header, not two.
		return nil, nil
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
	b.St.MD.Store(&link.Metadata{Value: value, M: m})
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
// cached.
func (c *Credentials) token(ctx context.Context, b *core.Binding) (access, value string, err error) {
	return c.f.Core.Attach(ctx, b)
}

// metadataKey is b's header name as gRPC metadata wants it.
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

// callState travels in an intercepted call's context to the credentials:
// the token the interceptor chose, and whether the credentials refused the
// call (so that their Unauthenticated is not taken for the server's).
type callState struct {
	key, value string
	failed     bool
}

type stateKey struct{}

func stateOf(ctx context.Context) *callState {
	st, _ := ctx.Value(stateKey{}).(*callState)
	return st
}

// attempt returns ctx carrying the token an interceptor chose, and the
// call options that attach it.
func (c *Credentials) attempt(ctx context.Context, key, value string, opts []grpc.CallOption) (context.Context, *callState, []grpc.CallOption) {
	st := &callState{key: key, value: value}
	ctx = context.WithValue(ctx, stateKey{}, st)
	return ctx, st, append(opts[:len(opts):len(opts)], grpc.PerRPCCredentials(callCreds{c}))
}

// callCreds are the credentials an interceptor attaches to one call. They
// check transport security themselves (gRPC's own check for call
// credentials answers Unauthenticated, which the interceptor would take
// for the server rejecting the token).
type callCreds struct{ c *Credentials }

func (cc callCreds) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	st := stateOf(ctx)
	if err := cc.c.checkSecurity(ctx); err != nil {
		st.failed = true
		return nil, err
	}
	return map[string]string{st.key: st.value}, nil
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
	c.intercepting.Store(true)
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		b, err := c.f.Bind(ctx)
		if err != nil {
			return toStatus(err)
		}
		used, value, err := c.token(ctx, &b)
		if err != nil {
			return toStatus(err)
		}
		key := metadataKey(b)
		actx, st, aopts := c.attempt(ctx, key, value, opts)
		err = invoker(actx, method, req, reply, cc, aopts...)
		if status.Code(err) != codes.Unauthenticated || st.failed {
			if err == nil {
				c.f.Core.Served(b)
			}
			return err
		}
		call := &unaryCall{c: c, ctx: ctx, method: method, req: req, reply: reply, cc: cc, invoker: invoker, opts: opts, key: key, last: err}
		if err := c.f.Core.Recover(ctx, b, call, used, int(codes.Unauthenticated)); err != nil {
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
	key     string
	last    error
}

func (u *unaryCall) Where() string        { return u.method }
func (u *unaryCall) Unreplayable() string { return "" }
func (u *unaryCall) Prepare() error       { return nil }
func (u *unaryCall) Discard()             {}

func (u *unaryCall) Resend(_, value string) (int, bool, error) {
	ctx, st, opts := u.c.attempt(u.ctx, u.key, value, u.opts)
	u.last = u.invoker(ctx, u.method, u.req, u.reply, u.cc, opts...)
	switch code := status.Code(u.last); {
	case code == codes.Unauthenticated && !st.failed:
		return int(code), true, nil // rejected again
	case u.last != nil:
		// Any other failure is the call's answer, but not a sign the
		// token was accepted: no Served.
		return int(code), false, u.last
	}
	return int(codes.OK), false, nil
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
	c.intercepting.Store(true)
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		b, err := c.f.Bind(ctx)
		if err != nil {
			return nil, toStatus(err)
		}
		used, value, err := c.token(ctx, &b)
		if err != nil {
			return nil, toStatus(err)
		}
		actx, st, aopts := c.attempt(ctx, metadataKey(b), value, opts)
		s := &stream{c: c, b: b, used: used, method: method, st: st}
		cs, err := streamer(actx, desc, cc, method, aopts...)
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
