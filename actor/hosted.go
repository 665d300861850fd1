package actor

import (
	"cmp"
	"maps"
	"slices"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/dpopctx"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// hosted is one identity an owner hosts: its state (its handle within) in
// one allocation, and a retry timer only while one is armed.
type hosted struct {
	st    state
	retry *clock.Timer // nil unless st.fetch.retryArmed
}

// host starts hosting identity with settings s (as SettingsFor gave
// them) in x (nil: a new entry; else one prepared for its first fetch)
// and publishes its handle, used at now. counted says it is already
// counted in link.Owner.Live.
func (w *owner) host(x *hosted, identity string, s tokenmanager.Settings, now time.Time, counted bool) *hosted {
	if x == nil {
		x = &hosted{}
		w.prepare(x, identity, s)
	}
	s = s.WithDefaults()
	x.st.h.Touch(now)
	x.st.s = w.fetchSettings(s)
	x.st.provider = dpopctx.ProviderOf(s)
	x.st.pol = hostedPolicy
	w.reg.Store(identity, x)
	w.live++
	if !counted {
		w.o.Live.Add(1)
	}
	return x
}

// prepare sets the fields of x's handle for identity with settings s (as
// SettingsFor gave them): on the goroutine that got s, before the handle
// is handed to anyone, and never changed afterwards.
func (w *owner) prepare(x *hosted, identity string, s tokenmanager.Settings) {
	w.mu.Lock()
	req := w.request(s)
	w.mu.Unlock()
	h := &x.st.h
	h.Bus = w.o.Bus
	h.Done = w.o.Done // closed when the owner stops; passivation answers ErrPassivated
	h.Clock = s.WithDefaults().Clock
	h.Identity = identity
	h.Request = req
	h.PID = w.self
}

// lookup returns the identity h belongs to, nil if it is no longer
// hosted (passivated since h was handed out).
func (w *owner) lookup(h *link.Handle) *hosted {
	if h == nil {
		return nil
	}
	if x := w.find(h.Identity); x != nil && &x.st.h == h {
		return x
	}
	return nil
}

// hosts reports whether x is still hosted.
func (w *owner) hosts(x *hosted) bool { return w.find(x.st.h.Identity) == x }

// find returns identity's entry, nil if it is not hosted.
func (w *owner) find(identity string) *hosted {
	x, _ := w.reg.Load(identity)
	return x
}

// Handle returns x's handle, as the registry hands it out.
func (x *hosted) Handle() *link.Handle { return &x.st.h }

// run carries out the effects of one of x's transitions; to hears the
// reply, if any.
func (w *owner) run(x *hosted, e effects, to *proto.PID, wait *protocol.Wait) {
	if e.reply != nil {
		if to != nil {
			w.root.Send(to, e.reply)
		} else if wait != nil {
			reply(wait, e.reply)
		}
	}
	if (e.stopRetry || e.arm == retryTimer) && x.retry != nil {
		x.retry.Stop()
		x.retry = nil
	}
	if e.arm == retryTimer {
		seq := e.armSeq
		x.retry = x.st.h.Clock.AfterFunc(e.armIn, func() { w.sendSelf(&hostedRetry{x: x, seq: seq}) })
	}
	if e.fetch {
		x.st.launch(w.workers.Schedule, func(d *fetchDone) { w.sendSelf(&hostedFetch{x: x, d: d}) })
	}
	answer(w.root, e)
	if e.panicked != nil {
		log := x.st.s.Logger
		if log == nil {
			log = w.log
		}
		x.st.logPanic(log, e.panicked)
	}
	for _, ev := range e.events {
		if ev != nil {
			x.st.publish(ev)
		}
	}
}

// deliver hands a protocol message to x's state.
func (w *owner) deliver(x *hosted, env envelope) {
	now := x.st.h.Clock.Now()
	switch m := env.msg.(type) {
	case messages.Get, *messages.Get:
		if env.sender != nil {
			w.run(x, x.st.get(now, env.sender), env.sender, nil)
		}
	case messages.Invalidate:
		w.run(x, x.st.invalidate(now, m.AccessToken, -1), nil, nil)
	case *messages.Invalidate:
		w.run(x, x.st.invalidate(now, m.AccessToken, -1), nil, nil)
	case messages.Refreshed:
		w.run(x, x.st.pushed(now, m), nil, nil)
	case *messages.Refreshed:
		w.run(x, x.st.pushed(now, *m), nil, nil)
	}
}

// passivate stops hosting x, which is idle: its snapshot is withdrawn and
// its handle marked, so requests holding it ask the owner again.
func (w *owner) passivate(x *hosted, evicted bool) {
	x.st.h.SetPassivated()
	w.run(x, x.st.stop(&messages.TokenResult{Err: protocol.ErrPassivated}), nil, nil)
	w.reg.CompareAndDelete(x.st.h.Identity, x)
	w.live--
	w.o.Live.Add(-1)
	w.o.Bus.Publish(messages.IdentityPassivated{Identity: x.st.h.Identity, Evicted: evicted})
}

// shrink returns m, or a copy of it once it is down to a quarter of its
// peak: Go maps never give back their buckets.
func shrink[K comparable, V any](m map[K]V, peak *int) map[K]V {
	*peak = max(*peak, len(m))
	if *peak < 64 || len(m) >= *peak/4 {
		return m
	}
	*peak = len(m)
	n := make(map[K]V, len(m)) // maps.Clone would keep the buckets
	maps.Copy(n, m)
	return n
}

// armSweep arms the idle sweep, if it is not armed, while there is
// something to sweep.
func (w *owner) armSweep() {
	if w.sweep != nil || (w.live == 0 && len(w.failed) == 0) {
		return
	}
	w.sweepSeq++
	seq := w.sweepSeq
	w.sweep = w.s.Clock.AfterFunc(w.s.IdleTimeout/2, func() { w.sendSelf(sweepTick{seq: seq}) })
}

// sweepTick passivates every identity unused for IdleTimeout and idle
// (no fetch, nobody waiting), and forgets settings failures whose backoff
// is long over.
func (w *owner) sweepTick(m sweepTick) {
	if m.seq != w.sweepSeq {
		return
	}
	w.sweep = nil
	now := w.s.Clock.Now()
	w.reg.Range(func(x *hosted) {
		if last := x.st.h.LastUse(); now.Sub(last) >= w.s.IdleTimeout && x.st.idle(last) {
			w.passivate(x, false)
		}
	})
	w.mu.Lock()
	for id, f := range w.failed {
		if now.Sub(f.NotBefore) >= w.s.IdleTimeout {
			delete(w.failed, id)
		}
	}
	w.mu.Unlock()
	w.armSweep()
}

// evictOverCap passivates the least recently used tenth of the
// identities (at least one) when there are more than MaxIdentities; busy
// ones stay. The newest is spared.
func (w *owner) evictOverCap(newest *hosted) {
	if w.s.MaxIdentities == 0 || w.live <= w.s.MaxIdentities {
		return
	}
	type aged struct {
		x    *hosted
		last time.Time
	}
	all := make([]aged, 0, w.live)
	w.reg.Range(func(x *hosted) {
		if x != newest {
			all = append(all, aged{x, x.st.h.LastUse()})
		}
	})
	n := min(max(w.live-w.s.MaxIdentities, w.s.MaxIdentities/10, 1), len(all))
	slices.SortFunc(all, func(a, b aged) int { return cmp.Compare(a.last.UnixNano(), b.last.UnixNano()) })
	for _, a := range all[:n] {
		if a.x.st.idle(a.last) {
			w.passivate(a.x, true)
		}
	}
}

// fetchSettings returns s's fetch settings, shared with every identity
// whose settings agree.
func (w *owner) fetchSettings(s tokenmanager.Settings) *fetchSettings {
	fs := newFetchSettings(s)
	if p := w.shared[fs]; p != nil {
		return p
	}
	if w.shared == nil || len(w.shared) >= maxShared {
		w.shared = make(map[fetchSettings]*fetchSettings) // forget; identities keep theirs
	}
	p := &fs
	w.shared[fs] = p
	return p
}

// maxShared bounds the shared fetch settings an owner remembers.
const maxShared = 64
