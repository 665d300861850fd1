package observability

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Instrument names NewClusterMetrics creates, for a member of a token
// cluster (package tokengrain). They are stable.
const (
	// MetricGrainAsks counts a member's asks of identities' token grains
	// that got an answer, with attributes "location" ("local": the grain
	// was on this member, "remote") and "outcome" ("token", "pending",
	// "error", "refused").
	MetricGrainAsks = "tokenmanager.cluster.grain.asks"
	// MetricGrainAskDuration is a histogram of those asks' durations, in
	// seconds, with the same attributes.
	MetricGrainAskDuration = "tokenmanager.cluster.grain.ask.duration"
	// MetricFallbacks counts a member's direct fetches because the
	// cluster did not serve it, with attribute "reason" ("unreachable",
	// "insecure", "refused", "short_lived").
	MetricFallbacks = "tokenmanager.cluster.fallbacks"
	// MetricGrainMoves counts the times an identity's grain answered a
	// member from another member than the time before (as this member
	// saw it: each member asking counts the move once).
	MetricGrainMoves = "tokenmanager.cluster.grain.moves"
	// MetricRefusals counts a grain's refusals of members, on the grain's
	// member, with attribute "reason" ("stale_config": the member's
	// settings fingerprint differs; "insecure_remote").
	MetricRefusals = "tokenmanager.cluster.refusals"
)

// Attribute keys ClusterMetrics uses, on instruments and log records,
// besides [KeyIdentity] and [KeyReason].
const (
	KeyLocation = "location" // where the grain answered from: "local" or "remote"
	KeyOutcome  = "outcome"  // what the grain answered: "token", "pending", "error" or "refused"
	KeyTook     = "took"     // how long the ask took
)

// askBuckets suit asks of a grain: tens of microseconds on the same
// member to the member's ask bound (750ms by default).
var askBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// ClusterMetrics records a token cluster member's figures as
// OpenTelemetry instruments (MetricGrainAsks and its siblings) and, with
// a logger, as slog records: a fallback or a refusal at Warn (message
// "tokenmanager: cluster fallback" / "tokenmanager: grain refused a
// member", attributes identity and reason), a grain move at Info
// ("tokenmanager: grain moved", identity), each ask at Debug
// ("tokenmanager: grain asked", identity, location, outcome, took). It
// implements tokengrain.Recorder: pass it as tokengrain.Options.Metrics
// and KindOptions.Metrics. Identities go on instruments only with
// [WithIdentityAttribute] (and as it maps them); log records always carry
// them. It is safe for concurrent use.
type ClusterMetrics struct {
	logger     *slog.Logger
	common     []attribute.KeyValue
	identityFn func(string) (string, bool)
	byIdentity bool

	asks      metric.Int64Counter
	askTime   metric.Float64Histogram
	fallbacks metric.Int64Counter
	moves     metric.Int64Counter
	refusals  metric.Int64Counter
}

// NewClusterMetrics creates the instruments on meter. logger receives
// the records described at [ClusterMetrics]; nil means none. Of opts,
// [WithAttributes] and [WithIdentityAttribute] apply.
func NewClusterMetrics(meter metric.Meter, logger *slog.Logger, opts ...MetricsOption) (*ClusterMetrics, error) {
	if meter == nil {
		return nil, errors.New("observability: NewClusterMetrics needs a meter")
	}
	var cfg metricsConfig
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	m := &ClusterMetrics{logger: logger, common: cfg.attrs, identityFn: cfg.identityFn, byIdentity: cfg.byIdentity}
	var err error
	if m.asks, err = meter.Int64Counter(MetricGrainAsks,
		metric.WithDescription("Asks of token grains that got an answer, by location and outcome."),
		metric.WithUnit("{ask}")); err != nil {
		return nil, fmt.Errorf("observability: creating %s: %w", MetricGrainAsks, err)
	}
	if m.askTime, err = meter.Float64Histogram(MetricGrainAskDuration,
		metric.WithDescription("Duration of asks of token grains."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(askBuckets...)); err != nil {
		return nil, fmt.Errorf("observability: creating %s: %w", MetricGrainAskDuration, err)
	}
	if m.fallbacks, err = meter.Int64Counter(MetricFallbacks,
		metric.WithDescription("Direct token fetches because the cluster did not serve the member, by reason."),
		metric.WithUnit("{fetch}")); err != nil {
		return nil, fmt.Errorf("observability: creating %s: %w", MetricFallbacks, err)
	}
	if m.moves, err = meter.Int64Counter(MetricGrainMoves,
		metric.WithDescription("Token grains seen answering from another member than before."),
		metric.WithUnit("{move}")); err != nil {
		return nil, fmt.Errorf("observability: creating %s: %w", MetricGrainMoves, err)
	}
	if m.refusals, err = meter.Int64Counter(MetricRefusals,
		metric.WithDescription("Members refused by a token grain, by reason."),
		metric.WithUnit("{refusal}")); err != nil {
		return nil, fmt.Errorf("observability: creating %s: %w", MetricRefusals, err)
	}
	return m, nil
}

// attrs returns the instruments' attributes: the common ones, the
// identity's (with WithIdentityAttribute), and kv.
func (m *ClusterMetrics) attrs(identity string, kv ...attribute.KeyValue) metric.MeasurementOption {
	out := append([]attribute.KeyValue(nil), m.common...)
	if m.byIdentity && identity != "" {
		v, ok := identity, true
		if m.identityFn != nil {
			v, ok = m.identityFn(identity)
		}
		if ok {
			out = append(out, attribute.String(KeyIdentity, v))
		}
	}
	return metric.WithAttributes(append(out, kv...)...)
}

func (m *ClusterMetrics) log(level slog.Level, msg string, attrs ...slog.Attr) {
	if m.logger == nil || !m.logger.Enabled(context.Background(), level) {
		return
	}
	m.logger.LogAttrs(context.Background(), level, msg, attrs...)
}

func location(local bool) string {
	if local {
		return "local"
	}
	return "remote"
}

// GrainAsked records an ask of identity's grain that got an answer.
func (m *ClusterMetrics) GrainAsked(identity string, local bool, took time.Duration, outcome string) {
	ctx := context.Background()
	opt := m.attrs(identity, attribute.String(KeyLocation, location(local)), attribute.String(KeyOutcome, outcome))
	m.asks.Add(ctx, 1, opt)
	m.askTime.Record(ctx, took.Seconds(), opt)
	m.log(slog.LevelDebug, "tokenmanager: grain asked", slog.String(KeyIdentity, identity),
		slog.String(KeyLocation, location(local)), slog.String(KeyOutcome, outcome), slog.Duration(KeyTook, took))
}

// FellBack records a direct fetch because the cluster did not serve the
// member.
func (m *ClusterMetrics) FellBack(identity, reason string) {
	m.fallbacks.Add(context.Background(), 1, m.attrs(identity, attribute.String(KeyReason, reason)))
	m.log(slog.LevelWarn, "tokenmanager: cluster fallback", slog.String(KeyIdentity, identity), slog.String(KeyReason, reason))
}

// GrainMoved records that identity's grain answered from another member
// than before.
func (m *ClusterMetrics) GrainMoved(identity string) {
	m.moves.Add(context.Background(), 1, m.attrs(identity))
	m.log(slog.LevelInfo, "tokenmanager: grain moved", slog.String(KeyIdentity, identity))
}

// Refused records a grain refusing a member.
func (m *ClusterMetrics) Refused(identity, reason string) {
	m.refusals.Add(context.Background(), 1, m.attrs(identity, attribute.String(KeyReason, reason)))
	m.log(slog.LevelWarn, "tokenmanager: grain refused a member", slog.String(KeyIdentity, identity), slog.String(KeyReason, reason))
}
