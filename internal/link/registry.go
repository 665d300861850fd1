package link

import (
	"hash/maphash"
	"maps"
	"sync"
	"sync/atomic"
)

// registryShards spreads the registry over this many maps, so that a
// write copies only about a thousandth of it.
const registryShards = 1024

// Registry maps the identities an owner hosts to their handles. It
// is read on every request and written only when an identity starts or
// stops, so each shard is an immutable map replaced on write
// (copy-on-write): a read is one atomic load and one map lookup, with no
// lock and no write to shared memory, and a write copies one shard
// (about a thousandth of the identities). It is safe for concurrent use
// by multiple goroutines.
type Registry struct {
	seed   maphash.Seed
	mu     sync.Mutex // serialises writers
	shards [registryShards]atomic.Pointer[map[string]*Handle]
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{seed: maphash.MakeSeed()}
}

func (r *Registry) shard(identity string) *atomic.Pointer[map[string]*Handle] {
	return &r.shards[maphash.String(r.seed, identity)%registryShards]
}

// Load returns identity's handle, or nil.
func (r *Registry) Load(identity string) *Handle {
	if m := r.shard(identity).Load(); m != nil {
		return (*m)[identity]
	}
	return nil
}

// Store sets identity's handle.
func (r *Registry) Store(identity string, h *Handle) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.shard(identity)
	var m map[string]*Handle
	if old := s.Load(); old != nil {
		m = maps.Clone(*old)
	} else {
		m = make(map[string]*Handle, 1)
	}
	m[identity] = h
	s.Store(&m)
}

// CompareAndDelete removes identity if its handle is still h.
func (r *Registry) CompareAndDelete(identity string, h *Handle) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.shard(identity)
	old := s.Load()
	if old == nil || (*old)[identity] != h {
		return
	}
	if len(*old) == 1 {
		s.Store(nil)
		return
	}
	m := maps.Clone(*old)
	delete(m, identity)
	s.Store(&m)
}

// Clear removes every identity.
func (r *Registry) Clear() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.shards {
		r.shards[i].Store(nil)
	}
}
