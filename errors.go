package tokenmanager

import (
	"errors"
	"fmt"
)

// ErrClosed is returned by every call made after Close, and to requests
// still waiting for a token when the manager closes.
var ErrClosed = errors.New("tokenmanager: closed")

// ErrInvalidToken is wrapped by a [FetchError] when the provider returned
// a token the manager cannot use (an empty access token, say).
var ErrInvalidToken = errors.New("tokenmanager: invalid token from provider")

// ErrExpiredOnArrival is wrapped by the error of a fetch whose token had
// already expired when it arrived (its expires_in, or the exp claim of a
// JWT access token, lies in the past). Such a token is never cached; the
// fetch counts as failed and is retried with backoff.
var ErrExpiredOnArrival = errors.New("tokenmanager: token expired before it arrived")

// ErrInsecureTransport is returned, wrapped, when a token or a client
// secret would travel over plain http to a host that is not loopback.
// Nothing is sent. See [Settings.AllowInsecureHTTP].
var ErrInsecureTransport = errors.New("tokenmanager: refusing to send a credential over plain http")

// FetchError is the error a failed token fetch produces. It never holds
// the access token. errors.Is and errors.As see through it to the
// provider's error.
type FetchError struct {
	// Attempt is the number of consecutive failed fetches, this one
	// included.
	Attempt int
	// Err is what the provider returned, or why its token was refused.
	Err error
}

// Error describes the failure; it never holds the access token.
func (e *FetchError) Error() string {
	kind := "token fetch failed"
	if IsPermanent(e.Err) {
		kind = "token fetch failed permanently"
	}
	return fmt.Sprintf("tokenmanager: %s (attempt %d): %v", kind, e.Attempt, e.Err)
}

// Unwrap returns the underlying error.
func (e *FetchError) Unwrap() error { return e.Err }

// Permanent reports whether the fetch failed for a reason that will not go
// away by trying again (see [IsPermanent]).
func (e *FetchError) Permanent() bool { return IsPermanent(e.Err) }

// Permanent marks err as permanent: trying the same fetch again cannot
// succeed until something changes outside the manager (a wrong client
// secret, a disabled client, an unknown scope). A provider returns
// Permanent(err) to have every request and asker waiting for a token fail
// at once with err, instead of waiting through retries until their
// deadline. The manager still retries, with capped backoff, but only when
// someone asks for a token, so a fixed secret (or a pushed token) brings
// it back without a restart.
//
// Permanent(nil) is nil. The result wraps err: errors.Is and errors.As
// see through it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string   { return e.err.Error() }
func (e *permanentError) Unwrap() error   { return e.err }
func (e *permanentError) Permanent() bool { return true }

// IsPermanent reports whether err, or an error it wraps, says it is
// permanent: it has a method Permanent() bool that returns true. Errors
// marked by [Permanent] do, as do providers.RetrieveError answers such as
// invalid_client. The first error in the chain that has the method
// decides. Everything else (network errors, timeouts, 5xx, 429) is
// temporary.
func IsPermanent(err error) bool {
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}
