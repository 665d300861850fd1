package providers

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ErrResponseTooLarge is wrapped by the error a provider returns when a
// token endpoint answers a 2xx with a body of more than 1 MiB: no token
// response is that large, so the TokenURL names something else or the
// server is hostile. That error is permanent (tokenmanager.IsPermanent),
// so waiting requests fail at once instead of waiting through retries
// that get the same answer. (A larger error answer, 4xx or 5xx, is a
// *[RetrieveError] classified by its status.)
var ErrResponseTooLarge = errors.New("token response too large")

// RetrieveError is a token endpoint's refusal: a non-2xx answer, or a 2xx
// answer that carries an OAuth error or no access token. It never holds
// the client secret or an access token.
//
// Its [RetrieveError.Temporary] and [RetrieveError.Permanent] methods sort
// refusals into those worth retrying (429, 5xx, Retry-After,
// temporarily_unavailable, slow_down, ...) and those that will not change
// until the configuration does (invalid_client, invalid_scope, a 401 or
// 403, ...); tokenmanager.IsPermanent reads the latter, so the manager
// fails waiting requests at once instead of letting them wait out their
// deadlines.
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
	// nonce reports whether the answer carried a DPoP-Nonce header.
	nonce bool
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
// or any answer carrying Retry-After. A temporary error is never
// permanent (see [RetrieveError.Permanent]); an error can be neither,
// such as a 404 or a 2xx without an access token.
func (e *RetrieveError) Temporary() bool {
	return e.retryAfter > 0 || e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// Permanent reports whether trying the same request again cannot succeed
// until something changes outside the manager: a wrong or disabled
// client, a grant or scope the server refuses. tokenmanager.IsPermanent
// calls it. In order:
//
//   - a temporary error (see [RetrieveError.Temporary]) is not permanent;
//   - the OAuth error codes invalid_client, unauthorized_client,
//     invalid_grant, invalid_scope and unsupported_grant_type are
//     permanent, whatever the status (a 2xx answer carrying one too);
//   - the codes temporarily_unavailable, slow_down and server_error are
//     not;
//   - otherwise a 400, 401 or 403 is permanent, and so is a 2xx answer
//     carrying any other error code (GitHub answers 200 with
//     incorrect_client_credentials): the server refused the request;
//     anything else (a 404, a 2xx answer without an access token or
//     error code, ...) is not.
func (e *RetrieveError) Permanent() bool {
	if e.Temporary() {
		return false
	}
	switch e.ErrorCode {
	case "invalid_client", "unauthorized_client", "invalid_grant", "invalid_scope", "unsupported_grant_type":
		return true
	case "temporarily_unavailable", "slow_down", "server_error":
		return false
	}
	switch {
	case e.StatusCode == http.StatusBadRequest, e.StatusCode == http.StatusUnauthorized, e.StatusCode == http.StatusForbidden:
		return true
	case e.StatusCode >= 200 && e.StatusCode <= 299 && e.ErrorCode != "":
		// A 2xx carrying an error is the server refusing the request, as
		// GitHub does with 200 and incorrect_client_credentials.
		return true
	}
	return false
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
