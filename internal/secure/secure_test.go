package secure

import (
	"net/url"
	"testing"
)

func TestAllowed(t *testing.T) {
	tests := []struct {
		url  string
		want bool
	}{
		{"https://api.example.com/x", true},
		{"HTTPS://api.example.com/x", true},
		{"http://api.example.com/x", false},
		{"http://127.0.0.1:8080/x", true},
		{"http://127.9.8.7/x", true},
		{"http://[::1]:80/x", true},
		{"http://localhost:3000/x", true},
		{"http://LOCALHOST./x", true},
		{"http://api.localhost/x", true},
		{"http://localhost.example.com/x", false},
		{"http://128.0.0.1/x", false},
		{"http://[::2]/x", false},
		{"http://10.0.0.1/x", false},
		{"ftp://127.0.0.1/x", true}, // loopback: the scheme does not matter
		{"ws://example.com/x", false},
	}
	for _, tt := range tests {
		u, err := url.Parse(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := Allowed(u); got != tt.want {
			t.Errorf("Allowed(%q) = %v; want %v", tt.url, got, tt.want)
		}
	}
	if Allowed(nil) {
		t.Error("Allowed(nil) = true; want false")
	}
}
