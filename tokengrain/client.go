package tokengrain

import (
	"github.com/asynkron/protoactor-go/cluster"
)

// shutdownProvider stops p. The automanaged provider, in the pinned
// protoactor, marks itself shut down and then closes a health endpoint
// that only members start: a nil pointer for a client. The mark is what
// stops its polling; the panic is recovered.
func shutdownProvider(p cluster.ClusterProvider, graceful bool) {
	defer func() { _ = recover() }()
	_ = p.Shutdown(graceful)
}

// ShutdownClient shuts down a cluster client (started with
// c.StartClient): cluster.Shutdown expects gossip, which only members run,
// and panics for a client in the protoactor version this module pins. It
// stops the cluster provider, the identity lookup, the actor system and
// the remote (graceful: it waits for the remote's connections to close),
// in that order. Call it once, instead of c.Shutdown.
func ShutdownClient(c *cluster.Cluster, graceful bool) {
	if c.Config != nil && c.Config.ClusterProvider != nil {
		shutdownProvider(c.Config.ClusterProvider, graceful)
	}
	if c.IdentityLookup != nil {
		c.IdentityLookup.Shutdown()
	}
	c.ActorSystem.Shutdown()
	if c.Remote != nil {
		c.Remote.Shutdown(graceful)
	}
}
