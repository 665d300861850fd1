package tokengrain

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/cluster"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/tokengrain/tokenpb"
)

// defaultTimeout bounds a member's ask of a grain: longer than a healthy
// cluster needs (a cross-process ask takes about a millisecond), short
// enough that a dead member hosting the grain costs requests little.
const defaultTimeout = 750 * time.Millisecond

// Options configures [SettingsFor].
type Options struct {
	// Timeout bounds each ask of an identity's grain. When the cluster
	// does not answer within it (the member hosting the grain died, no
	// member hosts the kind, the network is down), the member fetches
	// from the identity provider itself, and asks the grain again on its
	// next fetch. Optional; zero means 750ms.
	Timeout time.Duration
	// OnFallback is called, on the fetch's goroutine, each time a member
	// fetched from the identity provider itself because the cluster did
	// not answer; err says why. Optional.
	OnFallback func(identity string, err error)
}

// SettingsFor wraps settingsFor for a member's owner of many identities
// (transport.NewMulti, actor.NewOwnerProps): each identity keeps its
// settings, but its GetCredentials asks the identity's grain on cluster c
// for the token, passing on the token whose rejection led to the fetch
// (the grain drops it only if it is still current). When the cluster does
// not answer within o.Timeout, a member that needs a token fetches it from
// the identity provider itself; an early refresh, whose cached token is
// still valid, does not: the member keeps serving that token and asks the
// grain again after the usual backoff. Failures the grain reports (its identity provider refused)
// are returned as they are, permanent or not: fetching directly would
// fail alike.
//
// Tokens come with the time they have left when the grain answered,
// counted down from the member's fetch: member clocks need not agree.
func SettingsFor(c *cluster.Cluster, settingsFor tokenmanager.SettingsFunc, o Options) tokenmanager.SettingsFunc {
	return wrap(settingsFor, o, requestOn(c))
}

// requester sends one GetToken to identity's grain and returns its reply,
// or an error when the cluster did not answer within timeout.
type requester func(identity string, m *tokenpb.GetToken, timeout time.Duration) (*tokenpb.TokenReply, error)

// wrap is SettingsFor over any way of reaching the grains.
func wrap(settingsFor tokenmanager.SettingsFunc, o Options, req requester) tokenmanager.SettingsFunc {
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	return func(identity string) (tokenmanager.Settings, error) {
		s, err := settingsFor(identity)
		if err != nil {
			return s, err
		}
		direct := s.GetCredentials
		s.GetCredentials = func(ctx context.Context) (tokenmanager.Token, error) {
			reason, rejected := link.FetchFrom(ctx)
			tok, err := ask(ctx, req, identity, rejected, o.Timeout)
			var ge *grainError
			if err == nil || errors.As(err, &ge) || direct == nil {
				return tok, err
			}
			if reason == string(messages.ReasonEarlyRefresh) {
				// The cached token is still valid: keep serving it, and
				// ask the grain again after the usual backoff.
				return tok, err
			}
			if o.OnFallback != nil {
				o.OnFallback(identity, err)
			}
			return direct(ctx)
		}
		return s, nil
	}
}

// grainError is a failure the grain reported: its identity provider's, or
// its SettingsFor's.
type grainError struct {
	msg       string
	permanent bool
	cause     error // ErrExpiredOnArrival for a token with under a second left
}

func (e *grainError) Error() string   { return e.msg }
func (e *grainError) Permanent() bool { return e.permanent }
func (e *grainError) Unwrap() error   { return e.cause }

// Ask asks identity's grain on cluster c for its token, as a member's
// fetch does: a token API for code that does not go through an owner. The
// grain fetches only if it has no valid token. Each hop to the grain is
// bounded by timeout (zero: 750ms); while the grain is still fetching, Ask
// waits for it until ctx ends. The token's ExpiresIn counts from the
// answer.
func Ask(ctx context.Context, c *cluster.Cluster, identity string, timeout time.Duration) (tokenmanager.Token, error) {
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	return ask(ctx, requestOn(c), identity, "", timeout)
}

// ask asks identity's grain for its token. Each hop is bounded by timeout
// (and ctx); a grain still fetching answers pending after half of it, and
// is asked again, so a slow identity provider is never taken for an
// unreachable grain.
func ask(ctx context.Context, req requester, identity, rejected string, timeout time.Duration) (tokenmanager.Token, error) {
	m := &tokenpb.GetToken{Rejected: rejected, WaitMs: max(timeout.Milliseconds()/2, 1)}
	for {
		hop := timeout
		if dl, ok := ctx.Deadline(); ok {
			hop = min(hop, time.Until(dl))
		}
		if err := ctx.Err(); err != nil || hop <= 0 {
			return tokenmanager.Token{}, fmt.Errorf("tokenmanager: asking the token grain of %q: %w", identity, context.DeadlineExceeded)
		}
		r, err := boundedRequest(ctx, req, identity, m, hop)
		if err != nil {
			return tokenmanager.Token{}, err
		}
		if !r.GetPending() {
			return tokenOf(r)
		}
		m = &tokenpb.GetToken{WaitMs: m.GetWaitMs()} // the rejection is handed over
	}
}

// boundedRequest runs req within timeout and ctx: the cluster's own
// timeout applies per retry, and placing the grain may take longer, so
// the request runs on a goroutine of its own; an abandoned one ends in
// the background.
func boundedRequest(ctx context.Context, req requester, identity string, m *tokenpb.GetToken, timeout time.Duration) (*tokenpb.TokenReply, error) {
	type answer struct {
		r   *tokenpb.TokenReply
		err error
	}
	done := make(chan answer, 1)
	go func() {
		r, err := req(identity, m, timeout)
		done <- answer{r, err}
	}()
	bound := time.NewTimer(timeout)
	defer bound.Stop()
	select {
	case a := <-done:
		if a.err != nil {
			return nil, fmt.Errorf("tokenmanager: asking the token grain of %q: %w", identity, a.err)
		}
		return a.r, nil
	case <-bound.C:
		return nil, fmt.Errorf("tokenmanager: the token grain of %q did not answer within %v", identity, timeout)
	case <-ctx.Done():
		return nil, fmt.Errorf("tokenmanager: asking the token grain of %q: %w", identity, ctx.Err())
	}
}

// requestOn reaches the grains of cluster c.
func requestOn(c *cluster.Cluster) requester {
	return func(identity string, m *tokenpb.GetToken, timeout time.Duration) (*tokenpb.TokenReply, error) {
		res, err := c.Request(identity, Kind, m, cluster.WithTimeout(timeout))
		if err != nil {
			return nil, err
		}
		r, ok := res.(*tokenpb.TokenReply)
		if !ok {
			return nil, fmt.Errorf("the grain answered %T", res)
		}
		return r, nil
	}
}

// tokenOf turns a grain's reply into the member's token, or its error.
func tokenOf(r *tokenpb.TokenReply) (tokenmanager.Token, error) {
	if r.GetError() != "" {
		return tokenmanager.Token{}, &grainError{msg: r.GetError(), permanent: r.GetPermanent()}
	}
	tok := tokenmanager.Token{AccessToken: r.GetAccessToken(), TokenType: r.GetTokenType(), Scope: r.GetScope()}
	if ms := r.GetExpiresInMs(); ms > 0 {
		if ms < 1000 {
			// ExpiresIn counts whole seconds and 0 means "no expiry":
			// a token with under a second left cannot be told; the
			// member fetches again after its backoff.
			return tokenmanager.Token{}, &grainError{
				msg:   fmt.Sprintf("tokenmanager: the grain's token has only %dms left", ms),
				cause: tokenmanager.ErrExpiredOnArrival,
			}
		}
		tok.ExpiresIn = ms / 1000 // rounded down: expiring early is safe
	}
	return tok, nil
}
