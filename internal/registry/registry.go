// Package registry holds an owner's copy-on-write index of its identities, read by transports on every request.
package registry

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/go-tokenmanager/tokenmanager/internal/link"
)

// shardBits spreads the registry over 1 << shardBits tables, so that a
// write copies only about a thousandth of it.
const shardBits = 10

// Hosted is what a registry maps an identity to: the owner's entry for
// it (a pointer), which holds its handle.
type Hosted interface {
	comparable
	Handle() *link.Handle
}

// Registry maps the identities an owner hosts to their entries: the
// owner's only index of them. It is read on every request and written
// only when an identity starts or stops, so each shard is an immutable
// table replaced on write (copy-on-write): a read is one hash, one atomic
// load and a probe of an open-addressing table that holds each entry's
// hash beside it, with no lock and no write to shared memory; a write
// copies one shard (about a thousandth of the identities). With
// thousands of identities, each read finds its shard cold in the CPU
// caches: the table costs it two dependent loads and the comparison of
// the identity, where a Go map costs up to four and a second hash. It is
// safe for concurrent use by multiple goroutines.
type Registry[P Hosted] struct {
	seed   maphash.Seed
	mu     sync.Mutex // serialises writers
	shards [1 << shardBits]atomic.Pointer[table[P]]
}

// table is one shard: open addressing with linear probing, at most half
// full, never changed once published.
type table[P Hosted] struct {
	slots []slot[P] // a power of two long
	n     int       // entries
}

// slot is an entry; the zero P marks a free slot.
type slot[P Hosted] struct {
	hash     uint64
	identity string
	p        P
}

// New returns an empty registry.
func New[P Hosted]() *Registry[P] {
	return &Registry[P]{seed: maphash.MakeSeed()}
}

func (r *Registry[P]) hash(identity string) uint64 { return maphash.String(r.seed, identity) }

func (r *Registry[P]) shard(h uint64) *atomic.Pointer[table[P]] {
	return &r.shards[h&(1<<shardBits-1)]
}

// Load returns identity's entry; ok is false when there is none.
func (r *Registry[P]) Load(identity string) (p P, ok bool) {
	return r.load(r.hash(identity), identity)
}

func (r *Registry[P]) load(h uint64, identity string) (p P, ok bool) {
	t := r.shard(h).Load()
	if t == nil {
		return p, false
	}
	var zero P
	mask := uint64(len(t.slots) - 1)
	for i := h >> shardBits; ; i++ {
		s := &t.slots[i&mask]
		if s.p == zero {
			return p, false
		}
		if s.hash == h && s.identity == identity {
			return s.p, true
		}
	}
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
	r.store(r.hash(identity), identity, p)
}

func (r *Registry[P]) store(h uint64, identity string, p P) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.shard(h)
	old := s.Load()
	n := 1
	if old != nil {
		n += old.n
	}
	t := newTable[P](n)
	if old != nil {
		for _, e := range old.slots {
			if e.p != *new(P) && (e.hash != h || e.identity != identity) {
				t.put(e)
			}
		}
	}
	t.put(slot[P]{hash: h, identity: identity, p: p})
	s.Store(t)
}

// CompareAndDelete removes identity if its entry is still p.
func (r *Registry[P]) CompareAndDelete(identity string, p P) {
	r.compareAndDelete(r.hash(identity), identity, p)
}

func (r *Registry[P]) compareAndDelete(h uint64, identity string, p P) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.shard(h)
	old := s.Load()
	if old == nil {
		return
	}
	if cur, ok := r.load(h, identity); !ok || cur != p {
		return
	}
	if old.n == 1 {
		s.Store(nil)
		return
	}
	t := newTable[P](old.n - 1)
	for _, e := range old.slots {
		if e.p != *new(P) && e.p != p {
			t.put(e)
		}
	}
	s.Store(t)
}

// newTable returns an empty table for n entries.
func newTable[P Hosted](n int) *table[P] {
	size := 4
	for size < 2*n {
		size *= 2
	}
	return &table[P]{slots: make([]slot[P], size)}
}

// put adds e, whose identity t does not hold, to t (not yet published).
func (t *table[P]) put(e slot[P]) {
	var zero P
	mask := uint64(len(t.slots) - 1)
	for i := e.hash >> shardBits; ; i++ {
		if s := &t.slots[i&mask]; s.p == zero {
			*s = e
			t.n++
			return
		}
	}
}

// Range calls fn for every entry, as the registry was when each shard was
// reached; fn may change the registry.
func (r *Registry[P]) Range(fn func(P)) {
	var zero P
	for i := range r.shards {
		if t := r.shards[i].Load(); t != nil {
			for _, s := range t.slots {
				if s.p != zero {
					fn(s.p)
				}
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
