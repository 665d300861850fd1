package tokenmanager

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/benbjohnson/clock"
)

// Defaults used where a [Settings] field is left at its zero value.
const (
	// defaultRefreshBuffer leaves time to fetch a new token before the
	// cached one expires; ten seconds covers a slow token endpoint.
	defaultRefreshBuffer = 10 * time.Second
	// defaultHeader is the header RFC 6750 puts bearer tokens in.
	defaultHeader = "Authorization"
	// defaultTokenTryThreshold is how many consecutive failed fetches make
	// one TokenTryThresholdReached event (at 10, 20, 30, ...).
	defaultTokenTryThreshold = 10
	// defaultMaxRecoveryTries bounds how often one request is resent after
	// a status in RefreshOnStatus.
	defaultMaxRecoveryTries = 5
	// defaultRetryBaseDelay is the first backoff delay after a failed fetch.
	defaultRetryBaseDelay = 500 * time.Millisecond
	// defaultRetryMaxDelay caps the backoff so a recovered token endpoint is
	// noticed within half a minute.
	defaultRetryMaxDelay = 30 * time.Second
	// defaultFetchTimeout bounds one call of the provider.
	defaultFetchTimeout = 30 * time.Second
	// defaultWaitTimeout bounds how long a request whose context has no
	// deadline waits for a token, so nothing hangs on a dead endpoint.
	defaultWaitTimeout = 30 * time.Second
	// defaultEventBuffer is each subscriber's queue; events beyond it are
	// dropped and counted rather than stalling the publisher.
	defaultEventBuffer = 1024
	// maxLifetime caps ExpiresIn so absurd values cannot overflow a
	// time.Duration; a token cached for ten years is cached "forever".
	maxLifetime = 10 * 365 * 24 * time.Hour
)

// defaultRefreshOnStatus is used when Settings.RefreshOnStatus is empty:
// 401 Unauthorized is how RFC 6750 rejects a bearer token.
var defaultRefreshOnStatus = []int{401}

// Token is what a [TokenProvider] returns: the OAuth2 token response fields
// the manager uses.
//
// JSON decoding accepts expires_in as a number or a numeric string (some
// servers send "3600"). A Token published by the manager must not be
// modified.
type Token struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type,omitempty"`
	// ExpiresIn is the lifetime in seconds, counted from the moment the
	// fetch started. Zero or negative means "no expiry given": the token is
	// cached until a response rejects it.
	ExpiresIn int64  `json:"expires_in"`
	Scope     string `json:"scope,omitempty"`
}

// String returns a description of t that never contains the access token.
func (t Token) String() string {
	return fmt.Sprintf("Token{TokenType:%q ExpiresIn:%d Scope:%q AccessToken:<%d bytes>}",
		t.TokenType, t.ExpiresIn, t.Scope, len(t.AccessToken))
}

// GoString is like String, so %#v does not print the access token either.
func (t Token) GoString() string { return t.String() }

// LogValue is like String, so log/slog does not print the access token
// either.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.String()) }

// UnmarshalJSON decodes an OAuth2 token response. expires_in may be a JSON
// number or a string holding an integer; anything else is an error.
func (t *Token) UnmarshalJSON(data []byte) error {
	var raw struct {
		AccessToken string          `json:"access_token"`
		TokenType   string          `json:"token_type"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
		Scope       string          `json:"scope"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("tokenmanager: decoding token: %w", err)
	}
	exp, err := parseExpiresIn(raw.ExpiresIn)
	if err != nil {
		return err
	}
	*t = Token{AccessToken: raw.AccessToken, TokenType: raw.TokenType, ExpiresIn: exp, Scope: raw.Scope}
	return nil
}

func parseExpiresIn(raw json.RawMessage) (int64, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return 0, nil
	}
	if s[0] == '"' {
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return 0, fmt.Errorf("tokenmanager: decoding expires_in: %w", err)
		}
		s = strings.TrimSpace(str)
		if s == "" {
			return 0, nil
		}
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	// Some servers send 3600.0; accept integral decimal numbers only.
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || strings.Trim(s, "+-0123456789.eE") != "" ||
		math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) || math.Abs(f) > math.MaxInt64/2 {
		return 0, fmt.Errorf("tokenmanager: expires_in %.40q is not an integer number of seconds", s)
	}
	return int64(f), nil
}

// Lifetime returns how long t stays valid after its fetch started, and
// false when t has no expiry (ExpiresIn <= 0). Absurdly large values are
// capped at ten years.
func (t Token) Lifetime() (time.Duration, bool) {
	if t.ExpiresIn <= 0 {
		return 0, false
	}
	if t.ExpiresIn >= int64(maxLifetime/time.Second) {
		return maxLifetime, true
	}
	return time.Duration(t.ExpiresIn) * time.Second, true
}

// TokenProvider fetches a new token. The manager calls it one fetch at a
// time, never from a request's goroutine, with a context that ends when
// the fetch times out ([Settings.FetchTimeout]) or the manager closes. It
// should honour ctx: a call that does not return when ctx ends is
// abandoned (the fetch fails and is retried with backoff), and while it
// still runs a second call may start beside it, never a third. A panic is
// contained and reported as a permanent failed fetch (a [*PanicError]
// carrying the stack trace, also logged to [Settings.Logger]): everyone
// waiting for a token fails at once.
//
// When the returned error (or one it wraps) has a method
// RetryAfter() time.Duration, as for an HTTP 429 or 503 with a
// Retry-After header, the next fetch waits at least that long (at most
// [MaxRetryAfter]) instead of the usual backoff.
type TokenProvider func(ctx context.Context) (Token, error)

// Formatter turns an access token into the header value. The default is
// "Bearer " + accessToken. It is called from request goroutines, possibly
// concurrently, once per new token; a panic is contained and fails the
// request.
type Formatter func(accessToken string) string

// BearerFormatter is the default [Formatter]: "Bearer " + accessToken.
func BearerFormatter(accessToken string) string { return "Bearer " + accessToken }

// Settings configures a token manager. Zero values mean "use the default".
// Settings is a plain value; the manager copies it and never changes the
// caller's copy.
type Settings struct {
	// GetCredentials fetches a token. Required, except for the settings
	// given to transport.NewFromActor, where the actor fetches.
	GetCredentials TokenProvider
	// RefreshBuffer is how long before expiry the token is refreshed.
	// Optional; zero means 10s. Must not be negative.
	RefreshBuffer time.Duration
	// Header is the request header that carries the token. Optional; empty
	// means "Authorization".
	Header string
	// Formatter builds the header value. Optional; nil means
	// [BearerFormatter].
	Formatter Formatter
	// RefreshOnStatus lists the response statuses that mean "token
	// rejected": the request's token is invalidated and the request resent
	// with a fresh one. Optional; empty means [401]. Only error statuses
	// (400 to 599) are accepted: a success or redirect status cannot mean
	// a rejected token, and would make every request fetch a new one.
	RefreshOnStatus []int
	// TokenTryThreshold: every this many consecutive failed fetches,
	// OnTokenTryThreshold is called and TokenTryThresholdReached published.
	// Optional; zero means 10. Must not be negative.
	TokenTryThreshold int
	// MaxRecoveryTries is how often one request is resent after a status in
	// RefreshOnStatus. Optional; zero means 5; a negative value means no
	// resend at all (the token is still invalidated).
	MaxRecoveryTries int
	// AddTokenToLogs puts the access token in the Message of
	// TokenRefreshed, AuthFailed and RecoveryTried events and callbacks.
	// Optional; false keeps it out of every event, message, error and log.
	AddTokenToLogs bool
	// Clock drives expiry, early refresh and backoff. Optional; nil means
	// the real clock. Tests pass clock.NewMock().
	Clock clock.Clock
	// AllowInsecureHTTP lets the token travel over plain http to hosts
	// that are not loopback. Optional; false means a request whose URL is
	// not https, and whose host is not localhost, 127.0.0.0/8 or ::1, fails
	// with [ErrInsecureTransport] and is not sent. Set it only where
	// something else protects the traffic: a service mesh whose sidecar
	// terminates TLS, or a test rig on a private network.
	AllowInsecureHTTP bool
	// DPoP binds the identity's tokens to a key (RFC 9449). Optional; nil
	// means bearer tokens. When set, the token requests of package
	// providers' grants carry a DPoP proof, and a token issued with
	// token_type DPoP is sent as "Authorization: DPoP <token>" with a new
	// proof on every request (and every resend and redirect). A token
	// issued as Bearer is sent as one. Header and Formatter must then be
	// left at their defaults. See docs/sender-constrained.md.
	DPoP *DPoP

	// RetryBaseDelay is the backoff after the first failed fetch; it doubles
	// with each further failure, with jitter, and is never below 10ms.
	// Optional; zero means 500ms (or RetryMaxDelay, if that is shorter).
	RetryBaseDelay time.Duration
	// RetryMaxDelay caps the backoff. Optional; zero means 30s (or
	// RetryBaseDelay, if that is longer).
	RetryMaxDelay time.Duration
	// FetchTimeout bounds one provider call, in real time. Optional; zero
	// means 30s.
	FetchTimeout time.Duration
	// WaitTimeout bounds, in real time, how long a request whose context has
	// no deadline waits for a token. Optional; zero means 30s.
	WaitTimeout time.Duration
	// EventBuffer is the queue length of each event subscriber (callbacks
	// included); events beyond it are dropped and counted. Optional; zero
	// means 1024; at most [MaxEventBuffer].
	EventBuffer int
	// Logger receives the token actor's logs (a provider's panic, with
	// its stack trace) and, for transport.New, the actor runtime's.
	// Optional; nil means nothing is logged, except that a token actor
	// spawned in your own actor system (actor.NewProps, or an owner's
	// identity) logs to that system's logger.
	Logger *slog.Logger

	// The callbacks below are called one at a time, in event order, on a
	// goroutine of their own, never on the actor's or a request's; a panic
	// in one is contained. All are optional. (With transport.NewFromActor,
	// the actor's callbacks and the RoundTripper's run on two goroutines.)

	// OnTokenRefresh is called when a new token is cached.
	OnTokenRefresh func(message string)
	// OnAuthFail is called when a response status is in RefreshOnStatus.
	OnAuthFail func(message string)
	// OnTokenRequestFail is called when a fetch fails.
	OnTokenRequestFail func(err error)
	// OnRecoveryTry is called when a request is resent with a fresh token.
	OnRecoveryTry func(message string)
	// OnTokenTryThreshold is called when consecutive failed fetches reach
	// a multiple of TokenTryThreshold.
	OnTokenTryThreshold func(failedTries int)
	// OnRecoveryAbort is called when a request is given back with a status
	// in RefreshOnStatus, its recovery tries used up or impossible.
	OnRecoveryAbort func(message string)
}

// WithDefaults returns a copy of s with every zero field set to its
// default. Negative MaxRecoveryTries is kept (it means "no resend").
func (s Settings) WithDefaults() Settings {
	if s.RefreshBuffer == 0 {
		s.RefreshBuffer = defaultRefreshBuffer
	}
	if s.Header == "" {
		s.Header = defaultHeader
	}
	if s.Formatter == nil {
		s.Formatter = BearerFormatter
	}
	if len(s.RefreshOnStatus) == 0 {
		s.RefreshOnStatus = defaultRefreshOnStatus
	}
	s.RefreshOnStatus = append([]int(nil), s.RefreshOnStatus...)
	if s.TokenTryThreshold == 0 {
		s.TokenTryThreshold = defaultTokenTryThreshold
	}
	if s.MaxRecoveryTries == 0 {
		s.MaxRecoveryTries = defaultMaxRecoveryTries
	}
	if s.Clock == nil {
		s.Clock = clock.New()
	}
	if s.RetryMaxDelay == 0 {
		s.RetryMaxDelay = max(defaultRetryMaxDelay, s.RetryBaseDelay)
	}
	if s.RetryBaseDelay == 0 {
		s.RetryBaseDelay = min(defaultRetryBaseDelay, s.RetryMaxDelay)
	}
	if s.FetchTimeout == 0 {
		s.FetchTimeout = defaultFetchTimeout
	}
	if s.WaitTimeout == 0 {
		s.WaitTimeout = defaultWaitTimeout
	}
	if s.EventBuffer == 0 {
		s.EventBuffer = defaultEventBuffer
	}
	return s
}

// Validate reports every invalid field of s at once, joined in one error,
// or nil when s is usable. Zero values are valid: they mean the default.
func (s Settings) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("tokenmanager: "+format, args...))
	}
	if s.GetCredentials == nil {
		bad("GetCredentials is nil; a TokenProvider is required")
	}
	if s.RefreshBuffer < 0 {
		bad("RefreshBuffer is %v; it must not be negative", s.RefreshBuffer)
	}
	if s.Header != "" && !validHeaderName(s.Header) {
		bad("Header %q is not a valid HTTP header name", s.Header)
	}
	for _, code := range s.RefreshOnStatus {
		if code < 400 || code > 599 {
			bad("RefreshOnStatus holds %d; only error statuses (400 to 599) can mean a rejected token", code)
		}
	}
	if s.TokenTryThreshold < 0 {
		bad("TokenTryThreshold is %d; it must not be negative", s.TokenTryThreshold)
	}
	if s.RetryBaseDelay < 0 {
		bad("RetryBaseDelay is %v; it must not be negative", s.RetryBaseDelay)
	}
	if s.RetryMaxDelay < 0 {
		bad("RetryMaxDelay is %v; it must not be negative", s.RetryMaxDelay)
	}
	d := s.WithDefaults()
	if s.RetryBaseDelay >= 0 && s.RetryMaxDelay >= 0 && d.RetryBaseDelay > d.RetryMaxDelay {
		bad("RetryBaseDelay %v is longer than RetryMaxDelay %v", d.RetryBaseDelay, d.RetryMaxDelay)
	}
	if s.FetchTimeout < 0 {
		bad("FetchTimeout is %v; it must not be negative", s.FetchTimeout)
	}
	if s.WaitTimeout < 0 {
		bad("WaitTimeout is %v; it must not be negative", s.WaitTimeout)
	}
	if s.DPoP != nil && s.Formatter != nil {
		bad("Formatter is set with DPoP; DPoP tokens are sent as \"DPoP <token>\" and bearer ones as \"Bearer <token>\"")
	}
	if s.DPoP != nil && s.Header != "" && !strings.EqualFold(s.Header, defaultHeader) {
		bad("Header is %q with DPoP; DPoP tokens travel in Authorization (RFC 9449 §7.1)", s.Header)
	}
	if s.EventBuffer < 0 || s.EventBuffer > MaxEventBuffer {
		bad("EventBuffer is %d; it must be between 0 and %d", s.EventBuffer, MaxEventBuffer)
	}
	return errors.Join(errs...)
}

// validHeaderName reports whether name is an RFC 7230 token.
func validHeaderName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return name != ""
}

// MaxEventBuffer is the largest [Settings.EventBuffer]: a million queued
// events per subscriber is already far more than any consumer can be
// behind by usefully.
const MaxEventBuffer = 1 << 20

// MaxRetryAfter caps how long a provider's RetryAfter hint can hold back
// the next fetch, so a bogus header cannot stall the manager for hours.
const MaxRetryAfter = 5 * time.Minute

// Fingerprint returns a short, safe identifier of an access token: the
// first 8 bytes of its SHA-256, in hex. Logs can correlate tokens by it
// without leaking them. The empty token has the empty fingerprint.
func Fingerprint(accessToken string) string {
	if accessToken == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(accessToken))
	return hex.EncodeToString(sum[:8])
}

// CheckToken reports why t cannot be used, or nil. The error wraps
// [ErrInvalidToken] and is permanent ([IsPermanent]).
func CheckToken(t Token) error {
	if t.AccessToken == "" {
		return Permanent(fmt.Errorf("%w: access_token is empty", ErrInvalidToken))
	}
	if strings.ContainsAny(t.AccessToken, "\r\n\x00") {
		return Permanent(fmt.Errorf("%w: access_token holds a control character", ErrInvalidToken))
	}
	return nil
}
