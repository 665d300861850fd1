package providers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"golang.org/x/oauth2"

	"github.com/go-tokenmanager/tokenmanager"
)

// FromTokenSource returns a provider that takes its tokens from ts, an
// x/oauth2 TokenSource (a clientcredentials.Config's, a Google
// credential's, ...). The token's Expiry becomes ExpiresIn, in whole
// seconds rounded down; a zero Expiry becomes 0, "no expiry given".
//
// A TokenSource has no context, so the call to ts.Token runs on a
// goroutine of its own: when ctx ends first, the provider returns at once
// with an error wrapping ctx.Err() and that call's result, once it comes,
// is dropped. Give ts an HTTP client with a timeout (through the context
// passed to the x/oauth2 config's TokenSource) so such calls end.
//
// A *oauth2.RetrieveError whose response carries Retry-After is wrapped so
// that the token actor honours it (see [RetrieveError.RetryAfter]). The
// provider is safe for concurrent use when ts is, as x/oauth2 requires of
// every TokenSource.
func FromTokenSource(ts oauth2.TokenSource) tokenmanager.TokenProvider {
	return func(ctx context.Context) (tokenmanager.Token, error) {
		if ts == nil {
			return tokenmanager.Token{}, errors.New("providers: FromTokenSource was given a nil TokenSource")
		}
		if err := ctx.Err(); err != nil {
			return tokenmanager.Token{}, fmt.Errorf("providers: fetching token: %w", err)
		}
		type result struct {
			tok *oauth2.Token
			err error
		}
		done := make(chan result, 1) // buffered: a late call never blocks
		go func() {
			var r result
			defer func() {
				if p := recover(); p != nil {
					r = result{err: fmt.Errorf("providers: TokenSource panicked: %v", p)}
				}
				done <- r
			}()
			r.tok, r.err = ts.Token()
		}()
		select {
		case r := <-done:
			return convert(r.tok, r.err, time.Now())
		case <-ctx.Done():
			return tokenmanager.Token{}, fmt.Errorf("providers: fetching token: %w", ctx.Err())
		}
	}
}

// convert turns an x/oauth2 token into a tokenmanager.Token.
func convert(t *oauth2.Token, err error, now time.Time) (tokenmanager.Token, error) {
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil {
			if d := parseRetryAfter(re.Response.Header, now); d > 0 {
				return tokenmanager.Token{}, &retryAfterError{err: err, after: d}
			}
		}
		return tokenmanager.Token{}, err
	}
	if t == nil {
		return tokenmanager.Token{}, errors.New("providers: TokenSource returned neither a token nor an error")
	}
	tok := tokenmanager.Token{AccessToken: t.AccessToken, TokenType: t.TokenType}
	if s, ok := t.Extra("scope").(string); ok {
		tok.Scope = s
	}
	if !t.Expiry.IsZero() {
		left := t.Expiry.Sub(now)
		if left < time.Second {
			return tokenmanager.Token{}, fmt.Errorf("providers: TokenSource returned a token that expires in %v", left.Round(time.Millisecond))
		}
		tok.ExpiresIn = int64(math.Floor(left.Seconds()))
	}
	return tok, nil
}

// retryAfterError adds a Retry-After hint to an error that lacks one.
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string             { return e.err.Error() }
func (e *retryAfterError) Unwrap() error             { return e.err }
func (e *retryAfterError) RetryAfter() time.Duration { return e.after }
