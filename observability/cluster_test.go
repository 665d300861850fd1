package observability_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/go-tokenmanager/tokenmanager/observability"
)

func TestClusterMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, err := observability.NewClusterMetrics(mp.Meter("test"), logger,
		observability.WithAttributes(attribute.String("service", "orders")),
		observability.WithIdentityAttribute(func(id string) (string, bool) { return "tenant:" + id, true }))
	if err != nil {
		t.Fatal(err)
	}
	m.GrainAsked("a", true, 2*time.Millisecond, "token")
	m.GrainAsked("a", false, 30*time.Millisecond, "token")
	m.GrainAsked("a", false, time.Millisecond, "pending")
	m.FellBack("a", "unreachable")
	m.FellBack("a", "unreachable")
	m.GrainMoved("a")
	m.Refused("a", "stale_config")

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{} // name{attrs} → value (histograms: count)
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			switch d := mt.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					got[mt.Name+"{"+dp.Attributes.Encoded(attribute.DefaultEncoder())+"}"] = dp.Value
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					got[mt.Name+"{"+dp.Attributes.Encoded(attribute.DefaultEncoder())+"}"] = int64(dp.Count)
				}
			default:
				t.Errorf("%s is %T", mt.Name, mt.Data)
			}
		}
	}
	want := map[string]int64{
		observability.MetricGrainAsks + "{identity=tenant:a,location=local,outcome=token,service=orders}":           1,
		observability.MetricGrainAsks + "{identity=tenant:a,location=remote,outcome=token,service=orders}":          1,
		observability.MetricGrainAsks + "{identity=tenant:a,location=remote,outcome=pending,service=orders}":        1,
		observability.MetricGrainAskDuration + "{identity=tenant:a,location=local,outcome=token,service=orders}":    1,
		observability.MetricGrainAskDuration + "{identity=tenant:a,location=remote,outcome=token,service=orders}":   1,
		observability.MetricGrainAskDuration + "{identity=tenant:a,location=remote,outcome=pending,service=orders}": 1,
		observability.MetricFallbacks + "{identity=tenant:a,reason=unreachable,service=orders}":                     2,
		observability.MetricGrainMoves + "{identity=tenant:a,service=orders}":                                       1,
		observability.MetricRefusals + "{identity=tenant:a,reason=stale_config,service=orders}":                     1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d; want %d", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d series, want %d: %v", len(got), len(want), got)
	}
	for _, line := range []string{
		`level=WARN msg="tokenmanager: cluster fallback" identity=a reason=unreachable`,
		`level=INFO msg="tokenmanager: grain moved" identity=a`,
		`level=WARN msg="tokenmanager: grain refused a member" identity=a reason=stale_config`,
		`level=DEBUG msg="tokenmanager: grain asked" identity=a location=remote outcome=token took=30ms`,
	} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("logs lack %q:\n%s", line, logs.String())
		}
	}
}

func TestClusterMetrics_noLoggerNoIdentity(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	m, err := observability.NewClusterMetrics(mp.Meter("test"), nil)
	if err != nil {
		t.Fatal(err)
	}
	m.FellBack("secret-free-identity", "insecure")
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			for _, dp := range mt.Data.(metricdata.Sum[int64]).DataPoints {
				if _, ok := dp.Attributes.Value(observability.KeyIdentity); ok {
					t.Errorf("%s carries the identity without WithIdentityAttribute", mt.Name)
				}
			}
		}
	}
	if _, err := observability.NewClusterMetrics(nil, nil); err == nil {
		t.Error("NewClusterMetrics(nil) did not fail")
	}
}
