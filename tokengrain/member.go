package tokengrain

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/cluster"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/tokengrain/tokenpb"
)

// defaultTimeout bounds a member's ask of a grain: longer than a healthy
// cluster needs (a cross-process ask takes about a millisecond), short
// enough that a dead member hosting the grain costs requests little.
const defaultTimeout = 750 * time.Millisecond

// Options configures [SettingsFor].
type Options struct {
	// Timeout bounds each ask of an identity's grain: the ask bound. When
	// the cluster does not serve a member within it (the member hosting
	// the grain died, no member hosts the kind, the network is down, the
	// grain refused), the member fetches from the identity provider
	// itself, whatever the reason for the fetch, and asks the grain again
	// on its next fetch: no request waits longer than Timeout plus the
	// identity provider's own time, and an unreachable cluster never
	// counts as a failed fetch. Optional; zero means 750ms.
	Timeout time.Duration
	// OnFallback is called, on the fetch's goroutine, each time a member
	// fetched from the identity provider itself because the cluster did
	// not serve it; err says why ([Fallback] carries the reason). Each
	// such fetch is also published as a messages.ClusterFallback event on
	// the owner's bus (its subscribers, and the actor system's
	// EventStream). Optional.
	OnFallback func(identity string, err error)
	// Fingerprint returns a non-secret digest of the request-shaping
	// settings behind identity, the same function the kind's
	// KindOptions.Fingerprint is; each ask carries it, and a grain whose
	// own differs refuses. Optional; nil means not checked.
	Fingerprint func(identity string) string
	// Metrics receives the member side's figures (asks, fallbacks, grain
	// moves). Optional.
	Metrics Recorder
}

// Fallback is the error OnFallback receives: why the cluster did not
// serve a member, which then fetched on its own.
type Fallback struct {
	// Reason is one of the Reason constants (ReasonUnreachable, ...).
	Reason string
	// Err is the cluster's error, or the grain's refusal.
	Err error
}

func (f *Fallback) Error() string { return f.Err.Error() }
func (f *Fallback) Unwrap() error { return f.Err }

// SettingsFor wraps settingsFor for a member's owner of many identities
// (transport.NewMulti, actor.NewOwnerProps): each identity keeps its
// settings, but its GetCredentials asks the identity's grain on cluster c
// for the token, passing on the token whose rejection led to the fetch
// (the grain drops it only if it is still current). When the cluster does
// not serve the member within o.Timeout, the member fetches from the
// identity provider itself, for an early refresh as for a miss, so an
// unreachable cluster never backs an identity off. Failures the grain
// reports (its identity provider refused) are returned as they are,
// permanent or not: fetching directly would fail alike. A member whose
// cluster fails [CheckRemote] never asks: it fetches on its own.
//
// Tokens come with the time they have left when the grain answered, to
// the millisecond, counted down from the member's fetch: member clocks
// need not agree, and a member's copy expires with the grain's. A token
// with under 100ms left is handed back to the grain as rejected, which
// fetches a fresh one.
func SettingsFor(c *cluster.Cluster, settingsFor tokenmanager.SettingsFunc, o Options) tokenmanager.SettingsFunc {
	return wrap(settingsFor, o, requestOn(c, recorder{o.Metrics}))
}

// requester sends one GetToken to identity's grain and returns its reply,
// or an error when the cluster did not answer within timeout.
type requester func(identity string, m *tokenpb.GetToken, timeout time.Duration) (*tokenpb.TokenReply, error)

// wrap is SettingsFor over any way of reaching the grains.
func wrap(settingsFor tokenmanager.SettingsFunc, o Options, req requester) tokenmanager.SettingsFunc {
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	rec := recorder{o.Metrics}
	return func(identity string) (tokenmanager.Settings, error) {
		s, err := settingsFor(identity)
		if err != nil || s.DPoP != nil {
			// A DPoP-bound token works only with its key: the member
			// fetches its own, bound to its own key.
			return s, err
		}
		var fp string
		if o.Fingerprint != nil {
			fp = o.Fingerprint(identity)
		}
		direct := s.GetCredentials
		s.GetCredentials = func(ctx context.Context) (tokenmanager.Token, error) {
			_, rejected := protocol.FetchFrom(ctx)
			minLeft := time.Second
			if protocol.CanSetLifetime(ctx) {
				// The owner takes the time left to the millisecond.
				minLeft = minLeftPrecise
			}
			tok, left, err := ask(ctx, req, identity, rejected, fp, o.Timeout, minLeft)
			if err == nil && left > 0 {
				protocol.SetLifetime(ctx, left)
			}
			var fb *Fallback
			if err == nil || !errors.As(err, &fb) || direct == nil {
				return tok, err
			}
			// Not the identity provider's failure: the cluster's. Fetch
			// directly, so that the owner does not back the identity off.
			rec.fellBack(identity, fb.Reason)
			if publish := protocol.PublishFrom(ctx); publish != nil {
				publish(messages.ClusterFallback{Identity: identity, Reason: fb.Reason, Err: fb})
			}
			if o.OnFallback != nil {
				o.OnFallback(identity, fb)
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
}

func (e *grainError) Error() string   { return e.msg }
func (e *grainError) Permanent() bool { return e.permanent }

// Ask asks identity's grain on cluster c for its token, as a member's
// fetch does: a token API for code that does not go through an owner. The
// grain fetches only if it has no valid token. Each hop to the grain is
// bounded by timeout (zero: 750ms); while the grain is still fetching, Ask
// waits for it until ctx ends. The token's ExpiresIn counts from the
// answer. When the cluster does not serve it, the error is a *[Fallback].
func Ask(ctx context.Context, c *cluster.Cluster, identity string, timeout time.Duration) (tokenmanager.Token, error) {
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	tok, _, err := ask(ctx, requestOn(c, recorder{}), identity, "", "", timeout, time.Second)
	return tok, err
}

// minLeftPrecise is the least time left a member's owner accepts a
// grain's token with: one with less is handed back, so it does not expire
// on its way.
const minLeftPrecise = 100 * time.Millisecond

// ask asks identity's grain for its token. Each hop is bounded by timeout
// (and ctx); a grain still fetching answers pending after half of it, and
// is asked again, so a slow identity provider is never taken for an
// unreachable grain. A token with under minLeft left is handed back as
// rejected, once. It returns the token and the time it had left when the
// grain answered (0: no expiry). When the cluster does not serve the
// member, the error is a *Fallback.
func ask(ctx context.Context, req requester, identity, rejected, fingerprint string, timeout, minLeft time.Duration) (tokenmanager.Token, time.Duration, error) {
	m := &tokenpb.GetToken{Rejected: rejected, WaitMs: max(timeout.Milliseconds()/2, 1), Fingerprint: fingerprint}
	shortLived := 0
	for {
		hop := timeout
		if dl, ok := ctx.Deadline(); ok {
			hop = min(hop, time.Until(dl))
		}
		if err := ctx.Err(); err != nil || hop <= 0 {
			return tokenmanager.Token{}, 0, fmt.Errorf("tokenmanager: asking the token grain of %q: %w", identity, context.DeadlineExceeded)
		}
		r, err := boundedRequest(ctx, req, identity, m, hop)
		if err != nil {
			reason := ReasonUnreachable
			if errors.Is(err, ErrInsecureRemote) {
				reason = ReasonInsecure
			}
			return tokenmanager.Token{}, 0, &Fallback{Reason: reason, Err: err}
		}
		next := &tokenpb.GetToken{WaitMs: m.GetWaitMs(), Fingerprint: fingerprint} // the rejection is handed over
		switch {
		case r.GetRefused():
			return tokenmanager.Token{}, 0, &Fallback{Reason: ReasonRefused, Err: errors.New(r.GetError())}
		case r.GetPending():
		case r.GetError() == "" && r.GetExpiresInMs() > 0 && r.GetExpiresInMs() < minLeft.Milliseconds():
			// Too little left to be of use (or, in whole seconds, to be
			// told: ExpiresIn 0 means "no expiry"). Hand it back as
			// rejected: the grain drops it if it is still current and
			// fetches a fresh one (once for every member asking).
			if shortLived++; shortLived > 1 {
				return tokenmanager.Token{}, 0, &Fallback{Reason: ReasonShortLived,
					Err: fmt.Errorf("tokenmanager: the token grain of %q twice answered a token with under %v left", identity, minLeft)}
			}
			next.Rejected = r.GetAccessToken()
		default:
			tok, err := tokenOf(r)
			return tok, time.Duration(r.GetExpiresInMs()) * time.Millisecond, err
		}
		m = next
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

// requestOn reaches the grains of cluster c, if its remote may carry
// tokens (CheckRemote).
func requestOn(c *cluster.Cluster, rec recorder) requester {
	var last sync.Map // identity → the address its grain last answered from
	return func(identity string, m *tokenpb.GetToken, timeout time.Duration) (*tokenpb.TokenReply, error) {
		if err := CheckRemote(c); err != nil {
			return nil, err
		}
		began := time.Now()
		res, err := c.Request(identity, Kind, m, cluster.WithTimeout(timeout))
		if err != nil {
			return nil, err
		}
		r, ok := res.(*tokenpb.TokenReply)
		if !ok {
			return nil, fmt.Errorf("the grain answered %T", res)
		}
		local := false
		if pid, ok := c.PidCache.Get(identity, Kind); ok && pid != nil {
			local = pid.GetAddress() == c.ActorSystem.Address()
			if prev, seen := last.Swap(identity, pid.GetAddress()); seen && prev != pid.GetAddress() {
				rec.moved(identity)
			}
		}
		rec.asked(identity, local, time.Since(began), outcomeOf(r))
		return r, nil
	}
}

func outcomeOf(r *tokenpb.TokenReply) string {
	switch {
	case r.GetRefused():
		return OutcomeRefused
	case r.GetPending():
		return OutcomePending
	case r.GetError() != "":
		return OutcomeError
	}
	return OutcomeToken
}

// tokenOf turns a grain's reply into the member's token, or its error.
func tokenOf(r *tokenpb.TokenReply) (tokenmanager.Token, error) {
	if r.GetError() != "" {
		return tokenmanager.Token{}, &grainError{msg: r.GetError(), permanent: r.GetPermanent()}
	}
	tok := tokenmanager.Token{AccessToken: r.GetAccessToken(), TokenType: r.GetTokenType(), Scope: r.GetScope()}
	if ms := r.GetExpiresInMs(); ms > 0 {
		// Rounded down, at least 1 (0 would mean no expiry): a member's
		// owner takes the milliseconds (protocol.SetLifetime), others
		// get a token expiring early, which is safe, but for the last
		// second, which only an owner is handed.
		tok.ExpiresIn = max(ms/1000, 1)
	}
	return tok, nil
}
