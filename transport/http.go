package transport

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/core"
	"github.com/go-tokenmanager/tokenmanager/internal/dpop"
	"github.com/go-tokenmanager/tokenmanager/internal/secure"
)

// roundTrip sends req with b's token: see RoundTripper.RoundTrip.
func roundTrip(c *core.Core, base http.RoundTripper, b core.Binding, req *http.Request) (*http.Response, error) {
	if c.Closed() {
		closeBody(req)
		return nil, tokenmanager.ErrClosed
	}
	if !sameSite(req) {
		return base.RoundTrip(req)
	}
	if !b.Req.Insecure && !secure.Allowed(req.URL) {
		closeBody(req)
		return nil, fmt.Errorf("%w to %s: use https, or set Settings.AllowInsecureHTTP where something else protects the traffic",
			tokenmanager.ErrInsecureTransport, req.URL.Host)
	}
	access, value, err := c.Attach(req.Context(), &b)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	resp, v, err := send(base, b, req, req.Body, access, value)
	if err != nil {
		return nil, err
	}
	if v == core.Accepted {
		c.Served(b)
		return resp, nil
	}
	call := &httpCall{base: base, req: req, resp: resp, b: b}
	if err := c.Recover(req.Context(), b, call, access, value, resp.StatusCode, v); err != nil {
		return nil, err
	}
	return call.resp, nil
}

// httpCall is an HTTP request and its sends (core.Call): the first, and
// those of recovery; resp is the answer in hand.
type httpCall struct {
	base http.RoundTripper
	req  *http.Request
	resp *http.Response
	b    core.Binding
	body io.ReadCloser // the next send's body
}

func (h *httpCall) Where() string { return h.req.URL.Host }

func (h *httpCall) Unreplayable() string {
	if h.req.Body == nil || h.req.Body == http.NoBody || h.req.GetBody != nil {
		return ""
	}
	return "its body cannot be replayed (no GetBody)"
}

func (h *httpCall) Prepare() (err error) {
	if h.req.Body != nil && h.req.Body != http.NoBody {
		h.body, err = h.req.GetBody()
	}
	return err
}

func (h *httpCall) Discard() { drainClose(h.resp.Body) }

func (h *httpCall) Resend(token, value string) (int, core.Verdict, error) {
	resp, v, err := send(h.base, h.b, h.req, h.body, token, value)
	h.body = nil
	if err != nil {
		return 0, v, err
	}
	h.resp = resp
	return resp.StatusCode, v, nil
}

// send sends a clone of req with body and token's header value and, for
// a DPoP-bound token, a new proof made for this send (its method and
// URL: a resend or a redirect's request gets its own). It records any
// DPoP nonce the answer carries, and says what the answer means for the
// token.
func send(base http.RoundTripper, b core.Binding, req *http.Request, body io.ReadCloser, token, value string) (*http.Response, core.Verdict, error) {
	r2 := withHeader(req, b.Req.Header, value, body)
	d := b.Req.DPoP
	bound := core.Proves(b, value)
	if bound {
		proof, err := d.ProofFor(r2.Method, r2.URL, token)
		if err != nil {
			closeBody(r2)
			return nil, core.Accepted, err
		}
		r2.Header.Set("DPoP", proof)
	}
	resp, err := base.RoundTrip(r2)
	if err != nil {
		return nil, core.Accepted, err
	}
	if d != nil {
		if n := resp.Header.Get("DPoP-Nonce"); n != "" {
			d.SetNonceFor(req.URL, n)
			if bound && resp.StatusCode == http.StatusUnauthorized && dpop.Challenge(resp.Header.Values("WWW-Authenticate")) {
				return resp, core.NonceNeeded, nil
			}
		}
	}
	if b.Req.Rejects(resp.StatusCode) {
		return resp, core.Rejected, nil
	}
	return resp, core.Accepted, nil
}

// withHeader returns a clone of req carrying the token's header value and
// body.
func withHeader(req *http.Request, header, value string, body io.ReadCloser) *http.Request {
	r2 := req.Clone(req.Context())
	if r2.Header == nil {
		r2.Header = make(http.Header, 1)
	}
	r2.Header.Set(header, value)
	r2.Body = body
	return r2
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// drainClose reads a little of body so its connection can be reused, then
// closes it.
func drainClose(body io.ReadCloser) {
	if body == nil {
		return
	}
	io.Copy(io.Discard, io.LimitReader(body, maxDrain))
	body.Close()
}

// newSystem returns an actor system that logs to logger (nil: nowhere).
func newSystem(logger *slog.Logger) *proto.ActorSystem {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return proto.NewActorSystem(
		proto.WithLoggerFactory(func(*proto.ActorSystem) *slog.Logger { return logger }),
		proto.WithDeadLetterThrottleInterval(10*time.Millisecond),
	)
}

// applyOptions returns the options with their defaults.
func applyOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	if o.base == nil {
		o.base = http.DefaultTransport
	}
	return o
}

// ask asks the actor at pid for what it shares (msg is protocol.Attach or
// protocol.AttachOwner); kind names the constructor it should come from.
func ask[T any](system *proto.ActorSystem, pid *proto.PID, msg any, kind string) (T, error) {
	var zero T
	res, err := system.Root.RequestFuture(pid, msg, attachTimeout).Result()
	if err != nil {
		return zero, fmt.Errorf("tokenmanager: actor %v did not answer (%w); is it alive and spawned from %s?", pid, err, kind)
	}
	v, ok := res.(T)
	if !ok {
		return zero, fmt.Errorf("tokenmanager: actor %v answered %T; was it spawned from %s?", pid, res, kind)
	}
	return v, nil
}
