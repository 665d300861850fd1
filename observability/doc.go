// Package observability turns the token manager's events into structured
// logs ([SlogHandler]) and OpenTelemetry metrics ([NewMetrics]).
//
// Both plug into transport.RoundTripper.Subscribe:
//
//	rt.Subscribe(observability.SlogHandler(logger))
//	m, err := observability.NewMetrics(otel.Meter("myservice"))
//	rt.Subscribe(m.Handle)
//
// The same goes for a transport.MultiRoundTripper of many identities: log
// records then carry the identity, and [WithIdentityAttribute] puts it
// (or a bounded mapping of it) on the metrics.
//
// Neither ever logs or records an access token by itself: events carry a
// token fingerprint (tokenmanager.Fingerprint) for correlation. The one
// exception is each event's Message, which holds the access token when,
// and only when, Settings.AddTokenToLogs is set; SlogHandler logs Message
// as the "detail" attribute, so that setting is the user's explicit
// choice to put tokens in logs.
package observability
