package tokenmanager_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
)

func okProvider(context.Context) (tokenmanager.Token, error) {
	return tokenmanager.Token{AccessToken: "t"}, nil
}

func TestSettings_Validate(t *testing.T) {
	tests := []struct {
		name string
		s    tokenmanager.Settings
		want []string // substrings the error must hold; none means valid
	}{
		{"zero values are defaults", tokenmanager.Settings{GetCredentials: okProvider}, nil},
		{"all set", tokenmanager.Settings{
			GetCredentials: okProvider, RefreshBuffer: time.Second, Header: "X-Api-Key",
			RefreshOnStatus: []int{401, 403}, TokenTryThreshold: 3, MaxRecoveryTries: -1,
			RetryBaseDelay: time.Millisecond, RetryMaxDelay: time.Second,
		}, nil},
		{"missing provider", tokenmanager.Settings{}, []string{"GetCredentials"}},
		{"negative buffer", tokenmanager.Settings{GetCredentials: okProvider, RefreshBuffer: -time.Second}, []string{"RefreshBuffer"}},
		{"bad header", tokenmanager.Settings{GetCredentials: okProvider, Header: "Bad Header:"}, []string{"Header"}},
		{"status out of range", tokenmanager.Settings{GetCredentials: okProvider, RefreshOnStatus: []int{401, 99, 600}}, []string{"99", "600"}},
		{"success and redirect statuses", tokenmanager.Settings{GetCredentials: okProvider, RefreshOnStatus: []int{200, 302, 399}}, []string{"200", "302", "399", "400 to 599"}},
		{"negative threshold", tokenmanager.Settings{GetCredentials: okProvider, TokenTryThreshold: -1}, []string{"TokenTryThreshold"}},
		{"base above max", tokenmanager.Settings{GetCredentials: okProvider, RetryBaseDelay: time.Minute, RetryMaxDelay: time.Second},
			[]string{"RetryBaseDelay", "RetryMaxDelay"}},
		{"only a short max", tokenmanager.Settings{GetCredentials: okProvider, RetryMaxDelay: 100 * time.Millisecond}, nil},
		{"only a long base", tokenmanager.Settings{GetCredentials: okProvider, RetryBaseDelay: time.Minute}, nil},
		{"negative timeouts", tokenmanager.Settings{GetCredentials: okProvider, FetchTimeout: -1, WaitTimeout: -1, EventBuffer: -1},
			[]string{"FetchTimeout", "WaitTimeout", "EventBuffer"}},
		{"every bad field at once", tokenmanager.Settings{RefreshBuffer: -1, TokenTryThreshold: -2, RefreshOnStatus: []int{1000}},
			[]string{"GetCredentials", "RefreshBuffer", "TokenTryThreshold", "1000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v; want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil; want an error mentioning %v", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q; want it to mention %q", err, w)
				}
			}
			if !strings.HasPrefix(err.Error(), "tokenmanager: ") {
				t.Errorf("error %q does not start with the package name", err)
			}
		})
	}
}

func TestSettings_WithDefaults(t *testing.T) {
	d := tokenmanager.Settings{}.WithDefaults()
	checks := []struct {
		name      string
		got, want any
	}{
		{"RefreshBuffer", d.RefreshBuffer, 10 * time.Second},
		{"Header", d.Header, "Authorization"},
		{"Formatter", d.Formatter("abc"), "Bearer abc"},
		{"RefreshOnStatus", fmt.Sprint(d.RefreshOnStatus), "[401]"},
		{"TokenTryThreshold", d.TokenTryThreshold, 10},
		{"MaxRecoveryTries", d.MaxRecoveryTries, 5},
		{"AddTokenToLogs", d.AddTokenToLogs, false},
		{"Clock set", d.Clock != nil, true},
		{"RetryMaxDelay", d.RetryMaxDelay, 30 * time.Second},
		{"FetchTimeout", d.FetchTimeout, 30 * time.Second},
		{"WaitTimeout", d.WaitTimeout, 30 * time.Second},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v; want %v", c.name, c.got, c.want)
		}
	}
	if d.RetryBaseDelay <= 0 || d.RetryBaseDelay > d.RetryMaxDelay {
		t.Errorf("RetryBaseDelay = %v; want in (0, RetryMaxDelay]", d.RetryBaseDelay)
	}
	if got := (tokenmanager.Settings{MaxRecoveryTries: -1}).WithDefaults().MaxRecoveryTries; got != -1 {
		t.Errorf("MaxRecoveryTries -1 became %d; negative means no resend and must be kept", got)
	}
	// The copy must not share the caller's slice.
	codes := []int{401}
	s := tokenmanager.Settings{RefreshOnStatus: codes}.WithDefaults()
	s.RefreshOnStatus[0] = 403
	if codes[0] != 401 {
		t.Error("WithDefaults shares RefreshOnStatus with the caller")
	}
}

func TestToken_UnmarshalJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    tokenmanager.Token
		wantErr bool
	}{
		{`{"access_token":"a","expires_in":3600}`, tokenmanager.Token{AccessToken: "a", ExpiresIn: 3600}, false},
		{`{"access_token":"a","expires_in":"3600"}`, tokenmanager.Token{AccessToken: "a", ExpiresIn: 3600}, false},
		{`{"access_token":"a","expires_in":" 60 "}`, tokenmanager.Token{AccessToken: "a", ExpiresIn: 60}, false},
		{`{"access_token":"a","expires_in":3600.0}`, tokenmanager.Token{AccessToken: "a", ExpiresIn: 3600}, false},
		{`{"access_token":"a"}`, tokenmanager.Token{AccessToken: "a"}, false},
		{`{"access_token":"a","expires_in":null}`, tokenmanager.Token{AccessToken: "a"}, false},
		{`{"access_token":"a","expires_in":""}`, tokenmanager.Token{AccessToken: "a"}, false},
		{`{"access_token":"a","expires_in":-5}`, tokenmanager.Token{AccessToken: "a", ExpiresIn: -5}, false},
		{`{"access_token":"a","token_type":"Bearer","scope":"r w","expires_in":1}`,
			tokenmanager.Token{AccessToken: "a", TokenType: "Bearer", Scope: "r w", ExpiresIn: 1}, false},
		{`{"access_token":"a","expires_in":"soon"}`, tokenmanager.Token{}, true},
		{`{"access_token":"a","expires_in":"0x1p4"}`, tokenmanager.Token{}, true},
		{`{"access_token":"a","expires_in":"1_000"}`, tokenmanager.Token{}, true},
		{`{"access_token":"a","expires_in":"Inf"}`, tokenmanager.Token{}, true},
		{`{"access_token":"a","expires_in":1.5}`, tokenmanager.Token{}, true},
		{`{"access_token":"a","expires_in":true}`, tokenmanager.Token{}, true},
		{`{"access_token":"a","expires_in":{}}`, tokenmanager.Token{}, true},
		{`{"access_token":7}`, tokenmanager.Token{}, true},
		{`not json`, tokenmanager.Token{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var got tokenmanager.Token
			err := json.Unmarshal([]byte(tt.in), &got)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v; wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Errorf("got %#v; want %#v", got, tt.want)
			}
		})
	}
}

func TestToken_StringHidesAccessToken(t *testing.T) {
	tok := tokenmanager.Token{AccessToken: "s3cr3t-value", ExpiresIn: 60}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		if got := fmt.Sprintf(format, tok); strings.Contains(got, "s3cr3t") {
			t.Errorf("Sprintf(%q) = %q; leaks the access token", format, got)
		}
	}
}

func TestToken_Lifetime(t *testing.T) {
	tests := []struct {
		in     int64
		want   time.Duration
		wantOK bool
	}{
		{0, 0, false},
		{-1, 0, false},
		{60, time.Minute, true},
		{1 << 62, 10 * 365 * 24 * time.Hour, true},
	}
	for _, tt := range tests {
		got, ok := tokenmanager.Token{ExpiresIn: tt.in}.Lifetime()
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("Lifetime(%d) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestCheckToken(t *testing.T) {
	for _, bad := range []string{"", "a\r\nX-Evil: 1", "a\x00"} {
		err := tokenmanager.CheckToken(tokenmanager.Token{AccessToken: bad})
		if !errors.Is(err, tokenmanager.ErrInvalidToken) || !tokenmanager.IsPermanent(err) {
			t.Errorf("CheckToken(%q) = %v; want a permanent ErrInvalidToken", bad, err)
		}
	}
	if err := tokenmanager.CheckToken(tokenmanager.Token{AccessToken: "ok"}); err != nil {
		t.Errorf("CheckToken(ok) = %v", err)
	}
}

func TestFetchError(t *testing.T) {
	cause := errors.New("boom")
	err := error(&tokenmanager.FetchError{Attempt: 3, Err: cause})
	if !errors.Is(err, cause) {
		t.Error("FetchError does not unwrap to its cause")
	}
	if got := err.Error(); !strings.Contains(got, "attempt 3") || !strings.Contains(got, "boom") {
		t.Errorf("Error() = %q", got)
	}
}

func TestPanicError(t *testing.T) {
	cause := errors.New("nil map")
	err := error(&tokenmanager.PanicError{Value: cause, Stack: []byte("goroutine 7 [running]:")})
	if !errors.Is(err, cause) || !tokenmanager.IsPermanent(err) {
		t.Errorf("PanicError(%v): errors.Is %v, IsPermanent %v; want both", cause, errors.Is(err, cause), tokenmanager.IsPermanent(err))
	}
	if got, want := err.Error(), "tokenmanager: provider panicked: nil map"; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
	long := &tokenmanager.PanicError{Value: strings.Repeat("x", 10000)}
	if got := long.Error(); len(got) > 300 {
		t.Errorf("Error() of a 10000-byte panic value is %d bytes; want it cut short", len(got))
	}
	if (&tokenmanager.PanicError{Value: 42}).Unwrap() != nil {
		t.Error("Unwrap of a non-error panic value is not nil")
	}
}

func TestFingerprint(t *testing.T) {
	a, b := tokenmanager.Fingerprint("token-a"), tokenmanager.Fingerprint("token-b")
	if len(a) != 16 || a == b || strings.Contains(a, "token") {
		t.Errorf("Fingerprint = %q, %q; want distinct 16-hex-digit values", a, b)
	}
	if a != tokenmanager.Fingerprint("token-a") {
		t.Error("Fingerprint is not stable")
	}
	if tokenmanager.Fingerprint("") != "" {
		t.Error("Fingerprint of the empty token is not empty")
	}
}
