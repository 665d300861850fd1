package providers

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// RetrieveError is a token endpoint's refusal: a non-2xx answer, or a 2xx
// answer that carries an OAuth error or no access token. It never holds
// the client secret or an access token.
type RetrieveError struct {
	// StatusCode is the HTTP status of the answer.
	StatusCode int
	// ErrorCode is RFC 6749's error parameter ("invalid_client", ...);
	// empty when the answer had none.
	ErrorCode string
	// ErrorDescription is RFC 6749's error_description parameter, or a
	// note from this package when a 2xx answer had no access token.
	ErrorDescription string
	// ErrorURI is RFC 6749's error_uri parameter.
	ErrorURI string

	retryAfter time.Duration
}

// Error describes the refusal.
func (e *RetrieveError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "providers: token endpoint answered %d", e.StatusCode)
	if text := http.StatusText(e.StatusCode); text != "" {
		b.WriteString(" " + text)
	}
	if e.ErrorCode != "" {
		fmt.Fprintf(&b, ": %s", e.ErrorCode)
	}
	if e.ErrorDescription != "" {
		fmt.Fprintf(&b, ": %s", e.ErrorDescription)
	}
	if e.ErrorURI != "" {
		fmt.Fprintf(&b, " (see %s)", e.ErrorURI)
	}
	if e.retryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %v)", e.retryAfter)
	}
	return b.String()
}

// RetryAfter returns how long the server asked the client to wait before
// trying again (its Retry-After header, in seconds or as an HTTP date), or
// zero when it did not say. The token actor waits at least this long, up
// to tokenmanager.MaxRetryAfter, before its next fetch.
func (e *RetrieveError) RetryAfter() time.Duration { return e.retryAfter }

// Temporary reports whether trying again later may succeed: a 429, a 5xx,
// or any answer carrying Retry-After.
func (e *RetrieveError) Temporary() bool {
	return e.retryAfter > 0 || e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// parseRetryAfter reads a Retry-After header (RFC 9110 §10.2.3): a number
// of seconds or an HTTP date. A date is measured from the answer's Date
// header when it has one, so a skewed local clock does not distort it, and
// from now otherwise. Anything unreadable, past or negative gives zero.
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > math.MaxInt64/int64(time.Second) {
			return math.MaxInt64
		}
		return time.Duration(secs) * time.Second
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	if date, err := http.ParseTime(h.Get("Date")); err == nil {
		now = date
	}
	if d := at.Sub(now); d > 0 {
		return d
	}
	return 0
}
