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
			tok, err := ask(ctx, c, identity, rejected, o.Timeout)
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

// grainError is a failure the grain reported: its identity provider's.
type grainError struct {
	msg       string
	permanent bool
}

func (e *grainError) Error() string   { return e.msg }
func (e *grainError) Permanent() bool { return e.permanent }

// Ask asks identity's grain on cluster c for its token, as a member's
// fetch does, and waits at most timeout (and until ctx ends): a token API
// for code that does not go through an owner. The grain fetches only if
// it has no valid token. The token's ExpiresIn counts from the answer.
func Ask(ctx context.Context, c *cluster.Cluster, identity string, timeout time.Duration) (tokenmanager.Token, error) {
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	return ask(ctx, c, identity, "", timeout)
}

// ask asks identity's grain for its token, within timeout (and ctx).
func ask(ctx context.Context, c *cluster.Cluster, identity, rejected string, timeout time.Duration) (tokenmanager.Token, error) {
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		return tokenmanager.Token{}, fmt.Errorf("tokenmanager: asking the token grain: %w", context.DeadlineExceeded)
	}
	// The cluster's own timeout applies per try, and placing the grain
	// may take longer: the ask runs on a goroutine of its own so that the
	// bound holds; an abandoned ask ends in the background.
	type answer struct {
		res any
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := c.Request(identity, Kind, &tokenpb.GetToken{Rejected: rejected}, cluster.WithTimeout(timeout))
		done <- answer{res, err}
	}()
	bound := time.NewTimer(timeout)
	defer bound.Stop()
	var res any
	select {
	case a := <-done:
		if a.err != nil {
			return tokenmanager.Token{}, fmt.Errorf("tokenmanager: asking the token grain of %q: %w", identity, a.err)
		}
		res = a.res
	case <-bound.C:
		return tokenmanager.Token{}, fmt.Errorf("tokenmanager: the token grain of %q did not answer within %v", identity, timeout)
	case <-ctx.Done():
		return tokenmanager.Token{}, fmt.Errorf("tokenmanager: asking the token grain of %q: %w", identity, ctx.Err())
	}
	r, ok := res.(*tokenpb.TokenReply)
	if !ok {
		return tokenmanager.Token{}, fmt.Errorf("tokenmanager: the token grain of %q answered %T", identity, res)
	}
	return tokenOf(r)
}

// tokenOf turns a grain's reply into the member's token, or its error.
func tokenOf(r *tokenpb.TokenReply) (tokenmanager.Token, error) {
	if r.GetError() != "" {
		return tokenmanager.Token{}, &grainError{msg: r.GetError(), permanent: r.GetPermanent()}
	}
	tok := tokenmanager.Token{AccessToken: r.GetAccessToken(), TokenType: r.GetTokenType(), Scope: r.GetScope()}
	if ms := r.GetExpiresInMs(); ms > 0 {
		// Whole seconds, rounded down (expiring early is safe), but at
		// least one: zero would mean "no expiry".
		tok.ExpiresIn = max(ms/1000, 1)
	}
	return tok, nil
}
