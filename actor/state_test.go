package actor

import (
	"context"
	"errors"
	"testing"
	"time"

	proto "github.com/asynkron/protoactor-go/actor"
	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/link"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/internal/request"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// machine is a state under test on a mock clock, with no actor system:
// transitions are called directly and their effects checked.
type machine struct {
	st   *state
	mock *clock.Mock
}

func newMachine(pol policy) *machine {
	mock := clock.NewMock()
	raw := tokenmanager.Settings{
		GetCredentials: func(context.Context) (tokenmanager.Token, error) { return tokenmanager.Token{}, nil },
		Clock:          mock,
		RetryBaseDelay: time.Second,
		RetryMaxDelay:  time.Second, // backoff in [0.5s, 1s]
		RefreshBuffer:  10 * time.Second,
	}
	st := newState(raw.WithDefaults(), pol)
	if pol.events == eventsSharedBus {
		st.h.Identity = "tenant"
		st.h.Request = request.New(raw, request.BothSides)
	}
	return &machine{st: st, mock: mock}
}

func (m *machine) now() time.Time { return m.mock.Now() }

// askers and waits count who waits.
func (m *machine) askers() int {
	if m.st.waiters == nil {
		return 0
	}
	return len(m.st.waiters.askers)
}

func (m *machine) waits() int {
	if m.st.waiters == nil {
		return 0
	}
	return len(m.st.waiters.waits)
}

// fetchOK completes the running fetch with a token of life seconds.
func (m *machine) fetchOK(access string, life int64) effects {
	return m.st.fetched(m.now(), &fetchDone{id: m.st.fetch.id, token: tokenmanager.Token{AccessToken: access, ExpiresIn: life}})
}

func (m *machine) fetchErr(err error) effects {
	return m.st.fetched(m.now(), &fetchDone{id: m.st.fetch.id, err: err})
}

// cached gives the machine a token of life seconds, fetched now.
func (m *machine) cached(access string, life int64) {
	m.st.get(m.now(), asker)
	m.fetchOK(access, life)
}

func newWait() *protocol.Wait {
	return &protocol.Wait{Ctx: context.Background(), Reply: make(chan *messages.TokenResult, 1)}
}

var asker = proto.NewPID("local", "asker")

type permanentErr struct{}

func (permanentErr) Error() string   { return "invalid_client" }
func (permanentErr) Permanent() bool { return true }

func TestTransitions(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name  string
		pol   policy
		setup func(m *machine)
		do    func(m *machine) effects
		check func(t *testing.T, m *machine, e effects)
	}{
		{
			name: "get, cold: asker queued, cold-start fetch",
			do:   func(m *machine) effects { return m.st.get(m.now(), asker) },
			check: func(t *testing.T, m *machine, e effects) {
				if !e.fetch || e.reply != nil || !m.st.fetch.running || m.st.fetch.why.reason() != messages.ReasonColdStart {
					t.Errorf("fetch %v, reply %v, running %v, why %v; want a cold-start fetch and no reply", e.fetch, e.reply, m.st.fetch.running, m.st.fetch.why)
				}
				if m.askers() != 1 {
					t.Errorf("askers = %d; want 1", m.askers())
				}
			},
		},
		{
			name:  "get, token fresh: replied, no fetch",
			setup: func(m *machine) { m.cached("a", 60) },
			do:    func(m *machine) effects { return m.st.get(m.now(), asker) },
			check: func(t *testing.T, m *machine, e effects) {
				if e.reply == nil || e.reply.Token.AccessToken != "a" || e.fetch {
					t.Errorf("reply %v, fetch %v; want token a, no fetch", e.reply, e.fetch)
				}
			},
		},
		{
			name: "get on use past RefreshAt (hosted): replied and early refresh",
			pol:  hostedPolicy,
			setup: func(m *machine) {
				m.cached("a", 60)
				m.mock.Add(55 * time.Second)
			},
			do: func(m *machine) effects { return m.st.get(m.now(), asker) },
			check: func(t *testing.T, m *machine, e effects) {
				if e.reply == nil || e.reply.Token.AccessToken != "a" || !e.fetch || m.st.fetch.why.reason() != messages.ReasonEarlyRefresh {
					t.Errorf("reply %v, fetch %v, why %v; want token a and an early refresh", e.reply, e.fetch, m.st.fetch.why)
				}
			},
		},
		{
			name: "fetched with a precise lifetime: it counts, not ExpiresIn's whole seconds",
			setup: func(m *machine) {
				m.st.get(m.now(), asker)
			},
			do: func(m *machine) effects {
				return m.st.fetched(m.now(), &fetchDone{id: m.st.fetch.id, token: tokenmanager.Token{AccessToken: "a", ExpiresIn: 1}, lifetime: 600 * time.Millisecond})
			},
			check: func(t *testing.T, m *machine, e effects) {
				if want := m.now().Add(600 * time.Millisecond); !m.st.cache.cur.ExpiresAt.Equal(want) {
					t.Errorf("expires at %v; want %v (600ms after the fetch began)", m.st.cache.cur.ExpiresAt, want)
				}
			},
		},
		{
			name: "get while backing off: the failure at once",
			setup: func(m *machine) {
				m.st.get(m.now(), asker)
				m.fetchErr(boom)
			},
			do: func(m *machine) effects { return m.st.get(m.now(), asker) },
			check: func(t *testing.T, m *machine, e effects) {
				var fe *tokenmanager.FetchError
				if e.reply == nil || !errors.As(e.reply.Err, &fe) || e.fetch || e.arm != noTimer {
					t.Errorf("reply %v, fetch %v, arm %v; want the FetchError, no fetch, no timer", e.reply, e.fetch, e.arm)
				}
			},
		},
		{
			name: "wait while backing off a transient failure: queued, retry armed for the backoff's end",
			setup: func(m *machine) {
				m.st.get(m.now(), asker)
				m.fetchErr(boom)
			},
			do: func(m *machine) effects { return m.st.wait(m.now(), newWait()) },
			check: func(t *testing.T, m *machine, e effects) {
				left := m.st.notBefore().Sub(m.now())
				if e.reply != nil || e.fetch || e.arm != retryTimer || e.armIn != left || !m.st.fetch.retryArmed {
					t.Errorf("reply %v, fetch %v, arm %v in %v; want a retry timer in %v", e.reply, e.fetch, e.arm, e.armIn, left)
				}
			},
		},
		{
			name: "wait while backing off a permanent failure: the failure at once",
			setup: func(m *machine) {
				m.st.get(m.now(), asker)
				m.fetchErr(permanentErr{})
			},
			do: func(m *machine) effects { return m.st.wait(m.now(), newWait()) },
			check: func(t *testing.T, m *machine, e effects) {
				if e.reply == nil || !tokenmanager.IsPermanent(e.reply.Err) || m.waits() != 0 {
					t.Errorf("reply %v, waits %d; want the permanent failure, nobody queued", e.reply, m.waits())
				}
			},
		},
		{
			name: "fetched token (timer policy): cached, everyone answered, refresh timer armed",
			setup: func(m *machine) {
				m.st.get(m.now(), asker)
				m.st.wait(m.now(), newWait())
			},
			do: func(m *machine) effects { return m.fetchOK("a", 60) },
			check: func(t *testing.T, m *machine, e effects) {
				if e.answer == nil || e.answer.Token.AccessToken != "a" || len(e.askers) != 1 || len(e.waits) != 1 {
					t.Errorf("answer %v to %d askers, %d waits; want token a to 1 and 1", e.answer, len(e.askers), len(e.waits))
				}
				if e.arm != refreshTimer || e.armIn != 50*time.Second || e.armSeq != m.st.cache.gen {
					t.Errorf("arm %v in %v (seq %d); want the refresh timer in 50s for gen %d", e.arm, e.armIn, e.armSeq, m.st.cache.gen)
				}
				if s := m.st.h.Snapshot(); s == nil || s.Token.AccessToken != "a" || s.RefreshAt != 0 {
					t.Errorf("published %+v; want token a without RefreshAt", s)
				}
				if ev, ok := e.events[0].(messages.TokenRefreshed); !ok || ev.Reason != messages.ReasonColdStart {
					t.Errorf("event %#v; want TokenRefreshed (cold start)", e.events[0])
				}
				if m.askers()+m.waits() != 0 || m.st.fetch.running {
					t.Error("waiters kept or fetch still running after the token came")
				}
			},
		},
		{
			name: "fetched token (on-use policy): RefreshAt on the snapshot, no timer, header made",
			pol:  hostedPolicy,
			setup: func(m *machine) {
				m.st.get(m.now(), asker)
			},
			do: func(m *machine) effects { return m.fetchOK("a", 60) },
			check: func(t *testing.T, m *machine, e effects) {
				s := m.st.h.Snapshot()
				if e.arm != noTimer || s == nil || s.RefreshAt != m.now().Add(50*time.Second).UnixNano() || s.Header != "Bearer a" {
					t.Errorf("arm %v, snapshot %+v; want no timer, RefreshAt in 50s, header Bearer a", e.arm, s)
				}
			},
		},
		{
			name:  "fetched, stale id: ignored",
			setup: func(m *machine) { m.st.get(m.now(), asker) },
			do: func(m *machine) effects {
				return m.st.fetched(m.now(), &fetchDone{id: m.st.fetch.id - 1, token: tokenmanager.Token{AccessToken: "old"}})
			},
			check: func(t *testing.T, m *machine, e effects) {
				if e.answer != nil || m.st.cache.cur != nil || !m.st.fetch.running {
					t.Errorf("answer %v, cur %v, running %v; want nothing done", e.answer, m.st.cache.cur, m.st.fetch.running)
				}
			},
		},
		{
			name: "fetched, a token rejected while it ran: not cached, fetched anew",
			setup: func(m *machine) {
				m.cached("a", 60)
				m.mock.Add(time.Minute) // a expired
				m.st.wait(m.now(), newWait())
			},
			do: func(m *machine) effects {
				m.st.cache.cur = &link.Snapshot{Token: tokenmanager.Token{AccessToken: "b"}}
				m.st.invalidate(m.now(), "b", -1)
				return m.fetchOK("b", 60)
			},
			check: func(t *testing.T, m *machine, e effects) {
				if m.st.cache.cur != nil || !e.fetch || e.answer != nil || (m.st.drops != nil && len(m.st.drops.rejected) != 0) {
					t.Errorf("cur %v, fetch %v, answer %v, drops %+v; want b refused and a new fetch", m.st.cache.cur, e.fetch, e.answer, m.st.drops)
				}
			},
		},
		{
			name: "fetched, transient failure: askers told, waits kept, retry armed",
			setup: func(m *machine) {
				m.st.get(m.now(), asker)
				m.st.wait(m.now(), newWait())
			},
			do: func(m *machine) effects { return m.fetchErr(boom) },
			check: func(t *testing.T, m *machine, e effects) {
				if e.answer == nil || len(e.askers) != 1 || len(e.waits) != 0 || m.waits() != 1 {
					t.Errorf("answer %v to %d askers and %d waits, %d waits kept; want 1, 0, 1", e.answer, len(e.askers), len(e.waits), m.waits())
				}
				if e.arm != retryTimer || e.armIn < 500*time.Millisecond || e.armIn > time.Second {
					t.Errorf("arm %v in %v; want a retry in [0.5s, 1s]", e.arm, e.armIn)
				}
				if ev, ok := e.events[0].(messages.TokenRequestFailed); !ok || ev.RetryIn != e.armIn || ev.ConsecutiveFailures != 1 {
					t.Errorf("event %#v; want TokenRequestFailed retrying in %v", e.events[0], e.armIn)
				}
				if !errors.Is(m.st.h.LastError(), boom) {
					t.Errorf("published last error %v; want boom", m.st.h.LastError())
				}
			},
		},
		{
			name: "fetched, failure, nobody waits: no retry timer",
			setup: func(m *machine) {
				m.st.get(m.now(), asker)
			},
			do: func(m *machine) effects { return m.fetchErr(boom) },
			check: func(t *testing.T, m *machine, e effects) {
				if e.arm != noTimer || m.st.fetch.retryArmed {
					t.Errorf("arm %v; want no timer for an idle state", e.arm)
				}
			},
		},
		{
			name: "fetched, permanent failure: waits told too",
			setup: func(m *machine) {
				m.st.wait(m.now(), newWait())
			},
			do: func(m *machine) effects { return m.fetchErr(permanentErr{}) },
			check: func(t *testing.T, m *machine, e effects) {
				if len(e.waits) != 1 || m.waits() != 0 || e.arm != noTimer {
					t.Errorf("%d waits told, %d kept, arm %v; want 1, 0, none", len(e.waits), m.waits(), e.arm)
				}
			},
		},
		{
			name: "fetched, the threshold-th failure: threshold event",
			setup: func(m *machine) {
				for range m.st.s.TokenTryThreshold - 1 {
					m.st.pushed(m.now(), messages.Refreshed{Err: boom})
				}
				m.mock.Add(time.Hour)
				m.st.get(m.now(), asker)
			},
			do: func(m *machine) effects { return m.fetchErr(boom) },
			check: func(t *testing.T, m *machine, e effects) {
				if ev, ok := e.events[1].(messages.TokenTryThresholdReached); !ok || ev.FailedTries != m.st.s.TokenTryThreshold {
					t.Errorf("second event %#v; want TokenTryThresholdReached", e.events[1])
				}
			},
		},
		{
			name:  "refresh tick of the generation: early refresh starts",
			setup: func(m *machine) { m.cached("a", 60) },
			do:    func(m *machine) effects { return m.st.refreshDue(m.now(), m.st.cache.gen) },
			check: func(t *testing.T, m *machine, e effects) {
				if !e.fetch || m.st.fetch.why.reason() != messages.ReasonEarlyRefresh || !m.st.cache.refreshDue {
					t.Errorf("fetch %v, why %v; want an early refresh", e.fetch, m.st.fetch.why)
				}
			},
		},
		{
			name:  "refresh tick of an older generation: ignored",
			setup: func(m *machine) { m.cached("a", 60) },
			do:    func(m *machine) effects { return m.st.refreshDue(m.now(), m.st.cache.gen-1) },
			check: func(t *testing.T, m *machine, e effects) {
				if e.fetch || m.st.cache.refreshDue {
					t.Error("a stale refresh tick started a fetch")
				}
			},
		},
		{
			name: "retry tick with a wait: fetch",
			setup: func(m *machine) {
				m.st.wait(m.now(), newWait())
				m.fetchErr(boom)
				m.mock.Add(time.Second)
			},
			do: func(m *machine) effects { return m.st.retryDue(m.now(), uint64(m.st.fetch.retrySeq)) },
			check: func(t *testing.T, m *machine, e effects) {
				if !e.fetch || m.st.fetch.retryArmed {
					t.Errorf("fetch %v, armed %v; want a fetch, no timer", e.fetch, m.st.fetch.retryArmed)
				}
			},
		},
		{
			name: "retry tick whose wait gave up: nothing",
			setup: func(m *machine) {
				ctx, cancel := context.WithCancel(context.Background())
				m.st.wait(m.now(), &protocol.Wait{Ctx: ctx, Reply: make(chan *messages.TokenResult, 1)})
				m.fetchErr(boom)
				cancel()
				m.mock.Add(time.Second)
			},
			do: func(m *machine) effects { return m.st.retryDue(m.now(), uint64(m.st.fetch.retrySeq)) },
			check: func(t *testing.T, m *machine, e effects) {
				if e.fetch || m.st.waiters != nil {
					t.Errorf("fetch %v, waiters %v; want no fetch and no buffer held", e.fetch, m.st.waiters)
				}
			},
		},
		{
			name:  "invalidate another token: nothing",
			setup: func(m *machine) { m.cached("a", 60) },
			do:    func(m *machine) effects { return m.st.invalidate(m.now(), "b", -1) },
			check: func(t *testing.T, m *machine, e effects) {
				if m.st.h.Snapshot() == nil || e.stopRefresh {
					t.Error("invalidating another token dropped the cached one")
				}
			},
		},
		{
			name:  "invalidate the cached token: dropped, refresh timer stopped",
			setup: func(m *machine) { m.cached("a", 60) },
			do:    func(m *machine) effects { return m.st.invalidate(m.now(), "a", -1) },
			check: func(t *testing.T, m *machine, e effects) {
				if m.st.h.Snapshot() != nil || m.st.drops == nil || m.st.drops.last != "a" || !e.stopRefresh || e.fetch {
					t.Errorf("snapshot %v, drops %+v, stop %v, fetch %v; want a dropped, timer stopped, no fetch", m.st.h.Snapshot(), m.st.drops, e.stopRefresh, e.fetch)
				}
			},
		},
		{
			name: "new tokens rejected on first use, eight in a row: hold",
			setup: func(m *machine) {
				for i := range 7 {
					m.cached(string(rune('a'+i)), 60)
					m.st.invalidate(m.now(), "", 0)
				}
				m.cached("h", 60)
			},
			do: func(m *machine) effects { return m.st.invalidate(m.now(), "h", 0) },
			check: func(t *testing.T, m *machine, e effects) {
				if !m.st.h.Streak() || !m.st.h.Holding(m.now()) {
					t.Errorf("streak %v, holding %v; want both", m.st.h.Streak(), m.st.h.Holding(m.now()))
				}
				m.st.endStreak()
				if m.st.h.Streak() || m.st.h.Holding(m.now()) {
					t.Error("endStreak left the streak or the hold")
				}
			},
		},
		{
			name: "pushed invalid token: PushRejected, cache kept",
			setup: func(m *machine) {
				m.cached("a", 60)
			},
			do: func(m *machine) effects { return m.st.pushed(m.now(), messages.Refreshed{Token: tokenmanager.Token{}}) },
			check: func(t *testing.T, m *machine, e effects) {
				if _, ok := e.events[0].(messages.PushRejected); !ok || m.st.h.Snapshot() == nil {
					t.Errorf("event %#v; want PushRejected and the cache kept", e.events[0])
				}
			},
		},
		{
			name:  "idle: a standalonePolicy state is never passivated",
			setup: func(m *machine) { m.cached("a", 60) },
			do:    func(m *machine) effects { return effects{} },
			check: func(t *testing.T, m *machine, e effects) {
				if m.st.idle(m.now().Add(time.Hour)) {
					t.Error("a standalonePolicy state agreed to passivate")
				}
			},
		},
		{
			name:  "idle: a hostedPolicy state with a wait stays",
			pol:   hostedPolicy,
			setup: func(m *machine) { m.st.wait(m.now(), newWait()) },
			do:    func(m *machine) effects { return effects{} },
			check: func(t *testing.T, m *machine, e effects) {
				if m.st.idle(m.now().Add(time.Hour)) {
					t.Error("a state with a wait agreed to passivate")
				}
			},
		},
		{
			name:  "idle: a hostedPolicy state unused since the cutoff goes",
			pol:   hostedPolicy,
			setup: func(m *machine) { m.cached("a", 60) },
			do:    func(m *machine) effects { return effects{} },
			check: func(t *testing.T, m *machine, e effects) {
				if !m.st.idle(m.now()) {
					t.Error("an unused hostedPolicy state refused to passivate")
				}
				if m.st.idle(m.now().Add(-time.Second)) {
					t.Error("a hostedPolicy state used after the cutoff agreed to passivate")
				}
			},
		},
		{
			name: "stop: everyone answered, timers stopped, snapshot withdrawn",
			setup: func(m *machine) {
				m.cached("a", 60)
				m.mock.Add(time.Minute)
				m.st.wait(m.now(), newWait())
			},
			do: func(m *machine) effects {
				return m.st.stop(&messages.TokenResult{Err: tokenmanager.ErrClosed})
			},
			check: func(t *testing.T, m *machine, e effects) {
				if len(e.waits) != 1 || !errors.Is(e.answer.Err, tokenmanager.ErrClosed) || m.st.h.Snapshot() != nil {
					t.Errorf("%d waits answered %v, snapshot %v; want 1 closed, none", len(e.waits), e.answer, m.st.h.Snapshot())
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMachine(tt.pol)
			if tt.setup != nil {
				tt.setup(m)
			}
			tt.check(t, m, tt.do(m))
		})
	}
}
