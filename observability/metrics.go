package observability

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/benbjohnson/clock"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/go-tokenmanager/tokenmanager/messages"
)

// Instrument names NewMetrics creates. They are stable.
const (
	// MetricEvents counts events, with attribute "event" (the event's
	// Name()); for token_refreshed and cluster_fallback, "reason"; for identity_passivated,
	// "evicted" (a bool); and, with [WithIdentityAttribute], "identity".
	MetricEvents = "tokenmanager.events"
	// MetricFetchDuration is a histogram of successful token fetches'
	// durations, in seconds, with attribute "reason" and, with
	// [WithIdentityAttribute], "identity".
	MetricFetchDuration = "tokenmanager.token.fetch.duration"
	// MetricTimeToExpiry is a gauge of the seconds left until the current
	// token expires. While the manager is live it goes negative once the
	// token has expired without a refresh, so alerts can fire on it. It
	// reports nothing before the first token, nor for a token without
	// expiry, and it stops at the manager's [messages.Closed] event (until
	// the next token_refreshed, if the Metrics is fed again). With
	// [WithIdentityAttribute] it reports one data point per identity
	// value (see [Metrics]).
	MetricTimeToExpiry = "tokenmanager.token.time_to_expiry"
	// MetricConsecutiveFailures is a gauge of failed fetches since the last
	// success. It stops at the manager's [messages.Closed] event (until
	// the next token_refreshed or token_request_failed, if the Metrics is
	// fed again). With [WithIdentityAttribute] it reports one data point
	// per identity value (see [Metrics]).
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
	clock      clock.Clock
	attrs      []attribute.KeyValue
	byIdentity bool                        // WithIdentityAttribute was given
	identityFn func(string) (string, bool) // nil: the identity as it is
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

// WithIdentityAttribute adds the attribute "identity" to the event counter
// and the fetch-duration histogram for events that name an identity (those
// of a manager of many identities: transport.MultiRoundTripper,
// actor.NewOwnerProps), and keeps the gauges per identity (see
// [Metrics]). Its value is what mapping returns for the event's identity;
// when mapping returns ok false, the event is recorded without the
// attribute and does not feed the gauges. A nil mapping uses the identity
// as it is. Events that name no identity (those of a single-identity
// manager, and [messages.Closed]) never get the attribute, and mapping is
// not called for them.
//
// Without this option no measurement carries the identity, so the number
// of time series stays bounded however many identities there are. Each
// distinct value is a time series of its own on every instrument, and
// identities may be unbounded (one per tenant, say): mapping is the way to
// bound the cardinality. Keep a fixed allow-list and drop the rest:
//
//	watched := map[string]bool{"billing": true, "payments": true}
//	observability.WithIdentityAttribute(func(id string) (string, bool) {
//		return id, watched[id]
//	})
//
// or collapse identities to a few values, such as a tenant tier:
//
//	observability.WithIdentityAttribute(func(id string) (string, bool) {
//		return tierOf(id), true // "free", "pro", "enterprise"
//	})
//
// mapping runs on every event, on the publisher's goroutine: it must be
// fast, safe for concurrent use and give the same answer for the same
// identity. The attribute replaces an "identity" given by [WithAttributes].
func WithIdentityAttribute(mapping func(identity string) (value string, ok bool)) MetricsOption {
	return metricsOptionFunc(func(cfg *metricsConfig) { cfg.byIdentity, cfg.identityFn = true, mapping })
}

// Metrics records the token manager's events as OpenTelemetry metrics
// (see [MetricEvents] and its siblings). Feed it with
// rt.Subscribe(m.Handle). Use one Metrics per token manager; the gauges
// follow the events of whichever manager feeds them. Several managers
// sharing a meter need one Metrics each, told apart by
// [WithAttributes](attribute.String("manager", "...")): without it their
// gauges would collapse into one data point and one manager's value would
// be lost, so [NewMetrics] refuses to create a second live Metrics with
// the same meter and attributes.
//
// A manager of many identities (transport.MultiRoundTripper) needs one
// Metrics in all. Without [WithIdentityAttribute] its gauges are one data
// point each, which follows whichever identity last reported (a fetch of
// one identity resets the failures of another): count token_request_failed
// and token_try_threshold_reached events in [MetricEvents] instead, or
// ignore the gauges. With [WithIdentityAttribute] the gauges report one
// data point per identity value, from the first token_refreshed or
// token_request_failed for it (identities mapped to the same value share
// it, and it follows whichever of them last reported); a value's point
// goes when every identity reporting under it is passivated
// ([messages.IdentityPassivated]). In either case, when an identity is
// passivated, a shared point forgets the values it gave (time to expiry
// stops until the next token; failures go to 0), so it never fires an
// expiry alert for a token nobody holds any more.
//
// When the manager publishes [messages.Closed], the gauges stop reporting
// (every data point goes); they report again when a later token_refreshed
// or token_request_failed arrives (a closed manager never reopens, but the
// Metrics may be fed by another one). Metrics is safe for concurrent use.
type Metrics struct {
	clock      clock.Clock
	attrs      []attribute.KeyValue
	common     metric.MeasurementOption
	byIdentity bool
	identityFn func(string) (string, bool)

	events   metric.Int64Counter
	fetch    metric.Float64Histogram
	ttl      metric.Float64ObservableGauge
	failures metric.Int64ObservableGauge
	reg      metric.Registration

	key        registryKey // valid when registered
	registered bool        // m is in registry under key

	mu     sync.Mutex               // guards the fields below
	gauges map[gaugeKey]*gaugeState // the gauges' data points; none after a messages.Closed
	idents map[string]gaugeKey      // identity -> the data point it reports under
	closed bool                     // Close was called
}

// gaugeKey names a gauge data point: the identity attribute's value, if
// it has one.
type gaugeKey struct {
	value string
	has   bool
}

// gaugeState is one gauge data point.
type gaugeState struct {
	set       metric.MeasurementOption // the data point's attributes
	expiresAt time.Time                // zero: no token, or a token without expiry
	failed    int
	idents    int    // identities in Metrics.idents reporting here
	tokenOf   string // the identity whose token expiresAt is
	failedOf  string // the identity whose failures failed counts
}

// registryKey identifies the gauge data points a Metrics reports: the
// same meter and the same attribute set collide.
type registryKey struct {
	meter metric.Meter
	attrs attribute.Distinct
}

// registry holds the live (not Closed) Metrics by the data points they
// report, so that NewMetrics can refuse a colliding one.
var (
	registryMu sync.Mutex
	registry   = map[registryKey]*Metrics{}
)

// register adds m to registry under key unless a live Metrics is there.
func (m *Metrics) register(meter metric.Meter, set attribute.Set) error {
	// The meter is part of a map key, which panics for a value that cannot
	// be compared. reflect.Value.Comparable checks the dynamic value (a
	// struct with an interface field holding a slice, say), which is
	// stricter than reflect.TypeOf(meter).Comparable(). A meter that is not
	// comparable cannot be told apart from another one, so the collision
	// check is skipped for it. A noop meter records nothing, so nothing
	// can be lost; all noop.Meter values are equal, so it is skipped too.
	if !reflect.TypeOf(meter).Comparable() || !reflect.ValueOf(meter).Comparable() {
		return nil
	}
	if _, ok := meter.(noop.Meter); ok {
		return nil
	}
	key := registryKey{meter: meter, attrs: set.Equivalent()}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, ok := registry[key]; ok {
		return fmt.Errorf("observability: a live Metrics already reports on this meter with attributes {%s}, "+
			"so the two would share gauge data points and one manager's values would be lost; "+
			"give each manager a distinguishing WithAttributes(attribute.String(\"manager\", \"...\")) "+
			"(or \"identity\"), or Close the other Metrics first",
			set.Encoded(attribute.DefaultEncoder()))
	}
	registry[key] = m
	m.key, m.registered = key, true
	return nil
}

// unregister removes m from registry.
func (m *Metrics) unregister() {
	if !m.registered {
		return
	}
	registryMu.Lock()
	if registry[m.key] == m {
		delete(registry, m.key)
	}
	registryMu.Unlock()
}

// NewMetrics creates the instruments on meter and returns a Metrics that
// records into them. Close unregisters its gauges' callback.
//
// NewMetrics returns an error if a live Metrics (one not yet Closed)
// already exists for the same meter with the same attributes (in any
// order): the two would report the same gauge data points and one
// manager's values would be lost. Give each manager's Metrics a
// distinguishing [WithAttributes], e.g. attribute.String("manager",
// "billing"), or Close the old Metrics first. The check needs a
// comparable meter (every meter of the OpenTelemetry SDK and of the
// otel global is); it is skipped for a meter that is not, and for a
// noop.Meter, which records nothing.
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
	m := &Metrics{clock: cfg.clock, attrs: cfg.attrs, byIdentity: cfg.byIdentity, identityFn: cfg.identityFn,
		gauges: map[gaugeKey]*gaugeState{}, idents: map[string]gaugeKey{}}
	set := attribute.NewSet(cfg.attrs...)
	m.common = metric.WithAttributeSet(set)
	if !m.byIdentity {
		m.gauges[gaugeKey{}] = &gaugeState{set: m.common} // reports from the start
	}
	if err := m.register(meter, set); err != nil {
		return nil, err
	}
	if err := m.create(meter); err != nil {
		m.unregister()
		return nil, err
	}
	return m, nil
}

// create creates m's instruments on meter and registers the gauges'
// callback.
func (m *Metrics) create(meter metric.Meter) error {
	var err error
	if m.events, err = meter.Int64Counter(MetricEvents,
		metric.WithDescription("Token manager events, by event name."),
		metric.WithUnit("{event}")); err != nil {
		return fmt.Errorf("observability: creating %s: %w", MetricEvents, err)
	}
	if m.fetch, err = meter.Float64Histogram(MetricFetchDuration,
		metric.WithDescription("Duration of successful token fetches."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(fetchBuckets...)); err != nil {
		return fmt.Errorf("observability: creating %s: %w", MetricFetchDuration, err)
	}
	if m.ttl, err = meter.Float64ObservableGauge(MetricTimeToExpiry,
		metric.WithDescription("Seconds until the current token expires."),
		metric.WithUnit("s")); err != nil {
		return fmt.Errorf("observability: creating %s: %w", MetricTimeToExpiry, err)
	}
	if m.failures, err = meter.Int64ObservableGauge(MetricConsecutiveFailures,
		metric.WithDescription("Failed token fetches since the last success."),
		metric.WithUnit("{failure}")); err != nil {
		return fmt.Errorf("observability: creating %s: %w", MetricConsecutiveFailures, err)
	}
	if m.reg, err = meter.RegisterCallback(m.observe, m.ttl, m.failures); err != nil {
		return fmt.Errorf("observability: registering the gauge callback: %w", err)
	}
	return nil
}

// Handle records ev. Pass it to transport.RoundTripper.Subscribe (or
// MultiRoundTripper's). Events after Close are ignored. A
// [messages.Closed] is counted like any other event and stops the gauges
// until the next token_refreshed (both gauges) or token_request_failed
// (consecutive failures only; time to expiry waits for a token). A
// [messages.IdentityPassivated] is counted too and, with
// [WithIdentityAttribute], ends the identity's gauge data points.
func (m *Metrics) Handle(ev messages.Event) {
	if ev == nil {
		return
	}
	ctx := context.Background()
	id := messages.IdentityOf(ev)
	key, feeds := gaugeKey{}, true
	if m.byIdentity && id != "" {
		key.value, key.has = id, true
		if m.identityFn != nil {
			key.value, feeds = m.identityFn(id)
		}
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	switch e := ev.(type) {
	case messages.TokenRefreshed:
		if g := m.gauge(key, id, feeds); g != nil {
			g.expiresAt, g.failed, g.tokenOf, g.failedOf = e.ExpiresAt, 0, id, id
		}
	case messages.TokenRequestFailed:
		if g := m.gauge(key, id, feeds); g != nil {
			g.failed, g.failedOf = e.ConsecutiveFailures, id
		}
	case messages.IdentityPassivated:
		m.forget(e.Identity)
	case messages.Closed:
		// The manager is gone: its tokens' expiry and its failures mean
		// nothing any more (a time to expiry would go negative and fire
		// alerts). Forget them, so a later feed starts afresh.
		clear(m.gauges)
		clear(m.idents)
	}
	m.mu.Unlock()

	base := m.attrs
	if key.has && feeds {
		base = append(append(make([]attribute.KeyValue, 0, len(m.attrs)+1), m.attrs...), attribute.String("identity", key.value))
	}
	attrs := append(append(make([]attribute.KeyValue, 0, len(base)+2), base...),
		attribute.String("event", ev.Name()))
	switch e := ev.(type) {
	case messages.TokenRefreshed:
		reason := attribute.String("reason", string(e.Reason))
		attrs = append(attrs, reason)
		if e.Reason != messages.ReasonPushed {
			m.fetch.Record(ctx, e.FetchDuration.Seconds(),
				metric.WithAttributeSet(attribute.NewSet(append(append([]attribute.KeyValue(nil), base...), reason)...)))
		}
	case messages.IdentityPassivated:
		attrs = append(attrs, attribute.Bool("evicted", e.Evicted))
	case messages.ClusterFallback:
		attrs = append(attrs, attribute.String("reason", e.Reason))
	}
	m.events.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(attrs...)))
}

// gauge returns the data point an event of identity id feeds, under key,
// creating it; nil when feeds is false (mapping dropped the identity).
// m.mu must be held.
func (m *Metrics) gauge(key gaugeKey, id string, feeds bool) *gaugeState {
	if !feeds {
		return nil
	}
	if old, ok := m.idents[id]; ok && old != key && key.has {
		m.forget(id) // mapping changed its answer
	}
	g := m.gauges[key]
	if g == nil {
		g = &gaugeState{set: m.common}
		if key.has {
			g.set = metric.WithAttributeSet(attribute.NewSet(append(append([]attribute.KeyValue(nil), m.attrs...),
				attribute.String("identity", key.value))...))
		}
		m.gauges[key] = g
	}
	if _, ok := m.idents[id]; !ok && key.has {
		m.idents[id] = key
		g.idents++
	}
	return g
}

// forget drops passivated identity id from the gauges: the data point it
// reported under goes once no other identity reports there; a point that
// others share forgets the values id gave it (the time to expiry of its
// token would go negative with nobody to refresh it). m.mu must be held.
func (m *Metrics) forget(id string) {
	if id == "" {
		return
	}
	key, ok := m.idents[id] // not held: the point without identity
	delete(m.idents, id)
	g := m.gauges[key]
	if g == nil {
		return
	}
	if ok {
		if g.idents--; g.idents <= 0 {
			delete(m.gauges, key)
			return
		}
	}
	if g.tokenOf == id {
		g.expiresAt, g.tokenOf = time.Time{}, ""
	}
	if g.failedOf == id {
		g.failed, g.failedOf = 0, ""
	}
}

// observe reports the gauges.
func (m *Metrics) observe(_ context.Context, o metric.Observer) error {
	m.mu.Lock()
	points := make([]gaugeState, 0, len(m.gauges))
	if !m.closed {
		for _, g := range m.gauges {
			points = append(points, *g)
		}
	}
	m.mu.Unlock()
	now := m.clock.Now()
	for _, p := range points {
		if !p.expiresAt.IsZero() {
			o.ObserveFloat64(m.ttl, p.expiresAt.Sub(now).Seconds(), p.set)
		}
		o.ObserveInt64(m.failures, int64(p.failed), p.set)
	}
	return nil
}

// Close unregisters the gauges' callback; later events are ignored. It
// also frees m's meter and attributes for a new Metrics (see
// [NewMetrics]). It is idempotent.
func (m *Metrics) Close() error {
	m.mu.Lock()
	already := m.closed
	m.closed = true
	m.mu.Unlock()
	if already {
		return nil
	}
	m.unregister()
	// Unregister outside m.mu: a collection in progress may be waiting in
	// observe for it.
	if err := m.reg.Unregister(); err != nil {
		return fmt.Errorf("observability: unregistering the gauge callback: %w", err)
	}
	return nil
}
