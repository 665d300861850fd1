package providers

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
)

// jwtLifetime returns the seconds left until a JWT access token's exp
// claim. It tells three cases apart:
//
//   - 0 and nil: the token is not a JWT or has no usable exp; 0 means "no
//     expiry given", and the token is cached until a response rejects it;
//   - an error wrapping [tokenmanager.ErrExpiredOnArrival]: the token has
//     expired already, or expires this instant; it must not be cached;
//   - a positive number of whole seconds, rounded down, but at least 1.
//
// The signature is not checked: the token endpoint is trusted, and the
// value is only a caching hint. The error names the exp claim and how
// long ago it passed, never the token.
//
// When the token also has an iat claim, the lifetime is at most exp - iat,
// so a local clock running behind the server's cannot stretch it.
func jwtLifetime(token string, now time.Time) (int64, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return 0, nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return 0, nil
	}
	var claims struct {
		Exp json.Number `json:"exp"`
		Iat json.Number `json:"iat"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return 0, nil
	}
	exp, ok := seconds(claims.Exp)
	if !ok {
		return 0, nil
	}
	nowSecs := float64(now.UnixNano()) / 1e9
	left := exp - nowSecs
	if iat, ok := seconds(claims.Iat); ok && iat <= exp {
		left = min(left, exp-iat)
	}
	if left <= 0 {
		if ago := nowSecs - exp; ago >= 0 {
			// exp <= now, so exp fits a time.Time and ago a Duration.
			at := time.Unix(0, int64(exp*1e9)).UTC()
			return 0, fmt.Errorf("providers: the JWT access token's exp claim (%s) passed %v ago: %w",
				at.Format(time.RFC3339Nano), time.Duration(ago*1e9).Round(time.Millisecond), tokenmanager.ErrExpiredOnArrival)
		}
		return 0, fmt.Errorf("providers: the JWT access token's exp claim equals its iat claim, so it has no lifetime: %w",
			tokenmanager.ErrExpiredOnArrival)
	}
	if left < 1 {
		// Still valid, for less than a second. ExpiresIn counts whole
		// seconds and 0 means "no expiry", so rounding down would cache
		// the token forever; 1 is the shortest lifetime expressible.
		return 1, nil
	}
	return int64(math.Floor(min(left, math.MaxInt32))), nil
}

// seconds reads a NumericDate claim (RFC 7519 §2), which may have a
// fraction.
func seconds(n json.Number) (float64, bool) {
	if n == "" {
		return 0, false
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f <= 0 {
		return 0, false
	}
	return f, true
}
