package observability

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/benbjohnson/clock"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/go-tokenmanager/tokenmanager/messages"
)

// Instrument names NewMetrics creates. They are stable.
const (
	// MetricEvents counts events, with attribute "event" (the event's
	// Name()) and, for token_refreshed, "reason".
	MetricEvents = "tokenmanager.events"
	// MetricFetchDuration is a histogram of successful token fetches'
	// durations, in seconds, with attribute "reason".
	MetricFetchDuration = "tokenmanager.token.fetch.duration"
	// MetricTimeToExpiry is a gauge of the seconds left until the current
	// token expires (negative once it has expired without a refresh). It
	// reports nothing before the first token, nor for a token without
	// expiry.
	MetricTimeToExpiry = "tokenmanager.token.time_to_expiry"
	// MetricConsecutiveFailures is a gauge of failed fetches since the last
	// success.
	MetricConsecutiveFailures = "tokenmanager.token.consecutive_failures"
)

// fetchBuckets suit token endpoints: a few milliseconds on a LAN to tens
// of seconds at the fetch timeout.
var fetchBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// MetricsOption configures [NewMetrics].
type MetricsOption interface {
	apply(*metricsConfig)
}

type metricsConfig struct {
	clock clock.Clock
	attrs []attribute.KeyValue
}

type metricsOptionFunc func(*metricsConfig)

func (f metricsOptionFunc) apply(c *metricsConfig) { f(c) }

// WithClock sets the clock the time-to-expiry gauge reads. Pass the same
// clock as Settings.Clock, since event expiry times are on that clock. If
// nil or not given, the real clock is used.
func WithClock(c clock.Clock) MetricsOption {
	return metricsOptionFunc(func(cfg *metricsConfig) { cfg.clock = c })
}

// WithAttributes adds attributes to every measurement, e.g. to tell apart
// the token managers of several identities sharing one meter:
// WithAttributes(attribute.String("identity", "billing")).
func WithAttributes(kv ...attribute.KeyValue) MetricsOption {
	return metricsOptionFunc(func(cfg *metricsConfig) { cfg.attrs = append(cfg.attrs, kv...) })
}

// Metrics records the token manager's events as OpenTelemetry metrics
// (see [MetricEvents] and its siblings). Feed it with
// rt.Subscribe(m.Handle). Use one Metrics per token manager (give each a
// distinguishing [WithAttributes]); the gauges follow the events of
// whichever manager feeds them. Metrics is safe for concurrent use.
type Metrics struct {
	clock  clock.Clock
	attrs  []attribute.KeyValue
	common metric.MeasurementOption

	events   metric.Int64Counter
	fetch    metric.Float64Histogram
	ttl      metric.Float64ObservableGauge
	failures metric.Int64ObservableGauge
	reg      metric.Registration

	mu        sync.Mutex // guards the fields below
	expiresAt time.Time  // zero: no token, or a token without expiry
	failed    int
	closed    bool
}

// NewMetrics creates the instruments on meter and returns a Metrics that
// records into them. Close unregisters its gauges' callback.
func NewMetrics(meter metric.Meter, opts ...MetricsOption) (*Metrics, error) {
	if meter == nil {
		return nil, errors.New("observability: NewMetrics needs a meter")
	}
	var cfg metricsConfig
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	if cfg.clock == nil {
		cfg.clock = clock.New()
	}
	m := &Metrics{clock: cfg.clock, attrs: cfg.attrs}
	m.common = metric.WithAttributeSet(attribute.NewSet(cfg.attrs...))
	var err error
	if m.events, err = meter.Int64Counter(MetricEvents,
		metric.WithDescription("Token manager events, by event name."),
		metric.WithUnit("{event}")); err != nil {
		return nil, fmt.Errorf("observability: creating %s: %w", MetricEvents, err)
	}
	if m.fetch, err = meter.Float64Histogram(MetricFetchDuration,
		metric.WithDescription("Duration of successful token fetches."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(fetchBuckets...)); err != nil {
		return nil, fmt.Errorf("observability: creating %s: %w", MetricFetchDuration, err)
	}
	if m.ttl, err = meter.Float64ObservableGauge(MetricTimeToExpiry,
		metric.WithDescription("Seconds until the current token expires."),
		metric.WithUnit("s")); err != nil {
		return nil, fmt.Errorf("observability: creating %s: %w", MetricTimeToExpiry, err)
	}
	if m.failures, err = meter.Int64ObservableGauge(MetricConsecutiveFailures,
		metric.WithDescription("Failed token fetches since the last success."),
		metric.WithUnit("{failure}")); err != nil {
		return nil, fmt.Errorf("observability: creating %s: %w", MetricConsecutiveFailures, err)
	}
	if m.reg, err = meter.RegisterCallback(m.observe, m.ttl, m.failures); err != nil {
		return nil, fmt.Errorf("observability: registering the gauge callback: %w", err)
	}
	return m, nil
}

// Handle records ev. Pass it to transport.RoundTripper.Subscribe. Events
// after Close are ignored.
func (m *Metrics) Handle(ev messages.Event) {
	if ev == nil {
		return
	}
	ctx := context.Background()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	switch e := ev.(type) {
	case messages.TokenRefreshed:
		m.expiresAt = e.ExpiresAt
		m.failed = 0
	case messages.TokenRequestFailed:
		m.failed = e.ConsecutiveFailures
	}
	m.mu.Unlock()

	attrs := append(append(make([]attribute.KeyValue, 0, len(m.attrs)+2), m.attrs...),
		attribute.String("event", ev.Name()))
	if e, ok := ev.(messages.TokenRefreshed); ok {
		reason := attribute.String("reason", string(e.Reason))
		attrs = append(attrs, reason)
		if e.Reason != messages.ReasonPushed {
			m.fetch.Record(ctx, e.FetchDuration.Seconds(),
				metric.WithAttributeSet(attribute.NewSet(append(append([]attribute.KeyValue(nil), m.attrs...), reason)...)))
		}
	}
	m.events.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(attrs...)))
}

// observe reports the gauges.
func (m *Metrics) observe(_ context.Context, o metric.Observer) error {
	m.mu.Lock()
	exp, failed := m.expiresAt, m.failed
	m.mu.Unlock()
	if !exp.IsZero() {
		o.ObserveFloat64(m.ttl, exp.Sub(m.clock.Now()).Seconds(), m.common)
	}
	o.ObserveInt64(m.failures, int64(failed), m.common)
	return nil
}

// Close unregisters the gauges' callback; later events are ignored. It is
// idempotent.
func (m *Metrics) Close() error {
	m.mu.Lock()
	already := m.closed
	m.closed = true
	m.mu.Unlock()
	if already {
		return nil
	}
	// Unregister outside m.mu: a collection in progress may be waiting in
	// observe for it.
	if err := m.reg.Unregister(); err != nil {
		return fmt.Errorf("observability: unregistering the gauge callback: %w", err)
	}
	return nil
}
