package tokenmanager

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/benbjohnson/clock"
)

// defaultIdleTimeout is how long an identity may go unused before it is
// passivated: long enough that a steady caller (one
// request every few minutes) keeps its token, short enough that
// thousands of tenants seen once an hour do not stay in memory.
const defaultIdleTimeout = 10 * time.Minute

// minIdleTimeout keeps the idle sweep from running in a loop.
const minIdleTimeout = time.Second

// SettingsFunc returns the settings of one identity. An owner of many
// identities calls it when an identity is first needed, and again when
// the identity is needed after it was passivated; never twice at once for
// one identity, and never on a request's goroutine. It should return
// promptly (it may read a configuration store): requests for that
// identity wait for it, others do not.
//
// An error, or settings that fail [Settings.Validate], fail that
// identity's requests with an error naming the identity; the function is
// not called again for it until a backoff has passed (0.5s, doubling up
// to 30s), so a broken entry does not make the owner call it in a loop.
// A panic is contained and reported the same way. Each failure is
// published as a messages.SettingsFailed event and logged to
// [OwnerSettings.Logger].
type SettingsFunc func(identity string) (Settings, error)

// OwnerSettings configures an owner of many identities: one token state
// per identity, hosted by the owner, started on first use and passivated
// when idle. Zero values
// mean "use the default".
//
// An identity is a string of your choosing. Build it from every parameter
// that shapes the token request, so that two requests needing different
// tokens never share one: for example
// "tenant=contoso|client=app-1|aud=https://graph.example|scope=read write"
// with the scopes sorted. Keep secrets out of it: identities appear in
// events, logs and metrics. Look the secret up in SettingsFor instead.
type OwnerSettings struct {
	// SettingsFor returns each identity's settings. Required.
	SettingsFor SettingsFunc
	// IdleTimeout is how long an identity may go unused before it is
	// passivated and its token forgotten; its next request starts
	// it again and fetches anew. Optional; zero means 10 minutes; at
	// least 1s.
	IdleTimeout time.Duration
	// MaxIdentities caps the identities held at once. When a new one
	// exceeds it, the least recently used are passivated as it is
	// hosted (the oldest tenth, in one sweep), unless they are busy
	// fetching or waited on. A new identity's first request may have its
	// token just before that, so while many start at once up to 64 more
	// may be held for a moment. Optional; zero means no cap.
	MaxIdentities int
	// Clock times idleness. Optional; nil means the real clock. Pass the
	// same mock as the identities' Settings.Clock in tests.
	Clock clock.Clock
	// EventBuffer is the queue length of each event subscriber. Optional;
	// zero means 1024; at most [MaxEventBuffer].
	EventBuffer int
	// Logger receives the owner's logs (each failed SettingsFor call)
	// and, for transport.NewMulti, the actor runtime's, identities' token
	// actors included. Optional; nil means nothing is logged, except that
	// an owner spawned from actor.NewOwnerProps in your own actor system
	// logs to that system's logger.
	Logger *slog.Logger
}

// WithDefaults returns a copy of o with every zero field set to its
// default.
func (o OwnerSettings) WithDefaults() OwnerSettings {
	if o.IdleTimeout == 0 {
		o.IdleTimeout = defaultIdleTimeout
	}
	if o.Clock == nil {
		o.Clock = clock.New()
	}
	if o.EventBuffer == 0 {
		o.EventBuffer = defaultEventBuffer
	}
	return o
}

// Validate reports every invalid field of o at once, or nil.
func (o OwnerSettings) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("tokenmanager: "+format, args...))
	}
	if o.SettingsFor == nil {
		bad("OwnerSettings.SettingsFor is nil; a SettingsFunc is required")
	}
	if o.IdleTimeout != 0 && o.IdleTimeout < minIdleTimeout {
		bad("OwnerSettings.IdleTimeout is %v; it must be zero (the default) or at least %v", o.IdleTimeout, minIdleTimeout)
	}
	if o.MaxIdentities < 0 {
		bad("OwnerSettings.MaxIdentities is %d; it must not be negative", o.MaxIdentities)
	}
	if o.EventBuffer < 0 || o.EventBuffer > MaxEventBuffer {
		bad("OwnerSettings.EventBuffer is %d; it must be between 0 and %d", o.EventBuffer, MaxEventBuffer)
	}
	return errors.Join(errs...)
}

// MaxIdentityLength is the longest identity, in bytes, an owner of many
// identities accepts. It leaves room for an identity built from every
// parameter of a token request (tenant, client, audience, a long list of
// scopes) while keeping identities fit for events, logs, metrics and actor
// names.
const MaxIdentityLength = 4096

// ErrInvalidIdentity is returned, wrapped with the reason, for an
// identity an owner of many identities cannot take (see
// [CheckIdentity]). Nothing is fetched and SettingsFor is not called.
var ErrInvalidIdentity = errors.New("tokenmanager: invalid identity")

// CheckIdentity reports why identity cannot name one of an owner's
// identities, or nil. An identity must be non-empty, at most
// [MaxIdentityLength] bytes of valid UTF-8, and hold no control
// character (NUL, CR, LF, tab, DEL, ...). The error wraps
// [ErrInvalidIdentity] and does not quote the identity.
func CheckIdentity(identity string) error {
	switch {
	case identity == "":
		return fmt.Errorf("%w: it is empty", ErrInvalidIdentity)
	case len(identity) > MaxIdentityLength:
		return fmt.Errorf("%w: %d bytes, more than the %d allowed", ErrInvalidIdentity, len(identity), MaxIdentityLength)
	case !utf8.ValidString(identity):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidIdentity)
	}
	for i, r := range identity {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: control character %U at byte %d", ErrInvalidIdentity, r, i)
		}
	}
	return nil
}
