// Package registry holds an owner's copy-on-write index of its identities, read by transports on every request.
package registry

import (
	"hash/maphash"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/go-tokenmanager/tokenmanager/internal/link"
)

// The registry spreads its identities over shards, a power of two of
// them, grown as identities are added and shrunk as they go, so that a
// shard holds about perShard identities and a write copies only that
// many: an identity's start costs the same with ten identities as with
// a million.
const (
	minShards = 64
	perShard  = 64
)

// Hosted is what a registry maps an identity to: the owner's entry for
// it (a pointer), which holds its handle.
type Hosted interface {
	comparable
	Handle() *link.Handle
}

// Registry maps the identities an owner hosts to their entries: the
// owner's only index of them. It is read on every request and written
// only when an identity starts or stops, so each shard is an immutable
// map replaced on write (copy-on-write): a read is two atomic loads and
// one map lookup, with no lock and no write to shared memory, and a write
// copies one shard. When the identities outgrow the shards (more than
// perShard each on average), the shards are doubled; when they drop
// below a quarter of that, halved: each identity moves to its new shard,
// a copy of them all that happens once per doubling, so a write costs
// O(perShard) on average. It is safe for concurrent use by multiple
// goroutines.
type Registry[P Hosted] struct {
	seed  maphash.Seed
	mu    sync.Mutex // serialises writers; guards n
	n     int        // identities held
	table atomic.Pointer[table[P]]
}

// table is one generation of shards; a reader that loaded an older one
// sees the registry as it was then.
type table[P Hosted] struct {
	shards []atomic.Pointer[map[string]P]
}

// New returns an empty registry.
func New[P Hosted]() *Registry[P] {
	r := &Registry[P]{seed: maphash.MakeSeed()}
	r.table.Store(&table[P]{shards: make([]atomic.Pointer[map[string]P], minShards)})
	return r
}

func (r *Registry[P]) shard(t *table[P], identity string) *atomic.Pointer[map[string]P] {
	return &t.shards[maphash.String(r.seed, identity)&uint64(len(t.shards)-1)]
}

// Load returns identity's entry; ok is false when there is none.
func (r *Registry[P]) Load(identity string) (p P, ok bool) {
	if m := r.shard(r.table.Load(), identity).Load(); m != nil {
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
	t := r.table.Load()
	s := r.shard(t, identity)
	var m map[string]P
	if old := s.Load(); old != nil {
		m = maps.Clone(*old) // copies the map's memory: no hashing
	} else {
		m = make(map[string]P, 1)
	}
	if _, ok := m[identity]; !ok {
		r.n++
	}
	m[identity] = p
	s.Store(&m)
	if r.n > perShard*len(t.shards) {
		r.resize(t, 2*len(t.shards))
	}
}

// CompareAndDelete removes identity if its entry is still p.
func (r *Registry[P]) CompareAndDelete(identity string, p P) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.table.Load()
	s := r.shard(t, identity)
	old := s.Load()
	if old == nil {
		return
	}
	if cur, ok := (*old)[identity]; !ok || cur != p {
		return
	}
	r.n--
	if len(*old) == 1 {
		s.Store(nil)
	} else {
		m := maps.Clone(*old)
		delete(m, identity)
		s.Store(&m)
	}
	if len(t.shards) > minShards && r.n < perShard*len(t.shards)/4 {
		r.resize(t, len(t.shards)/2)
	}
}

// resize moves every identity of t to a new table of n shards. Under mu.
func (r *Registry[P]) resize(t *table[P], n int) {
	next := &table[P]{shards: make([]atomic.Pointer[map[string]P], n)}
	// Two passes, so that each new shard is made to its size: a map
	// made larger than it needs keeps the slack.
	sizes := make([]int32, n)
	for i := range t.shards {
		if m := t.shards[i].Load(); m != nil {
			for id := range *m {
				sizes[maphash.String(r.seed, id)&uint64(n-1)]++
			}
		}
	}
	fresh := make([]map[string]P, n)
	for i := range t.shards {
		if m := t.shards[i].Load(); m != nil {
			for id, e := range *m {
				j := maphash.String(r.seed, id) & uint64(n-1)
				if fresh[j] == nil {
					fresh[j] = make(map[string]P, sizes[j])
				}
				fresh[j][id] = e
			}
		}
	}
	for j, m := range fresh {
		if m != nil {
			next.shards[j].Store(&m)
		}
	}
	r.table.Store(next)
}

// Range calls fn for every entry, as the registry was when each shard was
// reached; fn may change the registry.
func (r *Registry[P]) Range(fn func(P)) {
	t := r.table.Load()
	for i := range t.shards {
		if m := t.shards[i].Load(); m != nil {
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
	r.n = 0
	r.table.Store(&table[P]{shards: make([]atomic.Pointer[map[string]P], minShards)})
}
