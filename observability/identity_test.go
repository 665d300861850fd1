package observability_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/observability"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// identityEvents has one event of every type that names an identity, each
// for identity id.
func identityEvents(id string) []messages.Event {
	return []messages.Event{
		messages.TokenRefreshed{Identity: id, Reason: messages.ReasonColdStart, Fingerprint: "ff"},
		messages.AuthFailed{Identity: id, Status: 401},
		messages.TokenRequestFailed{Identity: id, ConsecutiveFailures: 1},
		messages.RecoveryTried{Identity: id, Attempt: 1},
		messages.TokenTryThresholdReached{Identity: id, FailedTries: 10},
		messages.RecoveryAborted{Identity: id, Attempts: 1, Status: 401},
		messages.PushRejected{Identity: id, Err: errors.New("empty")},
		messages.IdentityPassivated{Identity: id},
		messages.ClusterFallback{Identity: id, Reason: "unreachable", Err: errors.New("no answer")},
	}
}

// TestAttrs_identity: every event naming an identity logs it second,
// right after the event name; an empty identity logs nothing, so
// single-identity records are unchanged.
func TestAttrs_identity(t *testing.T) {
	for _, ev := range identityEvents("tenant-42") {
		attrs := observability.Attrs(ev)
		if len(attrs) < 2 || attrs[1].Key != observability.KeyIdentity || attrs[1].Value.String() != "tenant-42" {
			t.Errorf("Attrs(%#v) = %v; want %s=tenant-42 second", ev, attrs, observability.KeyIdentity)
		}
		if got := logged(t, ev)["identity"]; got != "tenant-42" {
			t.Errorf("%s record: identity = %v; want tenant-42", ev.Name(), got)
		}
	}
	for _, ev := range append(identityEvents(""), messages.Closed{}) {
		for _, a := range observability.Attrs(ev) {
			if a.Key == observability.KeyIdentity {
				t.Errorf("Attrs(%#v) has %s=%q; want none for an empty identity", ev, a.Key, a.Value)
			}
		}
	}
}

// TestSlogHandler_identityPassivated: a passivated identity is an Info
// record with its identity and whether it was evicted.
func TestSlogHandler_identityPassivated(t *testing.T) {
	for _, evicted := range []bool{false, true} {
		ev := messages.IdentityPassivated{Identity: "tenant-7", Evicted: evicted}
		want := map[string]any{"level": "INFO", "msg": "identity passivated", "event": "identity_passivated",
			"identity": "tenant-7", "evicted": evicted}
		got := logged(t, ev)
		if len(got) != len(want) {
			t.Errorf("got %v; want %v", got, want)
		}
		for k, w := range want {
			if got[k] != w {
				t.Errorf("evicted=%v: %s = %v (%T); want %v (%T)", evicted, k, got[k], got[k], w, w)
			}
		}
		if got := observability.Level(ev); got != slog.LevelInfo {
			t.Errorf("Level = %v; want INFO", got)
		}
		var keys []string
		for _, a := range observability.Attrs(ev) {
			keys = append(keys, a.Key)
			if a.Key == observability.KeyEvicted && (a.Value.Kind() != slog.KindBool || a.Value.Bool() != evicted) {
				t.Errorf("%s = %v; want bool %v", a.Key, a.Value, evicted)
			}
		}
		if got := strings.Join(keys, ","); got != "event,identity,evicted" {
			t.Errorf("keys = %s; want event,identity,evicted", got)
		}
	}
}

// point is one data point of any instrument, by its attributes.
type point struct {
	attrs  attribute.Set
	value  float64 // a sum's or gauge's value; a histogram's count
	metric string
}

// points returns every data point collected from reader.
func points(t *testing.T, reader *sdkmetric.ManualReader) []point {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var out []point
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					out = append(out, point{dp.Attributes, float64(dp.Value), m.Name})
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					out = append(out, point{dp.Attributes, float64(dp.Count), m.Name})
				}
			case metricdata.Gauge[float64]:
				for _, dp := range d.DataPoints {
					out = append(out, point{dp.Attributes, dp.Value, m.Name})
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					out = append(out, point{dp.Attributes, float64(dp.Value), m.Name})
				}
			}
		}
	}
	return out
}

// byKey returns one metric's values keyed by "attr1=v1,attr2=v2" of the
// given attributes, "-" for an absent one.
func byKey(ps []point, metric string, keys ...string) map[string]float64 {
	out := map[string]float64{}
	for _, p := range ps {
		if p.metric != metric {
			continue
		}
		var parts []string
		for _, k := range keys {
			v := "-"
			if a, ok := p.attrs.Value(attribute.Key(k)); ok {
				v = a.String()
			}
			parts = append(parts, v)
		}
		out[strings.Join(parts, ",")] += p.value
	}
	return out
}

func equalMaps(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestMetrics_identityOffByDefault: without WithIdentityAttribute no
// measurement carries an identity, however many there are; a passivated
// identity is counted with whether it was evicted.
func TestMetrics_identityOffByDefault(t *testing.T) {
	h := newHarness(t)
	for _, id := range []string{"a", "b", "c"} {
		for _, ev := range identityEvents(id) {
			h.m.Handle(ev)
		}
	}
	h.m.Handle(messages.IdentityPassivated{Identity: "a", Evicted: true})
	ps := points(t, h.reader)
	for _, p := range ps {
		if _, ok := p.attrs.Value("identity"); ok {
			t.Errorf("%s point %v has an identity; want none by default", p.metric, p.attrs.ToSlice())
		}
	}
	got := byKey(ps, observability.MetricEvents, "event", "evicted")
	if got["identity_passivated,false"] != 3 || got["identity_passivated,true"] != 1 || got["auth_failed,-"] != 3 {
		t.Errorf("events = %v; want 3 identity_passivated not evicted, 1 evicted, 3 auth_failed", got)
	}
	if got := byKey(ps, observability.MetricEvents, "event", "reason"); got["cluster_fallback,unreachable"] != 3 {
		t.Errorf("events = %v; want 3 cluster_fallback with reason unreachable", got)
	}
}

// TestSlogHandler_clusterFallback: a member's direct fetch is a Warn
// record with the identity, the reason and the cluster's error.
func TestSlogHandler_clusterFallback(t *testing.T) {
	ev := messages.ClusterFallback{Identity: "tenant-7", Reason: "refused", Err: errors.New("settings differ")}
	want := map[string]any{"level": "WARN", "msg": "cluster fallback: fetched directly", "event": "cluster_fallback",
		"identity": "tenant-7", "reason": "refused", "error": "settings differ"}
	got := logged(t, ev)
	if len(got) != len(want) {
		t.Errorf("got %v; want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %v; want %v", k, got[k], w)
		}
	}
}

// TestMetrics_sharedGaugeForgetsPassivated: without the identity
// attribute the gauges are one data point, following whichever identity
// reported last; when that identity is passivated the point forgets its
// values, so time to expiry does not go negative for a forgotten token.
func TestMetrics_sharedGaugeForgetsPassivated(t *testing.T) {
	h := newHarness(t)
	gauges := func() (ttl, failures map[string]float64) {
		ps := points(t, h.reader)
		return byKey(ps, observability.MetricTimeToExpiry, "identity"), byKey(ps, observability.MetricConsecutiveFailures, "identity")
	}
	now := h.clock.Now()
	h.m.Handle(messages.TokenRefreshed{Identity: "a", Reason: messages.ReasonColdStart, ExpiresAt: now.Add(time.Minute)})
	h.m.Handle(messages.TokenRequestFailed{Identity: "b", ConsecutiveFailures: 3})
	ttl, failures := gauges()
	if !equalMaps(ttl, map[string]float64{"-": 60}) || !equalMaps(failures, map[string]float64{"-": 3}) {
		t.Errorf("time to expiry %v, failures %v; want a's 60 and b's 3, one point each", ttl, failures)
	}
	h.m.Handle(messages.IdentityPassivated{Identity: "c"}) // gave nothing: no change
	h.m.Handle(messages.IdentityPassivated{Identity: "a"})
	ttl, failures = gauges()
	if len(ttl) != 0 || !equalMaps(failures, map[string]float64{"-": 3}) {
		t.Errorf("after a is passivated: time to expiry %v, failures %v; want none and b's 3", ttl, failures)
	}
	h.m.Handle(messages.IdentityPassivated{Identity: "b", Evicted: true})
	ttl, failures = gauges()
	if len(ttl) != 0 || !equalMaps(failures, map[string]float64{"-": 0}) {
		t.Errorf("after b is passivated: time to expiry %v, failures %v; want none and 0", ttl, failures)
	}
	h.m.Handle(messages.TokenRefreshed{Identity: "c", Reason: messages.ReasonColdStart, ExpiresAt: now.Add(time.Hour)})
	if ttl, _ = gauges(); !equalMaps(ttl, map[string]float64{"-": 3600}) {
		t.Errorf("after c's token: time to expiry %v; want 3600", ttl)
	}
}

// TestMetrics_identityAttribute: WithIdentityAttribute(nil) records the
// identity as it is on the counter and the histogram, and not for events
// that name none.
func TestMetrics_identityAttribute(t *testing.T) {
	h := newHarness(t, observability.WithIdentityAttribute(nil),
		observability.WithAttributes(attribute.String("service", "api")))
	for _, id := range []string{"a", "b"} {
		for _, ev := range identityEvents(id) {
			h.m.Handle(ev)
		}
	}
	h.m.Handle(messages.TokenRefreshed{Identity: "a", Reason: messages.ReasonEarlyRefresh, FetchDuration: time.Millisecond})
	h.m.Handle(messages.TokenRefreshed{Reason: messages.ReasonColdStart, FetchDuration: time.Millisecond}) // single identity
	h.m.Handle(messages.Closed{})

	ps := points(t, h.reader)
	for _, p := range ps {
		if v, ok := p.attrs.Value("service"); !ok || v.AsString() != "api" {
			t.Errorf("%s point %v lacks service=api", p.metric, p.attrs.ToSlice())
		}
	}
	events := byKey(ps, observability.MetricEvents, "event", "identity")
	for _, id := range []string{"a", "b"} {
		for _, ev := range identityEvents(id) {
			if events[ev.Name()+","+id] < 1 {
				t.Errorf("no %s count for identity %s in %v", ev.Name(), id, events)
			}
		}
	}
	if events["token_refreshed,a"] != 2 || events["token_refreshed,-"] != 1 || events["closed,-"] != 1 {
		t.Errorf("events = %v; want token_refreshed a:2, without identity:1, closed without identity:1", events)
	}
	fetch := byKey(ps, observability.MetricFetchDuration, "identity", "reason")
	want := map[string]float64{"a,cold_start": 1, "a,early_refresh": 1, "b,cold_start": 1, "-,cold_start": 1}
	if !equalMaps(fetch, want) {
		t.Errorf("fetch durations = %v; want %v", fetch, want)
	}
}

// TestMetrics_identityGauges: with the identity attribute the gauges keep
// one data point per identity, which goes when the identity is passivated;
// a closed manager ends them all.
func TestMetrics_identityGauges(t *testing.T) {
	h := newHarness(t, observability.WithIdentityAttribute(nil))
	ttl := func() map[string]float64 {
		return byKey(points(t, h.reader), observability.MetricTimeToExpiry, "identity")
	}
	failures := func() map[string]float64 {
		return byKey(points(t, h.reader), observability.MetricConsecutiveFailures, "identity")
	}
	if got := failures(); len(got) != 0 {
		t.Errorf("consecutive failures before any identity = %v; want no point", got)
	}

	now := h.clock.Now()
	h.m.Handle(messages.TokenRefreshed{Identity: "a", Reason: messages.ReasonColdStart, ExpiresAt: now.Add(time.Minute)})
	h.m.Handle(messages.TokenRefreshed{Identity: "b", Reason: messages.ReasonColdStart, ExpiresAt: now.Add(time.Hour)})
	h.m.Handle(messages.TokenRequestFailed{Identity: "b", ConsecutiveFailures: 3})
	h.m.Handle(messages.AuthFailed{Identity: "c", Status: 401}) // no gauge point of its own
	h.m.Handle(messages.TokenRequestFailed{Identity: "d", ConsecutiveFailures: 1})

	if got, want := ttl(), map[string]float64{"a": 60, "b": 3600}; !equalMaps(got, want) {
		t.Errorf("time to expiry = %v; want %v", got, want)
	}
	if got, want := failures(), map[string]float64{"a": 0, "b": 3, "d": 1}; !equalMaps(got, want) {
		t.Errorf("consecutive failures = %v; want %v (b's failure does not touch a)", got, want)
	}

	// A refresh of a resets a alone.
	h.m.Handle(messages.TokenRequestFailed{Identity: "a", ConsecutiveFailures: 2})
	h.m.Handle(messages.TokenRefreshed{Identity: "a", Reason: messages.ReasonExpired, ExpiresAt: now.Add(2 * time.Minute)})
	if got, want := failures(), map[string]float64{"a": 0, "b": 3, "d": 1}; !equalMaps(got, want) {
		t.Errorf("consecutive failures = %v; want %v", got, want)
	}

	h.m.Handle(messages.IdentityPassivated{Identity: "a"})
	h.m.Handle(messages.IdentityPassivated{Identity: "c", Evicted: true}) // had no point
	if got, want := ttl(), map[string]float64{"b": 3600}; !equalMaps(got, want) {
		t.Errorf("time to expiry after a is passivated = %v; want %v", got, want)
	}
	if got, want := failures(), map[string]float64{"b": 3, "d": 1}; !equalMaps(got, want) {
		t.Errorf("consecutive failures after a is passivated = %v; want %v", got, want)
	}

	// A passivated identity used again reports again.
	h.m.Handle(messages.TokenRefreshed{Identity: "a", Reason: messages.ReasonColdStart, ExpiresAt: now.Add(time.Minute)})
	if got, want := ttl(), map[string]float64{"a": 60, "b": 3600}; !equalMaps(got, want) {
		t.Errorf("time to expiry after a's return = %v; want %v", got, want)
	}

	h.m.Handle(messages.Closed{})
	if got := ttl(); len(got) != 0 {
		t.Errorf("time to expiry after closed = %v; want no point", got)
	}
	if got := failures(); len(got) != 0 {
		t.Errorf("consecutive failures after closed = %v; want no point", got)
	}
	h.m.Handle(messages.TokenRequestFailed{Identity: "b", ConsecutiveFailures: 1})
	if got, want := failures(), map[string]float64{"b": 1}; !equalMaps(got, want) {
		t.Errorf("consecutive failures fed again = %v; want %v", got, want)
	}
}

// TestMetrics_identityMapping: the mapping bounds the values; identities
// mapped to one value share its gauge point until the last of them is
// passivated, and dropped ones are counted without the attribute and feed
// no gauge.
func TestMetrics_identityMapping(t *testing.T) {
	tiers := map[string]string{"acme": "enterprise", "globex": "enterprise", "initech": "free"}
	var mu sync.Mutex
	var asked []string
	h := newHarness(t, observability.WithIdentityAttribute(func(id string) (string, bool) {
		mu.Lock()
		asked = append(asked, id)
		mu.Unlock()
		tier, ok := tiers[id]
		return tier, ok
	}))
	now := h.clock.Now()
	h.m.Handle(messages.TokenRefreshed{Identity: "acme", Reason: messages.ReasonColdStart, ExpiresAt: now.Add(time.Minute)})
	h.m.Handle(messages.TokenRefreshed{Identity: "globex", Reason: messages.ReasonColdStart, ExpiresAt: now.Add(time.Hour)})
	h.m.Handle(messages.TokenRequestFailed{Identity: "initech", ConsecutiveFailures: 2})
	h.m.Handle(messages.TokenRequestFailed{Identity: "unknown-tenant", ConsecutiveFailures: 9})
	h.m.Handle(messages.AuthFailed{Identity: "unknown-tenant", Status: 401})
	h.m.Handle(messages.AuthFailed{Status: 401}) // names no identity: mapping not asked

	ps := points(t, h.reader)
	events := byKey(ps, observability.MetricEvents, "event", "identity")
	want := map[string]float64{"token_refreshed,enterprise": 2, "token_request_failed,free": 1,
		"token_request_failed,-": 1, "auth_failed,-": 2}
	if !equalMaps(events, want) {
		t.Errorf("events = %v; want %v", events, want)
	}
	// The enterprise point follows globex, which reported last.
	if got, want := byKey(ps, observability.MetricTimeToExpiry, "identity"), map[string]float64{"enterprise": 3600}; !equalMaps(got, want) {
		t.Errorf("time to expiry = %v; want %v", got, want)
	}
	if got, want := byKey(ps, observability.MetricConsecutiveFailures, "identity"), map[string]float64{"enterprise": 0, "free": 2}; !equalMaps(got, want) {
		t.Errorf("consecutive failures = %v; want %v (the dropped identity feeds none)", got, want)
	}
	mu.Lock()
	for _, id := range asked {
		if id == "" {
			t.Error("mapping was asked about an empty identity")
		}
	}
	mu.Unlock()

	// enterprise stays while acme is held, but forgets globex's token.
	h.m.Handle(messages.IdentityPassivated{Identity: "globex"})
	h.m.Handle(messages.IdentityPassivated{Identity: "unknown-tenant"})
	ps = points(t, h.reader)
	if got, want := byKey(ps, observability.MetricConsecutiveFailures, "identity"),
		map[string]float64{"enterprise": 0, "free": 2}; !equalMaps(got, want) {
		t.Errorf("consecutive failures after globex is passivated = %v; want %v", got, want)
	}
	if got := byKey(ps, observability.MetricTimeToExpiry, "identity"); len(got) != 0 {
		t.Errorf("time to expiry after globex is passivated = %v; want none until acme's next token", got)
	}
	h.m.Handle(messages.IdentityPassivated{Identity: "acme", Evicted: true})
	ps = points(t, h.reader)
	if got, want := byKey(ps, observability.MetricConsecutiveFailures, "identity"), map[string]float64{"free": 2}; !equalMaps(got, want) {
		t.Errorf("consecutive failures after acme is passivated too = %v; want %v", got, want)
	}
	events = byKey(ps, observability.MetricEvents, "event", "identity", "evicted")
	if events["identity_passivated,enterprise,true"] != 1 || events["identity_passivated,enterprise,false"] != 1 ||
		events["identity_passivated,-,false"] != 1 {
		t.Errorf("events = %v; want identity_passivated enterprise evicted:1 idle:1, without identity idle:1", events)
	}
}

// TestMetrics_multiRoundTripper feeds a Metrics from a real manager of
// many identities: each identity has its own gauge point until it is
// evicted.
func TestMetrics_multiRoundTripper(t *testing.T) {
	mock := clock.NewMock()
	rt, err := transport.NewMulti(tokenmanager.OwnerSettings{
		SettingsFor: func(id string) (tokenmanager.Settings, error) {
			return tokenmanager.Settings{
				GetCredentials: func(context.Context) (tokenmanager.Token, error) {
					return tokenmanager.Token{AccessToken: "at-" + id, ExpiresIn: 3600}, nil
				},
				Clock: mock,
			}, nil
		},
		MaxIdentities: 1,
		Clock:         mock,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()

	h := newHarness(t, observability.WithIdentityAttribute(nil))
	passivated := make(chan messages.IdentityPassivated, 1)
	refreshed := make(chan string, 2)
	defer rt.Subscribe(func(ev messages.Event) {
		h.m.Handle(ev)
		switch e := ev.(type) {
		case messages.IdentityPassivated:
			passivated <- e
		case messages.TokenRefreshed:
			refreshed <- e.Identity
		}
	})()

	wait := func(what string, ch <-chan string) string {
		t.Helper()
		select {
		case v := <-ch:
			return v
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s", what)
			return ""
		}
	}
	if _, err := rt.Token(context.Background(), "alpha"); err != nil {
		t.Fatal(err)
	}
	if got := wait("token_refreshed for alpha", refreshed); got != "alpha" {
		t.Fatalf("token_refreshed for %q; want alpha", got)
	}
	if got := byKey(points(t, h.reader), observability.MetricTimeToExpiry, "identity"); !equalMaps(got, map[string]float64{"alpha": 3600}) {
		t.Errorf("time to expiry = %v; want alpha:3600", got)
	}
	if _, err := rt.Token(context.Background(), "beta"); err != nil {
		t.Fatal(err)
	}
	if got := wait("token_refreshed for beta", refreshed); got != "beta" {
		t.Fatalf("token_refreshed for %q; want beta", got)
	}
	select {
	case e := <-passivated:
		if e.Identity != "alpha" || !e.Evicted {
			t.Fatalf("passivated %+v; want alpha evicted", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("alpha was not evicted")
	}
	ps := points(t, h.reader)
	if got := byKey(ps, observability.MetricTimeToExpiry, "identity"); !equalMaps(got, map[string]float64{"beta": 3600}) {
		t.Errorf("time to expiry = %v; want beta:3600 alone", got)
	}
	if got := byKey(ps, observability.MetricEvents, "event", "identity", "evicted"); got["identity_passivated,alpha,true"] != 1 {
		t.Errorf("events = %v; want alpha's eviction counted", got)
	}
}
