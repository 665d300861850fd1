// Package registry holds an owner's copy-on-write index of its identities, read by transports on every request.
package registry

import (
	"hash/maphash"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/go-tokenmanager/tokenmanager/internal/link"
)

// registryShards spreads the registry over this many maps, so that a
// write copies only about a thousandth of it.
const registryShards = 1024

// Hosted is what a registry maps an identity to: the owner's entry for
// it (a pointer), which holds its handle.
type Hosted interface {
	comparable
	Handle() *link.Handle
}

// Registry maps the identities an owner hosts to their entries: the
// owner's only index of them. It is read on every request and written
// only when an identity starts or stops, so each shard is an immutable
// map replaced on write (copy-on-write): a read is one atomic load and
// one map lookup, with no lock and no write to shared memory, and a write
// copies one shard (about a thousandth of the identities). It is safe for
// concurrent use by multiple goroutines.
type Registry[P Hosted] struct {
	seed   maphash.Seed
	mu     sync.Mutex // serialises writers
	shards [registryShards]atomic.Pointer[map[string]P]
}

// New returns an empty registry.
func New[P Hosted]() *Registry[P] {
	return &Registry[P]{seed: maphash.MakeSeed()}
}

func (r *Registry[P]) shard(identity string) *atomic.Pointer[map[string]P] {
	return &r.shards[maphash.String(r.seed, identity)%registryShards]
}

// Load returns identity's entry; ok is false when there is none.
func (r *Registry[P]) Load(identity string) (p P, ok bool) {
	if m := r.shard(identity).Load(); m != nil {
		p, ok = (*m)[identity]
	}
	return p, ok
}

// Lookup returns identity's handle, or nil.
func (r *Registry[P]) Lookup(identity string) *link.Handle {
	if p, ok := r.Load(identity); ok {
		return p.Handle()
	}
	return nil
}

// Store sets identity's entry.
func (r *Registry[P]) Store(identity string, p P) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.shard(identity)
	var m map[string]P
	if old := s.Load(); old != nil {
		m = maps.Clone(*old)
	} else {
		m = make(map[string]P, 1)
	}
	m[identity] = p
	s.Store(&m)
}

// CompareAndDelete removes identity if its entry is still p.
func (r *Registry[P]) CompareAndDelete(identity string, p P) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.shard(identity)
	old := s.Load()
	if old == nil {
		return
	}
	if cur, ok := (*old)[identity]; !ok || cur != p {
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

// Range calls fn for every entry, as the registry was when each shard was
// reached; fn may change the registry.
func (r *Registry[P]) Range(fn func(P)) {
	for i := range r.shards {
		if m := r.shards[i].Load(); m != nil {
			for _, p := range *m {
				fn(p)
			}
		}
	}
}

// Clear removes every identity.
func (r *Registry[P]) Clear() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.shards {
		r.shards[i].Store(nil)
	}
}
