package actor

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/backoff"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/internal/request"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// pending holds what asked for an identity while its settings are fetched,
// and the identity's entry, made early when its first fetch runs with
// SettingsFor (the fetch counts its provider calls in it).
type pending struct {
	resolves  []*protocol.Resolve
	envelopes []envelope
	x         *hosted
	early     bool // a request started it (start), counted in owner.early
}

// envelope is a protocol message and its sender.
type envelope struct {
	msg    any
	sender *proto.PID
}

// identityOf returns the Identity field of a protocol message, and
// whether the message may start the identity (an Invalidate does not).
func identityOf(msg any) (identity string, start bool) {
	switch m := msg.(type) {
	case messages.Get:
		return m.Identity, true
	case *messages.Get:
		return m.Identity, true
	case messages.Refreshed:
		return m.Identity, true
	case *messages.Refreshed:
		return m.Identity, true
	case messages.Invalidate:
		return m.Identity, false
	case *messages.Invalidate:
		return m.Identity, false
	}
	return "", false
}

// route hands a protocol message to its identity. When the identity is
// not hosted yet, a message that may start it waits for its settings
// (SettingsFor is called); otherwise it is dropped.
func (w *owner) route(env envelope) {
	identity, start := identityOf(env.msg)
	if x := w.find(identity); x != nil {
		w.deliver(x, env)
		return
	}
	if !start {
		return
	}
	if err := tokenmanager.CheckIdentity(identity); err != nil {
		w.reply(env, err)
		return
	}
	if err := w.failedNow(identity); err != nil {
		w.reply(env, err)
		return
	}
	p := w.await(identity, isGet(env.msg))
	p.envelopes = append(p.envelopes, env)
}

// resolve answers a transport's request for identity's handle.
func (w *owner) resolve(m *protocol.Resolve) {
	if m.Ctx.Err() != nil {
		return
	}
	if x := w.find(m.Identity); x != nil {
		m.Reply <- protocol.Resolved{H: &x.st.h}
		return
	}
	if err := tokenmanager.CheckIdentity(m.Identity); err != nil {
		m.Reply <- protocol.Resolved{Err: err}
		return
	}
	if err := w.failedNow(m.Identity); err != nil {
		m.Reply <- protocol.Resolved{Err: err}
		return
	}
	p := w.await(m.Identity, m.Fetch)
	p.resolves = slices.DeleteFunc(p.resolves, func(r *protocol.Resolve) bool { return r.Ctx.Err() != nil })
	p.resolves = append(p.resolves, m)
}

// failedNow returns the identity's settings failure while its backoff
// lasts.
func (w *owner) failedNow(identity string) error {
	return w.failed[identity].Blocking(w.s.Clock.Now())
}

// isGet reports whether msg is a messages.Get.
func isGet(msg any) bool {
	switch msg.(type) {
	case messages.Get, *messages.Get:
		return true
	}
	return false
}

// await returns the identity's pending entry, starting its SettingsFor
// call if there is none. When fetch is set (what starts the identity
// wants a token: a Get, a transport's Resolve), the goroutine calling
// SettingsFor goes on with the identity's first fetch, so that one
// goroutine and one message back bring both (see settingsDone).
func (w *owner) await(identity string, fetch bool) *pending {
	w.mu.Lock()
	defer w.mu.Unlock()
	if p := w.pending[identity]; p != nil {
		return p
	}
	return w.launch(identity, fetch, nil)
}

// start is link.Owner.Start: it starts identity, unless it is hosted,
// pending or failed, for a request that gets its first token on first.
// It runs on the request's goroutine.
func (w *owner) start(identity string) <-chan link.First {
	w.mu.Lock()
	defer w.mu.Unlock()
	// The owner hosts an identity (registry) before it stops pending it,
	// both under mu for this check: an identity is never started twice.
	if w.stopped || w.pending[identity] != nil || w.failed[identity] != nil || w.find(identity) != nil {
		return nil
	}
	if w.early >= maxEarly {
		// As many are under way already: this request waits for the
		// owner, so that a flood of new identities runs at the owner's
		// pace and queues no more than maxEarly in its mailbox.
		return nil
	}
	w.early++
	first := make(chan link.First, 1)
	w.launch(identity, true, first)
	return first
}

// maxEarly bounds the identities that requests started (start) and whose
// settingsDone the owner has not handled yet.
const maxEarly = 64

// launch makes identity's pending entry and schedules its SettingsFor
// call, with the first fetch when fetch is set, on a worker. When first
// is not nil, the worker hands the first fetch's token there (or an
// empty First) once it has sent the owner its settingsDone, so that
// whatever the request sends the owner next comes after it. w.mu is held.
func (w *owner) launch(identity string, fetch bool, first chan<- link.First) *pending {
	p := &pending{early: first != nil}
	w.pending[identity] = p
	w.pendingPeak = max(w.pendingPeak, len(w.pending))
	fn, ctx, bus := w.s.SettingsFor, w.ctx, w.o.Bus
	if fetch {
		p.x = &hosted{}
	}
	x := p.x
	w.workers.Schedule(func() {
		m := &settingsDone{identity: identity}
		m.s, m.err = backoff.SettingsOf(fn, identity)
		if m.err != nil || x == nil {
			w.sendSelf(m)
			handFirst(first, link.First{})
			return
		}
		w.prepare(x, identity, m.s)
		firstFetch(ctx, m.s, bus, &x.st.fetch.calls, func(d *fetchDone, start time.Time) {
			arrived := x.st.h.Clock.Now()
			var f link.First
			if first != nil {
				if expires, err := d.usable(start, arrived); err == nil {
					f = link.First{H: &x.st.h, Token: d.token, ExpiresAt: expires}
				}
			}
			m.first, m.firstAt, m.firstDone = d, start, arrived
			if !w.report(m, f.H != nil) {
				f = link.First{}
			}
			handFirst(first, f)
		})
	})
	return p
}

// report sends the owner m, the settings and first fetch of an identity,
// and reports whether it was sent (the owner has not stopped). counted
// says a request gets the first token before the owner hosts the
// identity: it is counted live now (OwnerSettings' Live), not once hosted.
func (w *owner) report(m *settingsDone, counted bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return false
	}
	if counted {
		m.counted = true
		w.o.Live.Add(1)
	}
	w.root.Send(w.self, m)
	return true
}

// handFirst hands f to the request waiting on first, if any; first has
// room for it.
func handFirst(first chan<- link.First, f link.First) {
	if first != nil {
		first <- f
	}
}

func (w *owner) settingsDone(c proto.Context, m *settingsDone) {
	w.mu.Lock()
	p := w.pending[m.identity]
	w.mu.Unlock()
	if p == nil {
		p = &pending{}
	}
	now := w.s.Clock.Now()
	if m.err != nil {
		w.mu.Lock()
		w.unpend(m.identity)
		f := w.failed[m.identity]
		if f == nil {
			f = &backoff.SettingsFailure{}
			w.failed[m.identity] = f
		}
		w.mu.Unlock()
		retryIn := f.Fail(now, m.err)
		w.answer(p, nil, m.err)
		w.armSweep()
		w.settingsFailed(c, m.identity, f, retryIn)
		return
	}
	x := w.hostPending(p, m, now)
	if m.first != nil {
		w.firstFetched(x, p, m, now)
	}
	w.answer(p, x, nil)
	w.armSweep()
	w.evictOverCap(x)
}

// hostPending hosts the identity of m, pending as p, then stops pending
// it: hosted first, so that a request starting identities (start) never
// finds it neither hosted nor pending. It stops pending it even if hosting
// panics, so that later requests start it anew rather than wait for it.
func (w *owner) hostPending(p *pending, m *settingsDone, now time.Time) *hosted {
	defer func() {
		w.mu.Lock()
		w.unpend(m.identity)
		delete(w.failed, m.identity)
		w.mu.Unlock()
	}()
	used := now
	if m.first != nil {
		used = m.firstDone // when the request that started it had its token
	}
	return w.host(p.x, m.identity, m.s, used, m.counted)
}

// firstFetched hands x, just hosted, the outcome of its first fetch, run
// from start on with its SettingsFor call. The state begins that fetch;
// the Gets that waited for the settings join it, and so do the requests
// resolving the identity (as waits of their own for as long as they
// resolve, so that a failure is handled as one of a fetch they wait for:
// a retry armed), before the state handles the outcome as any fetch's,
// as of when it arrived: the request that started the identity may have
// been handed the token then (start), and the state judges it as that
// request did. The requests get their handle once the token is cached.
func (w *owner) firstFetched(x *hosted, p *pending, m *settingsDone, now time.Time) {
	d := m.first
	d.id = x.st.begin(m.firstAt)
	for _, env := range p.envelopes {
		w.deliver(x, env)
	}
	p.envelopes = nil
	for _, r := range p.resolves {
		if r.Ctx.Err() == nil {
			w.run(x, x.st.wait(now, &protocol.Wait{H: &x.st.h, Ctx: r.Ctx}), nil, nil)
		}
	}
	w.run(x, x.st.fetched(m.firstDone, d), nil, nil)
}

// settingsFailed reports a failed SettingsFor call: an event, and a log
// line (to OwnerSettings.Logger, else the actor system's logger).
func (w *owner) settingsFailed(c proto.Context, identity string, f *backoff.SettingsFailure, retryIn time.Duration) {
	w.o.Bus.Publish(messages.SettingsFailed{Identity: identity, Err: f.Err, ConsecutiveFailures: f.N, RetryIn: retryIn})
	log := w.s.Logger
	if log == nil {
		log = c.Logger()
	}
	log.LogAttrs(context.Background(), slog.LevelError, "tokenmanager: SettingsFor failed",
		slog.String("identity", identity),
		slog.String("error", f.Err.Error()),
		slog.Int("consecutive_failures", f.N),
		slog.Duration("retry_in", retryIn))
}

// unpend forgets identity's pending entry, and counts a request's start
// (see start) done. w.mu is held.
func (w *owner) unpend(identity string) {
	if p := w.pending[identity]; p != nil && p.early {
		w.early--
	}
	delete(w.pending, identity)
	w.pending = shrink(w.pending, &w.pendingPeak)
}

// request returns the request side of s (as SettingsFor gave it, before
// defaults). Settings that differ only in their provider and timing share
// one: with no Formatter, no callbacks and no DPoP key, the request side is a handful
// of comparable values. w.mu is held.
func (w *owner) request(s tokenmanager.Settings) *request.Request {
	if s.DPoP != nil || s.Formatter != nil || s.OnAuthFail != nil || s.OnRecoveryTry != nil || s.OnRecoveryAbort != nil ||
		s.OnTokenRefresh != nil || s.OnTokenRequestFail != nil || s.OnTokenTryThreshold != nil {
		return request.New(s, request.BothSides)
	}
	key := requestKey{
		header: s.Header, statuses: statusKey(s.RefreshOnStatus), tries: s.MaxRecoveryTries,
		withToken: s.AddTokenToLogs, insecure: s.AllowInsecureHTTP, wait: s.WaitTimeout,
	}
	r := w.requests[key]
	if r == nil {
		if w.requests == nil {
			w.requests = make(map[requestKey]*request.Request)
		}
		r = request.New(s, request.BothSides)
		w.requests[key] = r
	}
	return r
}

// statusKey spells codes for a requestKey, without fmt: "" for nil (the
// usual case: the defaults apply), "," for an empty list.
func statusKey(codes []int) string {
	if codes == nil {
		return ""
	}
	b := make([]byte, 0, 1+4*len(codes))
	b = append(b, ',')
	for _, c := range codes {
		b = strconv.AppendInt(b, int64(c), 10)
		b = append(b, ',')
	}
	return string(b)
}

// requestKey is what a shared request side is looked up by.
type requestKey struct {
	header, statuses string
	tries            int
	withToken        bool
	insecure         bool
	wait             time.Duration
}

// answer replies to everyone pending: with the identity x, or with err.
func (w *owner) answer(p *pending, x *hosted, err error) {
	for _, r := range p.resolves {
		if r.Ctx.Err() == nil {
			if x != nil {
				r.Reply <- protocol.Resolved{H: &x.st.h}
			} else {
				r.Reply <- protocol.Resolved{Err: err}
			}
		}
	}
	for _, env := range p.envelopes {
		if x != nil && w.hosts(x) {
			w.deliver(x, env)
		} else {
			w.reply(env, err)
		}
	}
}

// reply answers a Get that cannot be served with err; other messages
// have no reply.
func (w *owner) reply(env envelope, err error) {
	switch env.msg.(type) {
	case messages.Get, *messages.Get:
		if env.sender != nil {
			w.root.Send(env.sender, &messages.TokenResult{Err: err})
		}
	}
}
