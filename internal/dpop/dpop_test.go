package dpop

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestHTU(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://api.example.com/resource?x=1#frag", "https://api.example.com/resource"},
		{"HTTPS://API.Example.COM:443/a/b", "https://api.example.com/a/b"},
		{"http://127.0.0.1:80/", "http://127.0.0.1/"},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080/"},
		{"https://h/%7euser/%2fx%3a", "https://h/~user/%2Fx%3A"},
		{"https://h/a/./b/../c", "https://h/a/c"},
		{"https://h/a/b/..", "https://h/a/"},
		{"https://[::1]:8443/p", "https://[::1]:8443/p"},
		{"https://h/a%20b", "https://h/a%20b"},
	}
	for _, tt := range tests {
		u, err := url.Parse(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := HTU(u); got != tt.want {
			t.Errorf("HTU(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// TestHTU_opaque: a URL with Opaque set (to send a path encoded as
// written) gets the path net/http sends in the request line.
func TestHTU_opaque(t *testing.T) {
	tests := []struct {
		opaque, want string
	}{
		{"/a%2fb/c", "https://api.example/a%2Fb/c"},
		{"//api.example/x%2Fy", "https://api.example/x%2Fy"},
		{"//api.example", "https://api.example/"},
	}
	for _, tt := range tests {
		u := &url.URL{Scheme: "https", Host: "api.example", Opaque: tt.opaque, RawQuery: "q=1"}
		if got := HTU(u); got != tt.want {
			t.Errorf("HTU(Opaque %q) = %q; want %q", tt.opaque, got, tt.want)
		}
	}
}

func TestOrigin(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://API.example.com/x?y", "https://api.example.com:443"},
		{"https://api.example.com:443/", "https://api.example.com:443"},
		{"http://127.0.0.1:8080/a", "http://127.0.0.1:8080"},
		{"http://[::1]/a", "http://[::1]:80"},
	}
	for _, tt := range tests {
		u, _ := url.Parse(tt.in)
		if got := Origin(u); got != tt.want {
			t.Errorf("Origin(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestNonces(t *testing.T) {
	var n Nonces
	n.Set("https://a:443", "n1")
	n.Set("https://b:443", "n2")
	n.Set("https://a:443", `bad"quote`) // not an NQCHAR nonce: ignored
	n.Set("https://a:443", "")
	if a, b := n.Get("https://a:443"), n.Get("https://b:443"); a != "n1" || b != "n2" {
		t.Errorf("nonces a=%q b=%q; want n1, n2 (kept per origin)", a, b)
	}
	for i := range maxOrigins * 2 {
		n.Set("https://h"+string(rune('a'+i%26))+string(rune('a'+i/26))+":443", "x")
	}
	if len(n.m) > maxOrigins {
		t.Errorf("%d origins kept; want at most %d", len(n.m), maxOrigins)
	}
}

func TestChallenge(t *testing.T) {
	tests := []struct {
		values []string
		want   bool
	}{
		{[]string{`DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"`}, true},
		{[]string{`Bearer realm="x"`, `DPoP algs="ES256", error="use_dpop_nonce"`}, true},
		{[]string{`Bearer realm="x", DPoP error="use_dpop_nonce"`}, true},
		{[]string{`DPoP error="invalid_token"`}, false},
		{[]string{`Bearer error="use_dpop_nonce"`}, false},
		{[]string{`DPoP error="invalid_token", DPoP error="use_dpop_nonce"`}, true},
		{[]string{`DPoPx error="use_dpop_nonce"`}, false},
		{[]string{`DPoP error = "use_dpop_nonce"`}, true},
		{[]string{`DPoP error =use_dpop_nonce`}, true},
		{[]string{`DPoP realm="a, b", error="use_dpop_nonce"`}, true},
		{[]string{`Basic YWxhZGRpbg==, DPoP error="use_dpop_nonce"`}, true},
		{[]string{`DPoP x_error="use_dpop_nonce"`}, false},
		{[]string{`DPoP error="invalid_token", error_description="not error=\"use_dpop_nonce\""`}, false},
		{[]string{`DPoP error="invalid_token", Bearer error="use_dpop_nonce"`}, false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := Challenge(tt.values); got != tt.want {
			t.Errorf("Challenge(%q) = %v; want %v", tt.values, got, tt.want)
		}
	}
}

func TestProofClaimsJSON(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k, err := NewKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	for _, nonce := range []string{"", "plain-nonce", `odd"nonce\with<chars>&é`} {
		c := Claims{Method: "PATCH", URL: "https://h/päth\"x", Issued: time.Unix(1700000000, 0), Token: "t", Nonce: nonce}
		proof, err := k.Proof(c)
		if err != nil {
			t.Fatal(err)
		}
		payload, err := base64.RawURLEncoding.DecodeString(strings.Split(proof, ".")[1])
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal(payload, &got); err != nil {
			t.Fatalf("claims %s: %v", payload, err)
		}
		if got["htm"] != c.Method || got["htu"] != c.URL || got["iat"] != float64(1700000000) || got["ath"] != ATH("t") || (nonce != "" && got["nonce"] != nonce) || (nonce == "" && got["nonce"] != nil) {
			t.Errorf("claims %v; want %+v", got, c)
		}
	}
}
