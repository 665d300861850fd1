package tokenmanager

import (
	"errors"
	"fmt"
)

// ErrClosed is returned by every call made after Close, and to requests
// still waiting for a token when the manager closes.
var ErrClosed = errors.New("tokenmanager: closed")

// ErrInvalidToken is wrapped by a [FetchError] when the provider returned
// a token the manager cannot use: an empty access token, or one holding a
// CR, LF or NUL. Such a failure is permanent ([IsPermanent]): a provider
// that answers so once will answer so again, so everyone waiting for a
// token fails at once rather than wait out its deadline.
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

// PanicError is the error of a fetch whose provider panicked, wrapped by
// a [FetchError]. It is permanent ([IsPermanent]): a panic is a bug, and
// retrying at once will not mend it, so everyone waiting for a token
// fails at once with it; the next fetch waits for a request after the
// backoff. Find it with errors.As.
type PanicError struct {
	// Value is what the provider panicked with.
	Value any
	// Stack is the provider goroutine's stack trace at the panic
	// (runtime/debug.Stack). It holds function names, files and lines,
	// not the values of strings.
	Stack []byte
}

// maxPanicText bounds how much of a panic value Error prints: the value
// is user data, and an error message should stay one short line.
const maxPanicText = 200

// Error reports the panic value, cut to 200 bytes, without the stack.
func (e *PanicError) Error() string {
	v := fmt.Sprint(e.Value)
	if len(v) > maxPanicText {
		v = v[:maxPanicText] + "..."
	}
	return "tokenmanager: provider panicked: " + v
}

// Unwrap returns Value when it is an error (panic(err)), else nil.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// Permanent reports true: see [IsPermanent].
func (e *PanicError) Permanent() bool { return true }

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

// ErrReauthRequired is wrapped by the error of a fetch that cannot go on
// without the user signing in again: the authorization server refused
// the identity's refresh token (invalid_grant: revoked, expired, or
// reused), or there is no refresh token stored for it. Such an error is
// permanent ([IsPermanent]): requests waiting for the identity's token
// fail at once, and the refresh token is not sent again. Match it with
// errors.Is; errors.As with a *providers.ReauthError gives the identity.
var ErrReauthRequired = errors.New("tokenmanager: the user must sign in again")
