package observability_test

import (
	"context"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/observability"
)

type harness struct {
	reader *sdkmetric.ManualReader
	clock  *clock.Mock
	m      *observability.Metrics
}

func newHarness(t *testing.T, opts ...observability.MetricsOption) *harness {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	mock := clock.NewMock()
	m, err := observability.NewMetrics(mp.Meter("test"), append([]observability.MetricsOption{observability.WithClock(mock)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() }) // before the provider's Shutdown
	return &harness{reader: reader, clock: mock, m: m}
}

// collect returns the collected metrics by name.
func (h *harness) collect(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// counts returns the event counter's values keyed by "event/reason".
func counts(t *testing.T, ms map[string]metricdata.Metrics) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	m, ok := ms[observability.MetricEvents]
	if !ok {
		return out
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok || !sum.IsMonotonic {
		t.Fatalf("%s is %T; want a monotonic Sum[int64]", m.Name, m.Data)
	}
	for _, dp := range sum.DataPoints {
		ev, _ := dp.Attributes.Value("event")
		key := ev.AsString()
		if r, ok := dp.Attributes.Value("reason"); ok {
			key += "/" + r.AsString()
		}
		out[key] = dp.Value
	}
	return out
}

// gauge returns a gauge's single value, or false when it reported none.
func gauge[N int64 | float64](t *testing.T, ms map[string]metricdata.Metrics, name string) (N, bool) {
	t.Helper()
	m, ok := ms[name]
	if !ok {
		return 0, false
	}
	g, ok := m.Data.(metricdata.Gauge[N])
	if !ok {
		t.Fatalf("%s is %T; want a Gauge", name, m.Data)
	}
	if len(g.DataPoints) != 1 {
		if len(g.DataPoints) == 0 {
			return 0, false
		}
		t.Fatalf("%s has %d data points; want 1", name, len(g.DataPoints))
	}
	return g.DataPoints[0].Value, true
}

func TestMetrics(t *testing.T) {
	h := newHarness(t)
	ms := h.collect(t)
	if _, ok := gauge[float64](t, ms, observability.MetricTimeToExpiry); ok {
		t.Error("time to expiry reported before any token")
	}
	if v, ok := gauge[int64](t, ms, observability.MetricConsecutiveFailures); !ok || v != 0 {
		t.Errorf("consecutive failures = %v, %v; want 0", v, ok)
	}

	now := h.clock.Now()
	h.m.Handle(messages.TokenRefreshed{Reason: messages.ReasonColdStart, ExpiresAt: now.Add(time.Hour), FetchDuration: 150 * time.Millisecond})
	h.m.Handle(messages.AuthFailed{Status: 401})
	h.m.Handle(messages.TokenRequestFailed{ConsecutiveFailures: 1})
	h.m.Handle(messages.TokenRequestFailed{ConsecutiveFailures: 2})

	ms = h.collect(t)
	if v, _ := gauge[int64](t, ms, observability.MetricConsecutiveFailures); v != 2 {
		t.Errorf("consecutive failures = %d; want 2", v)
	}
	h.clock.Add(10 * time.Minute)
	h.m.Handle(messages.TokenRefreshed{Reason: messages.ReasonInvalidated, ExpiresAt: h.clock.Now().Add(30 * time.Minute), FetchDuration: 50 * time.Millisecond})
	h.m.Handle(messages.RecoveryTried{Attempt: 1})
	h.m.Handle(messages.TokenRefreshed{Reason: messages.ReasonPushed, ExpiresAt: h.clock.Now().Add(30 * time.Minute)})
	h.m.Handle(messages.TokenTryThresholdReached{FailedTries: 10})
	h.m.Handle(messages.RecoveryAborted{Attempts: 5, Status: 401})
	h.m.Handle(nil)
	h.clock.Add(5 * time.Minute)

	ms = h.collect(t)
	want := map[string]int64{
		"token_refreshed/cold_start":  1,
		"token_refreshed/invalidated": 1,
		"token_refreshed/pushed":      1,
		"auth_failed":                 1,
		"token_request_failed":        2,
		"recovery_tried":              1,
		"token_try_threshold_reached": 1,
		"recovery_aborted":            1,
	}
	got := counts(t, ms)
	if len(got) != len(want) {
		t.Errorf("counts = %v; want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("count %s = %d; want %d", k, got[k], w)
		}
	}

	hist, ok := ms[observability.MetricFetchDuration].Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s is %T; want a Histogram", observability.MetricFetchDuration, ms[observability.MetricFetchDuration].Data)
	}
	if unit := ms[observability.MetricFetchDuration].Unit; unit != "s" {
		t.Errorf("fetch duration unit = %q; want s", unit)
	}
	var n uint64
	var sum float64
	for _, dp := range hist.DataPoints {
		n += dp.Count
		sum += dp.Sum
	}
	if n != 2 || math.Abs(sum-0.2) > 1e-9 {
		t.Errorf("fetch durations: count %d sum %v; want 2 fetches (the pushed token is not one) totalling 0.2s", n, sum)
	}

	if v, _ := gauge[float64](t, ms, observability.MetricTimeToExpiry); v != 25*60 {
		t.Errorf("time to expiry = %v; want 1500 (30m token, 5m later)", v)
	}
	if v, _ := gauge[int64](t, ms, observability.MetricConsecutiveFailures); v != 0 {
		t.Errorf("consecutive failures = %d; want 0 after a refresh", v)
	}

	// Past expiry the gauge goes negative, so alerts can fire on it.
	h.clock.Add(40 * time.Minute)
	if v, _ := gauge[float64](t, h.collect(t), observability.MetricTimeToExpiry); v != -15*60 {
		t.Errorf("time to expiry = %v; want -900", v)
	}

	// A token without expiry: no time to expiry.
	h.m.Handle(messages.TokenRefreshed{Reason: messages.ReasonExpired})
	if v, ok := gauge[float64](t, h.collect(t), observability.MetricTimeToExpiry); ok {
		t.Errorf("time to expiry = %v for a token without expiry; want none", v)
	}
}

func TestMetrics_withAttributes(t *testing.T) {
	h := newHarness(t, observability.WithAttributes(attribute.String("identity", "billing")))
	h.m.Handle(messages.TokenRefreshed{Reason: messages.ReasonColdStart, ExpiresAt: h.clock.Now().Add(time.Minute), FetchDuration: time.Millisecond})
	for name, m := range h.collect(t) {
		var sets []attribute.Set
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			for _, dp := range d.DataPoints {
				sets = append(sets, dp.Attributes)
			}
		case metricdata.Histogram[float64]:
			for _, dp := range d.DataPoints {
				sets = append(sets, dp.Attributes)
			}
		case metricdata.Gauge[float64]:
			for _, dp := range d.DataPoints {
				sets = append(sets, dp.Attributes)
			}
		case metricdata.Gauge[int64]:
			for _, dp := range d.DataPoints {
				sets = append(sets, dp.Attributes)
			}
		}
		if len(sets) == 0 {
			t.Errorf("%s has no data points", name)
		}
		for _, s := range sets {
			if v, ok := s.Value("identity"); !ok || v.AsString() != "billing" {
				t.Errorf("%s data point %v lacks identity=billing", name, s.ToSlice())
			}
		}
	}
}

func TestMetrics_Close(t *testing.T) {
	h := newHarness(t)
	h.m.Handle(messages.TokenRefreshed{Reason: messages.ReasonColdStart, ExpiresAt: h.clock.Now().Add(time.Minute)})
	if err := h.m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Close(); err != nil {
		t.Errorf("second Close = %v; want nil", err)
	}
	h.m.Handle(messages.AuthFailed{Status: 401})
	ms := h.collect(t)
	if _, ok := gauge[float64](t, ms, observability.MetricTimeToExpiry); ok {
		t.Error("time to expiry still reported after Close")
	}
	if got := counts(t, ms); got["auth_failed"] != 0 {
		t.Errorf("counts after Close = %v; want no auth_failed", got)
	}
}

func TestNewMetrics_nilMeter(t *testing.T) {
	if _, err := observability.NewMetrics(nil); err == nil {
		t.Error("NewMetrics(nil) = nil error; want one")
	}
}

func TestMetrics_concurrent(t *testing.T) {
	h := newHarness(t)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				h.m.Handle(messages.TokenRefreshed{Reason: messages.ReasonEarlyRefresh, ExpiresAt: h.clock.Now().Add(time.Hour)})
				h.m.Handle(messages.TokenRequestFailed{ConsecutiveFailures: j})
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for j := 0; j < 20; j++ {
			var rm metricdata.ResourceMetrics
			h.reader.Collect(context.Background(), &rm)
		}
	}()
	wg.Wait()
	if got := counts(t, h.collect(t)); got["token_refreshed/early_refresh"] != 800 || got["token_request_failed"] != 800 {
		t.Errorf("counts = %v; want 800 of each", got)
	}
}

// TestMetrics_closedStopsGauges: once the manager is closed its gauges
// stop, rather than time to expiry going negative and firing alerts.
func TestMetrics_closedStopsGauges(t *testing.T) {
	h := newHarness(t)
	h.m.Handle(messages.TokenRefreshed{Reason: messages.ReasonColdStart, ExpiresAt: h.clock.Now().Add(time.Minute)})
	h.m.Handle(messages.TokenRequestFailed{ConsecutiveFailures: 2})
	h.m.Handle(messages.Closed{})
	h.clock.Add(time.Hour) // long past the token's expiry

	ms := h.collect(t)
	if v, ok := gauge[float64](t, ms, observability.MetricTimeToExpiry); ok {
		t.Errorf("time to expiry = %v after closed; want none", v)
	}
	if v, ok := gauge[int64](t, ms, observability.MetricConsecutiveFailures); ok {
		t.Errorf("consecutive failures = %v after closed; want none", v)
	}
	if got := counts(t, ms); got["closed"] != 1 {
		t.Errorf("counts = %v; want closed counted once", got)
	}
	// Other events do not bring the gauges back.
	h.m.Handle(messages.AuthFailed{Status: 401})
	h.m.Handle(messages.Closed{})
	ms = h.collect(t)
	if _, ok := gauge[float64](t, ms, observability.MetricTimeToExpiry); ok {
		t.Error("time to expiry reported after closed and auth_failed")
	}
	if _, ok := gauge[int64](t, ms, observability.MetricConsecutiveFailures); ok {
		t.Error("consecutive failures reported after closed and auth_failed")
	}

	// Fed again: a failed fetch brings back the failures, not the old
	// token's expiry; a new token brings back both.
	h.m.Handle(messages.TokenRequestFailed{ConsecutiveFailures: 1})
	ms = h.collect(t)
	if v, ok := gauge[int64](t, ms, observability.MetricConsecutiveFailures); !ok || v != 1 {
		t.Errorf("consecutive failures = %v, %v after re-feeding; want 1", v, ok)
	}
	if v, ok := gauge[float64](t, ms, observability.MetricTimeToExpiry); ok {
		t.Errorf("time to expiry = %v before a new token; want none", v)
	}
	h.m.Handle(messages.TokenRefreshed{Reason: messages.ReasonColdStart, ExpiresAt: h.clock.Now().Add(time.Minute)})
	ms = h.collect(t)
	if v, ok := gauge[float64](t, ms, observability.MetricTimeToExpiry); !ok || v != 60 {
		t.Errorf("time to expiry = %v, %v after a new token; want 60", v, ok)
	}
	if v, ok := gauge[int64](t, ms, observability.MetricConsecutiveFailures); !ok || v != 0 {
		t.Errorf("consecutive failures = %v, %v after a new token; want 0", v, ok)
	}
}

// newProvider returns a meter provider with a manual reader.
func newProvider(t *testing.T) (*sdkmetric.MeterProvider, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	return mp, reader
}

// newMetrics is NewMetrics, closed at the end of the test.
func newMetrics(t *testing.T, meter metric.Meter, opts ...observability.MetricsOption) (*observability.Metrics, error) {
	t.Helper()
	m, err := observability.NewMetrics(meter, opts...)
	if err == nil {
		t.Cleanup(func() { m.Close() })
	}
	return m, err
}

// gaugePoints returns a gauge's values keyed by the "manager" attribute.
func gaugePoints[N int64 | float64](t *testing.T, reader *sdkmetric.ManualReader, name string) map[string]N {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]N{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			g, ok := m.Data.(metricdata.Gauge[N])
			if !ok {
				t.Fatalf("%s is %T; want a Gauge", name, m.Data)
			}
			for _, dp := range g.DataPoints {
				v, _ := dp.Attributes.Value("manager")
				if _, dup := out[v.AsString()]; dup {
					t.Errorf("%s has two data points for manager=%q", name, v.AsString())
				}
				out[v.AsString()] = dp.Value
			}
		}
	}
	return out
}

// TestNewMetrics_collision: a second live Metrics on the same meter with
// the same attributes would share gauge points with the first, so
// NewMetrics refuses it, and says how to tell them apart.
func TestNewMetrics_collision(t *testing.T) {
	mp, reader := newProvider(t)
	meter := mp.Meter("test")
	if _, err := newMetrics(t, meter); err != nil {
		t.Fatal(err)
	}
	_, err := newMetrics(t, meter)
	if err == nil {
		t.Fatal("second NewMetrics on the same meter without attributes = nil error; want one")
	}
	if msg := err.Error(); !strings.Contains(msg, "WithAttributes") || !strings.Contains(msg, `"manager"`) {
		t.Errorf("error %q does not say to give a distinguishing WithAttributes", msg)
	}
	if got := gaugePoints[int64](t, reader, observability.MetricConsecutiveFailures); len(got) != 1 {
		t.Errorf("consecutive failures points = %v; want 1 (the refused Metrics reports none)", got)
	}

	// The same attributes in another order are the same set.
	kv := []attribute.KeyValue{attribute.String("manager", "a"), attribute.String("region", "eu")}
	if _, err := newMetrics(t, meter, observability.WithAttributes(kv...)); err != nil {
		t.Fatal(err)
	}
	if _, err := newMetrics(t, meter, observability.WithAttributes(kv[1], kv[0])); err == nil {
		t.Error("NewMetrics with the same attributes in another order = nil error; want one")
	}

	// Another meter (another scope, or another provider) does not collide.
	if _, err := newMetrics(t, mp.Meter("other")); err != nil {
		t.Errorf("NewMetrics on another meter: %v", err)
	}
	mp2, _ := newProvider(t)
	if _, err := newMetrics(t, mp2.Meter("test")); err != nil {
		t.Errorf("NewMetrics on another provider: %v", err)
	}

	// Unchecked: a noop meter, which records nothing, and meters that
	// cannot be compared (no panic either).
	for name, meter := range map[string]metric.Meter{
		"noop":                          noop.NewMeterProvider().Meter("test"),
		"non-comparable type":           sliceMeter{Meter: mp.Meter("slice")},
		"non-comparable value in field": anyMeter{Meter: mp.Meter("any"), v: []int{}},
	} {
		for i := 0; i < 2; i++ {
			if _, err := newMetrics(t, meter); err != nil {
				t.Errorf("NewMetrics #%d on a %s meter: %v", i+1, name, err)
			}
		}
	}
}

// sliceMeter is a meter whose type is not comparable.
type sliceMeter struct {
	metric.Meter
	_ []int
}

// anyMeter is a meter whose type is comparable but whose value may not be.
type anyMeter struct {
	metric.Meter
	v any
}

// TestNewMetrics_distinctAttributes: Metrics on one meter told apart by
// attributes coexist, each with its own gauge points.
func TestNewMetrics_distinctAttributes(t *testing.T) {
	mp, reader := newProvider(t)
	meter := mp.Meter("test")
	mock := clock.NewMock()
	a, err := newMetrics(t, meter, observability.WithClock(mock), observability.WithAttributes(attribute.String("manager", "a")))
	if err != nil {
		t.Fatal(err)
	}
	b, err := newMetrics(t, meter, observability.WithClock(mock), observability.WithAttributes(attribute.String("manager", "b")))
	if err != nil {
		t.Fatal(err)
	}
	a.Handle(messages.TokenRefreshed{Reason: messages.ReasonColdStart, ExpiresAt: mock.Now().Add(time.Minute)})
	b.Handle(messages.TokenRefreshed{Reason: messages.ReasonColdStart, ExpiresAt: mock.Now().Add(time.Hour)})
	b.Handle(messages.TokenRequestFailed{ConsecutiveFailures: 3})

	ttl := gaugePoints[float64](t, reader, observability.MetricTimeToExpiry)
	if len(ttl) != 2 || ttl["a"] != 60 || ttl["b"] != 3600 {
		t.Errorf("time to expiry points = %v; want a:60 b:3600", ttl)
	}
	failures := gaugePoints[int64](t, reader, observability.MetricConsecutiveFailures)
	if len(failures) != 2 || failures["a"] != 0 || failures["b"] != 3 {
		t.Errorf("consecutive failures points = %v; want a:0 b:3", failures)
	}

	// A third with either's attributes would collide.
	if _, err := newMetrics(t, meter, observability.WithAttributes(attribute.String("manager", "b"))); err == nil {
		t.Error("NewMetrics with manager=b again = nil error; want one")
	}
}

// TestNewMetrics_afterClose: Close frees the meter and attributes for a
// new Metrics.
func TestNewMetrics_afterClose(t *testing.T) {
	mp, reader := newProvider(t)
	meter := mp.Meter("test")
	first, err := newMetrics(t, meter)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newMetrics(t, meter); err == nil {
		t.Fatal("second NewMetrics while the first is live = nil error; want one")
	}
	// A closed manager (the event) leaves the Metrics live: it may be fed again.
	first.Handle(messages.Closed{})
	if _, err := newMetrics(t, meter); err == nil {
		t.Fatal("NewMetrics after the first saw a closed event = nil error; want one until it is Closed")
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err := newMetrics(t, meter)
	if err != nil {
		t.Fatalf("NewMetrics after Close of the first: %v", err)
	}
	second.Handle(messages.TokenRequestFailed{ConsecutiveFailures: 4})
	if got := gaugePoints[int64](t, reader, observability.MetricConsecutiveFailures); len(got) != 1 || got[""] != 4 {
		t.Errorf("consecutive failures points = %v; want only the second Metrics' 4", got)
	}
	// Closing the first again does not free the second's entry.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := newMetrics(t, meter); err == nil {
		t.Error("NewMetrics while the second is live = nil error; want one")
	}
}
