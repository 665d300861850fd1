package observability_test

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"go.opentelemetry.io/otel/attribute"
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
