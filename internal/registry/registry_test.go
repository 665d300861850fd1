package registry

import (
	"strconv"
	"testing"

	"github.com/go-tokenmanager/tokenmanager/internal/link"
)

type entry struct{ h link.Handle }

func (e *entry) Handle() *link.Handle { return &e.h }

func TestRegistry_storeLoadDelete(t *testing.T) {
	r := New[*entry]()
	const n = 5000 // several entries per shard: tables grow and probe
	es := make([]*entry, n)
	for i := range es {
		es[i] = &entry{}
		r.Store("id-"+strconv.Itoa(i), es[i])
	}
	for i, e := range es {
		if got, ok := r.Load("id-" + strconv.Itoa(i)); !ok || got != e {
			t.Fatalf("Load(id-%d) = %p, %v; want %p", i, got, ok, e)
		}
	}
	if _, ok := r.Load("id-absent"); ok {
		t.Fatal("Load found an identity never stored")
	}
	if h := r.Lookup("id-7"); h != &es[7].h {
		t.Fatalf("Lookup(id-7) = %p; want its handle", h)
	}
	repl := &entry{}
	r.Store("id-3", repl)
	if got, _ := r.Load("id-3"); got != repl {
		t.Fatal("Store did not replace the entry")
	}
	r.CompareAndDelete("id-3", es[3]) // not its entry any more
	if got, _ := r.Load("id-3"); got != repl {
		t.Fatal("CompareAndDelete removed another entry")
	}
	for i := 0; i < n; i += 2 {
		e := es[i]
		if i == 3 {
			e = repl
		}
		r.CompareAndDelete("id-"+strconv.Itoa(i), e)
	}
	seen := 0
	r.Range(func(*entry) { seen++ })
	if seen != n/2 {
		t.Fatalf("Range saw %d entries; want %d", seen, n/2)
	}
	for i := range es {
		_, ok := r.Load("id-" + strconv.Itoa(i))
		if want := i%2 == 1; ok != want {
			t.Fatalf("Load(id-%d) found %v; want %v", i, ok, want)
		}
	}
	r.Clear()
	if _, ok := r.Load("id-1"); ok {
		t.Fatal("Load found an identity after Clear")
	}
}

// BenchmarkLoad looks up 10,000 identities in turn, each found cold in
// the CPU caches as on a request through a MultiRoundTripper.
func BenchmarkLoad(b *testing.B) {
	r := New[*entry]()
	const n = 10_000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "tenant-" + strconv.Itoa(i)
		r.Store(ids[i], &entry{})
	}
	// The requests' identities are copies: not the strings stored.
	asked := make([]string, n)
	for i, id := range ids {
		asked[i] = string([]byte(id))
	}
	i := 0
	for b.Loop() {
		i = (i + 7919) % n
		if r.Lookup(asked[i]) == nil {
			b.Fatal("not found")
		}
	}
}

// TestRegistry_resizes: the shards double as identities are added, so a
// shard holds about perShard of them whatever the count, and halve back
// to minShards as they go; every identity stays findable through each
// resize, and a reader's table is never changed under it.
func TestRegistry_resizes(t *testing.T) {
	r := New[*entry]()
	const n = 20_000
	es := make([]*entry, n)
	before := r.table.Load()
	for i := range es {
		es[i] = &entry{}
		r.Store("id-"+strconv.Itoa(i), es[i])
	}
	if got := len(r.table.Load().shards); got < n/perShard || got > 2*n/perShard {
		t.Fatalf("%d identities in %d shards; want about %d per shard", n, got, perShard)
	}
	if len(before.shards) != minShards {
		t.Fatalf("a table a reader held was resized to %d shards", len(before.shards))
	}
	largest := 0
	r.Range(func(*entry) {})
	for i := range r.table.Load().shards {
		if m := r.table.Load().shards[i].Load(); m != nil {
			largest = max(largest, len(*m))
		}
	}
	if largest > 8*perShard {
		t.Fatalf("the largest shard holds %d identities; want a handful", largest)
	}
	for i, e := range es {
		if got, ok := r.Load("id-" + strconv.Itoa(i)); !ok || got != e {
			t.Fatalf("after growing, Load(id-%d) = %p, %v; want %p", i, got, ok, e)
		}
	}
	for i, e := range es {
		r.CompareAndDelete("id-"+strconv.Itoa(i), e)
		if i == n/2 {
			for j := n/2 + 1; j < n; j++ {
				if got, ok := r.Load("id-" + strconv.Itoa(j)); !ok || got != es[j] {
					t.Fatalf("while shrinking, Load(id-%d) = %p, %v", j, got, ok)
				}
			}
		}
	}
	if got := len(r.table.Load().shards); got != minShards {
		t.Fatalf("all identities gone, %d shards left; want %d", got, minShards)
	}
	if r.n != 0 {
		t.Fatalf("count %d after every identity left", r.n)
	}
}

// BenchmarkStore adds identities to a registry already holding 100,000:
// a write copies one shard of about perShard identities, not a share of
// them all.
func BenchmarkStore(b *testing.B) {
	r := New[*entry]()
	for i := range 100_000 {
		r.Store("old-"+strconv.Itoa(i), &entry{})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		r.Store("new-"+strconv.Itoa(i), &entry{})
	}
}
