package observability_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/benbjohnson/clock"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/observability"
)

func ExampleSlogHandler() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		// Drop the time so the output is the same on every run.
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	log := observability.SlogHandler(logger)
	// In a program: defer rt.Subscribe(log)()

	log(messages.TokenRefreshed{
		Reason:        messages.ReasonColdStart,
		ExpiresAt:     time.Date(2030, 1, 1, 13, 0, 0, 0, time.UTC),
		FetchDuration: 84 * time.Millisecond,
		Fingerprint:   "9f86d081884c7d65",
	})
	log(messages.AuthFailed{Status: 401, Host: "api.example.com", Fingerprint: "9f86d081884c7d65"})
	log(messages.RecoveryAborted{Attempts: 5, Status: 401})
	// Output:
	// level=INFO msg="token refreshed" event=token_refreshed reason=cold_start expires_at=2030-01-01T13:00:00.000Z fetch_duration=84ms fingerprint=9f86d081884c7d65
	// level=WARN msg="token rejected" event=auth_failed status=401 host=api.example.com fingerprint=9f86d081884c7d65
	// level=ERROR msg="recovery aborted" event=recovery_aborted attempts=5 status=401
}

func ExampleNewMetrics() {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())

	clk := clock.NewMock() // the same clock as Settings.Clock
	m, err := observability.NewMetrics(provider.Meter("example"), observability.WithClock(clk))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	// In a program: defer rt.Subscribe(m.Handle)()

	m.Handle(messages.TokenRefreshed{Reason: messages.ReasonColdStart, ExpiresAt: clk.Now().Add(time.Hour), FetchDuration: 250 * time.Millisecond})
	m.Handle(messages.AuthFailed{Status: 401})
	clk.Add(15 * time.Minute)

	var rm metricdata.ResourceMetrics
	reader.Collect(context.Background(), &rm)
	for _, sm := range rm.ScopeMetrics {
		for _, metric := range sm.Metrics {
			switch d := metric.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					ev, _ := dp.Attributes.Value("event")
					fmt.Printf("%s{event=%s} %d\n", metric.Name, ev.AsString(), dp.Value)
				}
			case metricdata.Histogram[float64]:
				fmt.Printf("%s count=%d sum=%gs\n", metric.Name, d.DataPoints[0].Count, d.DataPoints[0].Sum)
			case metricdata.Gauge[float64]:
				fmt.Printf("%s %gs\n", metric.Name, d.DataPoints[0].Value)
			case metricdata.Gauge[int64]:
				fmt.Printf("%s %d\n", metric.Name, d.DataPoints[0].Value)
			}
		}
	}
	// Unordered output:
	// tokenmanager.events{event=token_refreshed} 1
	// tokenmanager.events{event=auth_failed} 1
	// tokenmanager.token.fetch.duration count=1 sum=0.25s
	// tokenmanager.token.time_to_expiry 2700s
	// tokenmanager.token.consecutive_failures 0
}
