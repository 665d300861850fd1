// Package tokenmanager keeps an authentication token cached and fresh for
// outgoing HTTP requests.
//
// You give it a [TokenProvider], a function that fetches a token
// (access_token, expires_in). It caches the token for its lifetime, puts it
// in a header of every request it carries (Authorization: Bearer ... by
// default), and fetches the next one [Settings.RefreshBuffer] before the
// cached one expires, so a valid token is always at hand. When a response
// says the token was rejected (a status in [Settings.RefreshOnStatus], 401
// by default), the request's token is invalidated and the request resent
// with a fresh one, up to [Settings.MaxRecoveryTries] times per request.
//
// # The model
//
// One actor owns the token (package actor, on protoactor-go). It alone
// writes the token state: it answers messages.Get from its cache, starts at
// most one fetch at a time and queues everyone who asks meanwhile, runs the
// provider on a goroutine of its own so its mailbox never blocks, arms the
// early refresh on [Settings.Clock], and backs off exponentially, with
// jitter, after failed fetches, retrying only while someone needs a token.
// messages.Invalidate drops the cached token only if it is still the one
// that was rejected, so late rejections cannot throw away a newer token.
//
// After every change the actor publishes an immutable snapshot. The
// http.RoundTripper in package transport reads it with one atomic load, so
// a cached token costs a request no message and no lock; only a miss sends
// the actor a message and waits, bounded by the request's context.
//
// # Events
//
// What happens is told by events (package messages): TokenRefreshed,
// AuthFailed, TokenRequestFailed, RecoveryTried, TokenTryThresholdReached
// and RecoveryAborted, each matching one of the callbacks in [Settings].
// Subscribers (transport.RoundTripper.Subscribe) each get a bounded queue
// and a goroutine, so a slow or panicking subscriber stalls nothing. The
// access token appears in event messages only when
// [Settings.AddTokenToLogs] is set.
//
// # Many identities
//
// An owner (actor.NewOwnerProps, or transport.NewMulti for an
// http.RoundTripper) serves many identities — tenants, audiences, scopes —
// with one token state each, hosted by the owner (no actor per identity),
// started on first use with the settings
// [OwnerSettings.SettingsFor] returns, and passivated once idle for
// [OwnerSettings.IdleTimeout]. Requests name their identity in their
// context (transport.WithIdentity) or through a resolver. Identities share
// one event bus and hold no goroutine or timer of their own; a token
// nobody uses is not refreshed. Build identity keys from every parameter
// of the token request, and keep secrets out of them.
//
// # Beyond HTTP
//
// The same core serves other clients: transport.RoundTripper.Token and
// Invalidate for any protocol, TokenSource for golang.org/x/oauth2
// consumers, and package grpcauth for gRPC (per-RPC credentials and
// interceptors that recover from codes.Unauthenticated as the
// RoundTripper recovers from a 401).
//
// # Sender-constrained tokens
//
// [Settings.DPoP] binds an identity's tokens to a key ([NewDPoP], any
// crypto.Signer): the token requests of package providers' grants carry a
// DPoP proof (RFC 9449), a token issued as token_type DPoP is sent with a
// new proof on every request, and the servers' DPoP nonces are kept per
// origin and answered. A stolen DPoP-bound token is useless without the
// key.
//
// # Three ways in
//
// Use transport.New for a RoundTripper (or its Client) with everything
// inside; spawn actor.NewProps in your own actor system and ask it with
// messages.Get, or attach a RoundTripper to it with transport.NewFromActor;
// and subscribe to the events, as a function or on the actor system's
// EventStream.
package tokenmanager
