package tokengrain

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/eventstream"

	"github.com/go-tokenmanager/tokenmanager/tokengrain/tokenpb"
)

// probeIdentity is the identity of the grain readiness checks ask: it
// answers probes only, with no settings and no token.
const probeIdentity = "tokenmanager-readiness-probe"

// Readiness checks that a member can serve tokens through the cluster,
// for a Kubernetes readiness probe: its remote may carry tokens
// ([CheckRemote]), the member has joined (the cluster's topology lists
// it), and a token grain answers. It is an http.Handler answering 200
// "ok" when ready, 503 and the reason otherwise (the reason holds no
// secret).
//
// Create it with [NewReadiness] before c.StartMember, so that it sees the
// member join; Close it when the cluster shuts down.
//
// On protoactor's Kubernetes provider use [NewReadinessWith] with
// ReadinessOptions.RemoteOnly: that provider counts a pod as a member only
// once all its containers are ready, so a probe that waits for the member
// to join would never pass.
type Readiness struct {
	c          *cluster.Cluster
	timeout    time.Duration
	remoteOnly bool
	sub        *eventstream.Subscription // nil with remoteOnly

	mu      sync.Mutex
	self    string // this member's address, once the topology listed it
	members int    // in the latest topology
}

// NewReadiness returns the readiness check of c; timeout bounds the ask
// of a grain (zero means 750ms, as Options.Timeout).
func NewReadiness(c *cluster.Cluster, timeout time.Duration) *Readiness {
	return NewReadinessWith(c, ReadinessOptions{Timeout: timeout})
}

// ReadinessOptions configures [NewReadinessWith].
type ReadinessOptions struct {
	// Timeout bounds the ask of a grain. Optional; zero means 750ms, as
	// Options.Timeout.
	Timeout time.Duration
	// RemoteOnly checks only that the remote may carry tokens
	// ([CheckRemote]), not that the member joined nor that a grain
	// answers. Set it with a cluster provider that admits a member only
	// once it is ready, as protoactor's Kubernetes provider does (a pod
	// whose containers are not all ready is left out of the topology):
	// there, waiting for the member to join would keep it unready for
	// ever. Members serve requests before they join all the same, by
	// fetching on their own. Optional.
	RemoteOnly bool
}

// NewReadinessWith is [NewReadiness] with options.
func NewReadinessWith(c *cluster.Cluster, o ReadinessOptions) *Readiness {
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	r := &Readiness{c: c, timeout: timeout, remoteOnly: o.RemoteOnly}
	if o.RemoteOnly {
		return r
	}
	r.sub = c.ActorSystem.EventStream.Subscribe(func(evt any) {
		t, ok := evt.(*cluster.ClusterTopology)
		if !ok {
			return
		}
		self := c.ActorSystem.Address()
		r.mu.Lock()
		defer r.mu.Unlock()
		r.members, r.self = len(t.Members), ""
		for _, m := range t.Members {
			if m.Address() == self {
				r.self = self
			}
		}
	})
	return r
}

// Close stops following the cluster's topology.
func (r *Readiness) Close() {
	if r.sub != nil {
		r.c.ActorSystem.EventStream.Unsubscribe(r.sub)
	}
}

// ErrNotJoined is why a member that the cluster's topology does not list
// (yet) is not ready.
var ErrNotJoined = errors.New("tokenmanager: token grain: this member has not joined the cluster")

// Check returns nil when the member is ready, or why not. A cluster
// client (StartClient) is ready when the topology lists any member.
func (r *Readiness) Check(ctx context.Context) error {
	if err := CheckRemote(r.c); err != nil || r.remoteOnly {
		return err
	}
	r.mu.Lock()
	joined := r.self != "" || (r.members > 0 && r.c.Config != nil && len(r.c.GetClusterKinds()) == 0)
	r.mu.Unlock()
	if !joined {
		return ErrNotJoined
	}
	res, err := boundedRequest(ctx, requestOn(r.c, recorder{}), probeIdentity, &tokenpb.GetToken{Probe: true}, r.timeout)
	if err != nil {
		return fmt.Errorf("tokenmanager: token grain: no grain answered: %w", err)
	}
	if res.GetError() != "" {
		return errors.New(res.GetError())
	}
	return nil
}

// ServeHTTP answers a readiness probe: 200 "ok", or 503 and the reason.
func (r *Readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := r.Check(req.Context()); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, err)
		return
	}
	fmt.Fprintln(w, "ok")
}
