// Package tokengrain shares each identity's token across the members of a
// protoactor cluster: one virtual actor (a grain) per identity owns the
// token for the whole cluster, so a rollover, a deploy or a revocation
// costs one fetch from the identity provider, not one per replica.
//
// A grain is an adapter around the very token actor of package actor
// (single flight, early refresh, backoff, conditional invalidation,
// permanent errors, events): it spawns one with the identity's real
// settings and answers members from it. Members keep their own
// multi-identity owner (transport.NewMulti) with its snapshot fast path;
// [SettingsFor] gives each identity a provider that asks the grain instead
// of the identity provider, so only misses, early refreshes and recoveries
// cross the cluster. When the cluster cannot answer within a bound, a
// member fetches from the identity provider itself and returns to the
// grain on its next fetch.
//
// Register the kind in your ClusterConfig:
//
//	kind := tokengrain.NewKind(settingsFor)
//	c := cluster.New(system, cluster.Configure(name, provider, disthash.New(), remoteConfig,
//		cluster.WithKinds(kind)))
//	c.StartMember()
//	m, err := transport.NewMulti(tokenmanager.OwnerSettings{
//		SettingsFor: tokengrain.SettingsFor(c, settingsFor, tokengrain.Options{}),
//	})
package tokengrain

import (
	"errors"
	"fmt"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/actor"
	"github.com/go-tokenmanager/tokenmanager/internal/backoff"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/tokengrain/tokenpb"
)

// Kind is the cluster kind of token grains.
const Kind = "tokenmanager-token"

// defaultGrainIdle is how long a grain lives without a request; then it
// stops, its token forgotten, and is activated again on the next one.
const defaultGrainIdle = 10 * time.Minute

// defaultFetchWait bounds a grain's wait for its token actor; the actor
// answers a failed fetch at once, so this only guards against a stuck
// provider.
const defaultFetchWait = 30 * time.Second

// errDPoP is a grain's answer for an identity with a DPoP key: its
// tokens are bound to the key of the member that fetches them, so they
// are not shared (see SettingsFor, whose members never ask for one).
var errDPoP = tokenmanager.Permanent(errors.New("tokengrain: the identity has a DPoP key (Settings.DPoP); DPoP-bound tokens work only with their key, so each member fetches its own"))

// KindOptions configures the grains of [NewKindWith]. Zero values mean the
// defaults.
type KindOptions struct {
	// Idle is how long a grain lives without a request; then it stops,
	// its token forgotten, and the next request activates it again (one
	// fetch). Optional; zero means 10 minutes.
	Idle time.Duration
	// FetchWait bounds how long a grain waits for its token actor to
	// answer one ask (a fetch in progress); a member's ask is bounded
	// further by its own Options.Timeout. Optional; zero means 30s.
	FetchWait time.Duration
	// Fingerprint returns a non-secret digest of the request-shaping
	// settings behind identity (client id, scopes, audience, a version of
	// the secret; never the secret itself), the same function members
	// pass in Options.Fingerprint. A grain refuses a member whose
	// fingerprint differs from its own (a rollout that changes an
	// identity's configuration), and that member fetches on its own.
	// Optional; nil means not checked.
	Fingerprint func(identity string) string
	// Metrics receives the grain side's figures (refusals). Optional.
	Metrics Recorder
}

// NewKind returns the cluster kind of token grains: one per identity,
// owning that identity's token for the whole cluster, fetched with the
// settings settingsFor returns for it (called when the grain activates).
// Register it on every member that may host grains.
func NewKind(settingsFor tokenmanager.SettingsFunc) *cluster.Kind {
	return NewKindWith(settingsFor, KindOptions{})
}

// NewKindWith is [NewKind] with options.
func NewKindWith(settingsFor tokenmanager.SettingsFunc, o KindOptions) *cluster.Kind {
	return cluster.NewKind(Kind, grainProps(settingsFor, o))
}

// grainProps makes grains with o, its zero fields set to the defaults.
func grainProps(settingsFor tokenmanager.SettingsFunc, o KindOptions) *proto.Props {
	if o.Idle <= 0 {
		o.Idle = defaultGrainIdle
	}
	if o.FetchWait <= 0 {
		o.FetchWait = defaultFetchWait
	}
	return proto.PropsFromProducer(func() proto.Actor {
		return &grain{settingsFor: settingsFor, opts: o}
	})
}

// grain adapts a token actor to the cluster: it answers tokenpb.GetToken
// from the token actor it spawned for its identity.
type grain struct {
	settingsFor tokenmanager.SettingsFunc
	opts        KindOptions
	identity    string
	insecure    error       // why the cluster's remote may not carry tokens
	fingerprint string      // of the settings the token actor fetches with
	local       *proto.PID  // the identity's token actor
	clk         clock.Clock // its settings' clock: tokens expire, and SettingsFor backs off, on it

	// failed is the run of failed SettingsFor calls: the owner's backoff,
	// so a broken entry is not called in a loop, and a fixed one is
	// picked up.
	failed backoff.SettingsFailure
}

func (g *grain) Receive(c proto.Context) {
	switch m := c.Message().(type) {
	case *cluster.ClusterInit:
		g.init(c, m.Identity.Identity, m.Cluster)
	case *tokenpb.GetToken:
		g.get(c, m)
	case *proto.ReceiveTimeout:
		c.Poison(c.Self()) // idle: the next request activates it anew
	}
}

func (g *grain) init(c proto.Context, identity string, cl *cluster.Cluster) {
	g.identity = identity
	c.SetReceiveTimeout(g.opts.Idle)
	if identity == probeIdentity {
		return // answers probes only: no settings, no token
	}
	if g.insecure = CheckRemote(cl); g.insecure != nil {
		return
	}
	if g.opts.Fingerprint != nil {
		g.fingerprint = g.opts.Fingerprint(identity)
	}
	g.start(c)
}

// start spawns the identity's token actor from its settings, or records
// why it cannot.
func (g *grain) start(c proto.Context) {
	s, err := backoff.SettingsOf(g.settingsFor, g.identity)
	if err == nil && s.DPoP != nil {
		err = errDPoP
	}
	if s.Clock != nil {
		g.clk = s.Clock // known even when the settings are invalid
	} else if g.clk == nil {
		g.clk = clock.New()
	}
	if err == nil {
		var props *proto.Props
		if props, err = actor.NewProps(s); err == nil {
			g.local = c.Spawn(props) // a child: stopped with the grain
			g.failed = backoff.SettingsFailure{}
			return
		}
	}
	g.failed.Fail(g.clk.Now(), err)
}

// get answers a member from the token actor, without blocking the
// grain's mailbox: a rejected token is invalidated first (only if it is
// still current), then the actor is asked.
func (g *grain) get(c proto.Context, m *tokenpb.GetToken) {
	sender := c.Sender()
	if m.GetProbe() || g.identity == probeIdentity {
		c.Send(sender, &tokenpb.TokenReply{})
		return
	}
	if refused := g.refusal(m); refused != "" {
		c.Send(sender, &tokenpb.TokenReply{Refused: true, Error: refused})
		return
	}
	if g.local == nil && g.failed.Blocking(g.clk.Now()) == nil {
		g.start(c)
	}
	if g.local == nil {
		err := g.failed.Err
		c.Send(sender, &tokenpb.TokenReply{Error: err.Error(), Permanent: tokenmanager.IsPermanent(err)})
		return
	}
	if m.GetRejected() != "" {
		c.Send(g.local, messages.Invalidate{AccessToken: m.GetRejected()})
	}
	wait := g.opts.FetchWait
	if ms := m.GetWaitMs(); ms > 0 {
		wait = min(wait, time.Duration(ms)*time.Millisecond)
	}
	f := c.RequestFuture(g.local, messages.Get{}, wait)
	c.ReenterAfter(f, func(res any, err error) {
		if errors.Is(err, proto.ErrTimeout) {
			// Still fetching: the member asks again, rather than taking
			// a slow identity provider for an unreachable grain.
			c.Send(sender, &tokenpb.TokenReply{Pending: true})
			return
		}
		c.Send(sender, reply(res, err, g.clk.Now()))
	})
}

// refusal says why the grain will not serve m, or "": the cluster's
// remote may not carry tokens, or the member's settings for the identity
// differ from the grain's.
func (g *grain) refusal(m *tokenpb.GetToken) string {
	if g.insecure != nil {
		recorder{g.opts.Metrics}.refused(g.identity, RefusedInsecure)
		return g.insecure.Error()
	}
	if fp := m.GetFingerprint(); fp != "" && g.fingerprint != "" && fp != g.fingerprint {
		recorder{g.opts.Metrics}.refused(g.identity, RefusedStaleConfig)
		return fmt.Sprintf("tokenmanager: token grain: the settings of %q differ between members (fingerprint %q here, %q asking)", g.identity, g.fingerprint, fp)
	}
	return ""
}

// reply turns the token actor's answer into a TokenReply: the time left,
// not an absolute expiry, so members' clocks need not agree.
func reply(res any, err error, now time.Time) *tokenpb.TokenReply {
	if err != nil {
		return &tokenpb.TokenReply{Error: fmt.Sprintf("tokenmanager: token grain: %v", err)}
	}
	r, ok := res.(*messages.TokenResult)
	if !ok {
		return &tokenpb.TokenReply{Error: fmt.Sprintf("tokenmanager: token grain: unexpected answer %T", res)}
	}
	if r.Err != nil {
		return &tokenpb.TokenReply{Error: r.Err.Error(), Permanent: tokenmanager.IsPermanent(r.Err)}
	}
	out := &tokenpb.TokenReply{AccessToken: r.Token.AccessToken, TokenType: r.Token.TokenType, Scope: r.Token.Scope}
	if !r.ExpiresAt.IsZero() {
		out.ExpiresInMs = max(r.ExpiresAt.Sub(now).Milliseconds(), 1)
	}
	return out
}
