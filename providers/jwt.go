package providers

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"
	"time"
)

// jwtLifetime returns the seconds left until a JWT access token's exp
// claim, or 0 when the token is not a JWT, has no usable exp, or has
// already expired (0 means "no expiry given": the token is then cached
// until a response rejects it). The signature is not checked: the token
// endpoint is trusted, and the value is only a caching hint.
//
// When the token also has an iat claim, the lifetime is at most exp - iat,
// so a local clock running behind the server's cannot stretch it.
func jwtLifetime(token string, now time.Time) int64 {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return 0
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return 0
	}
	var claims struct {
		Exp json.Number `json:"exp"`
		Iat json.Number `json:"iat"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return 0
	}
	exp, ok := seconds(claims.Exp)
	if !ok {
		return 0
	}
	left := exp - float64(now.UnixNano())/1e9
	if iat, ok := seconds(claims.Iat); ok && iat <= exp {
		left = min(left, exp-iat)
	}
	if left < 1 {
		return 0
	}
	return int64(math.Floor(min(left, math.MaxInt32)))
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
