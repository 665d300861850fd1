package bench

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"net/http"
	"strings"
	"testing"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// BenchmarkDPoP measures a request with a cached token, one goroutine at
// a time over an in-memory base: oauth2 (bearer) first, then
// tokenmanager with a bearer token, then with a DPoP-bound token (a new
// ES256 proof per request), and es256_sign, one ES256 signature of a
// proof-sized input through crypto.Signer alone. The DPoP overhead is
// dpop - bearer; its budget is es256_sign + 20%. The interleaved
// sub-benchmark times the four against each other in alternating rounds
// (steadier on a shared machine) and reports the median ns per request
// of each and overhead/sign, (dpop - bearer) / es256_sign: at most 1.2.
func BenchmarkDPoP(b *testing.B) {
	rows := []cachedRow{
		{"oauth2", setupOAuth2},
		{"tokenmanager_bearer", setupTokenManager},
		{"tokenmanager_dpop", setupDPoP},
	}
	benchRows(b, rows)
	b.Run("es256_sign", func(b *testing.B) {
		rt, _ := setupSign(b, nil)
		req := newRequest(b, benchURL)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := rt.RoundTrip(req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("interleaved", func(b *testing.B) {
		all := append(rows, cachedRow{"es256_sign", setupSign})
		var sum [4]float64
		for range b.N {
			med, err := runCachedInterleaved(b, all, 15, 2000, 1)
			if err != nil {
				b.Fatal(err)
			}
			for i := range sum {
				sum[i] += med[i]
			}
		}
		for i, row := range all {
			b.ReportMetric(sum[i]/float64(b.N), row.name+"-ns/req")
		}
		b.ReportMetric((sum[2]-sum[1])/sum[3], "overhead/sign")
	})
}

// setupSign returns a RoundTripper that makes one ES256 signature of a
// proof-sized input through crypto.Signer, as a proof does, and answers
// with base's response (nil: an empty 200), touching nothing else.
func setupSign(tb testing.TB, base http.RoundTripper) (http.RoundTripper, func()) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	if base == nil {
		base = newMemBase()
	}
	var signer crypto.Signer = key
	input := []byte(strings.Repeat("x", 330)) // a proof's header and claims, encoded
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		sum := sha256.Sum256(input)
		if _, err := signer.Sign(rand.Reader, sum[:], crypto.SHA256); err != nil {
			return nil, err
		}
		return base.RoundTrip(r)
	}), func() {}
}

func dpopProvider(context.Context) (tokenmanager.Token, error) {
	return tokenmanager.Token{AccessToken: benchToken, TokenType: "DPoP", ExpiresIn: longLifetime}, nil
}

func setupDPoP(tb testing.TB, base http.RoundTripper) (http.RoundTripper, func()) {
	d, err := tokenmanager.NewDPoP(nil)
	if err != nil {
		tb.Fatal(err)
	}
	check := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Header.Get("Authorization") != "DPoP "+benchToken || r.Header.Get("DPoP") == "" {
			tb.Fatalf("request without a DPoP token and proof: %v", r.Header)
		}
		return base.RoundTrip(r)
	})
	rt, err := transport.New(tokenmanager.Settings{GetCredentials: dpopProvider, DPoP: d}, transport.WithBase(check))
	if err != nil {
		tb.Fatal(err)
	}
	warm(tb, rt)
	// From here on, the in-memory base alone: the check ran once.
	rt2, err := transport.New(tokenmanager.Settings{GetCredentials: dpopProvider, DPoP: d}, transport.WithBase(base))
	rt.Close()
	if err != nil {
		tb.Fatal(err)
	}
	warm(tb, rt2)
	return rt2, func() { rt2.Close() }
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
