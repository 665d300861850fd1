// Command observability shows the manager's events as slog records and
// OpenTelemetry metrics, against a token endpoint and an API it starts on
// 127.0.0.1. The token endpoint first answers 503 with Retry-After, then
// issues 2-second tokens; the API revokes every token once. Log records go
// to stdout as they happen; the metrics are printed at the end. It exits
// on its own after about five seconds.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/observability"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run() error {
	// A token endpoint that is down for its first request, then issues
	// 2-second tokens, and an API that knows which tokens are live.
	var (
		mu     sync.Mutex
		live   = map[string]time.Time{}
		asked  atomic.Int32
		revoke atomic.Bool
	)
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if asked.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		b := make([]byte, 16)
		rand.Read(b)
		tok := hex.EncodeToString(b)
		mu.Lock()
		live[tok] = time.Now().Add(2 * time.Second)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 2})
	}))
	defer idp.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		if revoke.CompareAndSwap(true, false) {
			clear(live)
		}
		exp, ok := live[tok]
		mu.Unlock()
		if !ok || time.Now().After(exp) {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer api.Close()

	// Logs: a text handler on stdout, without the time for readability.
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	// Metrics: an SDK meter provider with a manual reader, read at the end.
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())
	metrics, err := observability.NewMetrics(provider.Meter("examples/observability"))
	if err != nil {
		return err
	}
	defer metrics.Close()

	rt, err := transport.New(tokenmanager.Settings{
		GetCredentials: providers.ClientCredentials(providers.ClientCredentialsConfig{
			TokenURL: idp.URL, ClientID: "demo", ClientSecret: "demo-secret",
		}),
		RefreshBuffer: time.Second,
	})
	if err != nil {
		return err
	}
	defer rt.Close()
	defer rt.Subscribe(observability.SlogHandler(logger))()
	defer rt.Subscribe(metrics.Handle)()

	client := rt.Client()
	for i := 1; i <= 10; i++ {
		if i == 6 {
			fmt.Println("--- the API revokes every token")
			revoke.Store(true)
		}
		resp, err := client.Get(api.URL)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Printf("--- request %d: %s\n", i, resp.Status)
		time.Sleep(400 * time.Millisecond)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		return err
	}
	fmt.Println("--- metrics")
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			printMetric(m)
		}
	}
	return nil
}

func printMetric(m metricdata.Metrics) {
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		var lines []string
		for _, dp := range d.DataPoints {
			var attrs []string
			for _, kv := range dp.Attributes.ToSlice() {
				attrs = append(attrs, fmt.Sprintf("%s=%s", kv.Key, kv.Value.String()))
			}
			lines = append(lines, fmt.Sprintf("%s{%s} %d", m.Name, strings.Join(attrs, ","), dp.Value))
		}
		sort.Strings(lines)
		fmt.Println(strings.Join(lines, "\n"))
	case metricdata.Histogram[float64]:
		for _, dp := range d.DataPoints {
			reason, _ := dp.Attributes.Value("reason")
			fmt.Printf("%s{reason=%s} count=%d sum=%.4f%s\n", m.Name, reason.String(), dp.Count, dp.Sum, m.Unit)
		}
	case metricdata.Gauge[float64]:
		for _, dp := range d.DataPoints {
			fmt.Printf("%s %.2f%s\n", m.Name, dp.Value, m.Unit)
		}
	case metricdata.Gauge[int64]:
		for _, dp := range d.DataPoints {
			fmt.Printf("%s %d\n", m.Name, dp.Value)
		}
	}
}
