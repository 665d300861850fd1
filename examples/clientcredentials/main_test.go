package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/go-tokenmanager/tokenmanager"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestParseArgs_allowInsecureHTTP checks that -allow-insecure-http is
// listed in the usage, off by default, and lets a plain http token URL to
// a host other than loopback through.
func TestParseArgs_allowInsecureHTTP(t *testing.T) {
	const plain = "http://idp.internal/token"
	var usage bytes.Buffer
	fs := flag.NewFlagSet("clientcredentials", flag.ContinueOnError)
	fs.SetOutput(&usage)
	if _, _, err := parseArgs(fs, []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v; want flag.ErrHelp", err)
	}
	if !strings.Contains(usage.String(), "-allow-insecure-http") {
		t.Errorf("usage does not list -allow-insecure-http:\n%s", usage.String())
	}

	tests := []struct {
		name      string
		args      []string
		wantAllow bool
	}{
		{name: "default", args: []string{"-token-url", plain, "-client-id", "c"}, wantAllow: false},
		{name: "set", args: []string{"-token-url", plain, "-client-id", "c", "-allow-insecure-http"}, wantAllow: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("clientcredentials", flag.ContinueOnError)
			fs.SetOutput(&bytes.Buffer{})
			cfg, _, err := parseArgs(fs, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.AllowInsecureHTTP != tt.wantAllow {
				t.Errorf("AllowInsecureHTTP = %v; want %v", cfg.AllowInsecureHTTP, tt.wantAllow)
			}
			err = cfg.Validate()
			if got := errors.Is(err, tokenmanager.ErrInsecureTransport); got == tt.wantAllow {
				t.Errorf("Validate() = %v; want ErrInsecureTransport: %v", err, !tt.wantAllow)
			}
		})
	}
}
