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
	"github.com/go-tokenmanager/tokenmanager/internal/request"
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
	resp, err := base.RoundTrip(withHeader(req, b.Req.Header, value, req.Body))
	if err != nil {
		return nil, err
	}
	if !b.Req.Rejects(resp.StatusCode) {
		c.Served(b)
		return resp, nil
	}
	call := &httpCall{base: base, req: req, resp: resp, r: b.Req}
	if err := c.Recover(req.Context(), b, call, access, resp.StatusCode); err != nil {
		return nil, err
	}
	return call.resp, nil
}

// httpCall is an HTTP request under recovery (core.Call); resp is the
// answer in hand.
type httpCall struct {
	base http.RoundTripper
	req  *http.Request
	resp *http.Response
	r    *request.Request
	body io.ReadCloser // the next attempt's body
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

func (h *httpCall) Resend(_, value string) (int, bool, error) {
	resp, err := h.base.RoundTrip(withHeader(h.req, h.r.Header, value, h.body))
	if err != nil {
		return 0, false, err
	}
	h.resp = resp
	return resp.StatusCode, h.r.Rejects(resp.StatusCode), nil
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
