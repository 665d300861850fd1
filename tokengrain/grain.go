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
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/tokengrain/tokenpb"
)

// Kind is the cluster kind of token grains.
const Kind = "tokenmanager-token"

// defaultGrainIdle is how long a grain lives without a request; then it
// stops, its token forgotten, and is activated again on the next one.
const defaultGrainIdle = 10 * time.Minute

// askTimeout bounds a grain's wait for its token actor; the actor answers
// a failed fetch at once, so this only guards against a stuck provider.
const askTimeout = 30 * time.Second

// NewKind returns the cluster kind of token grains: one per identity,
// owning that identity's token for the whole cluster, fetched with the
// settings settingsFor returns for it (called when the grain activates).
// Register it on every member that may host grains.
func NewKind(settingsFor tokenmanager.SettingsFunc) *cluster.Kind {
	return cluster.NewKind(Kind, proto.PropsFromProducer(func() proto.Actor {
		return &grain{settingsFor: settingsFor}
	}))
}

// grain adapts a token actor to the cluster: it answers tokenpb.GetToken
// from the token actor it spawned for its identity.
type grain struct {
	settingsFor tokenmanager.SettingsFunc
	identity    string
	local       *proto.PID  // the identity's token actor
	clk         clock.Clock // its settings' clock: tokens expire, and SettingsFor backs off, on it

	// failed is the run of failed SettingsFor calls: the owner's backoff,
	// so a broken entry is not called in a loop, and a fixed one is
	// picked up.
	failed link.SettingsFailure
}

func (g *grain) Receive(c proto.Context) {
	switch m := c.Message().(type) {
	case *cluster.ClusterInit:
		g.init(c, m.Identity.Identity)
	case *tokenpb.GetToken:
		g.get(c, m)
	case *proto.ReceiveTimeout:
		c.Poison(c.Self()) // idle: the next request activates it anew
	}
}

func (g *grain) init(c proto.Context, identity string) {
	g.identity = identity
	c.SetReceiveTimeout(defaultGrainIdle)
	g.start(c)
}

// start spawns the identity's token actor from its settings, or records
// why it cannot.
func (g *grain) start(c proto.Context) {
	s, err := link.SettingsOf(g.settingsFor, g.identity)
	if s.Clock != nil {
		g.clk = s.Clock // known even when the settings are invalid
	} else if g.clk == nil {
		g.clk = clock.New()
	}
	if err == nil {
		var props *proto.Props
		if props, err = actor.NewProps(s); err == nil {
			g.local = c.Spawn(props) // a child: stopped with the grain
			g.failed = link.SettingsFailure{}
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
	wait := askTimeout
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
