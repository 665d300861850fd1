package tokenmanager_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// FuzzTokenJSON: decoding any input into a Token never panics; when it
// succeeds, expires_in was absent, null, a JSON number or a string
// holding a number, and equals what was decoded; and the Token survives
// a marshal/unmarshal round trip unchanged.
func FuzzTokenJSON(f *testing.F) {
	for _, seed := range []string{
		`{"access_token":"abc","token_type":"Bearer","expires_in":3600,"scope":"read write"}`,
		`{"access_token":"abc","expires_in":"3600"}`,
		`{"access_token":"abc","expires_in":" 3600 "}`,
		`{"access_token":"abc","expires_in":3600.0}`,
		`{"access_token":"abc","expires_in":"1e3"}`,
		`{"access_token":"abc","expires_in":-1}`,
		`{"access_token":"abc","expires_in":null}`,
		`{"access_token":"abc","expires_in":""}`,
		`{"access_token":"abc","expires_in":true}`,
		`{"access_token":"abc","expires_in":{}}`,
		`{"access_token":"abc","expires_in":[1]}`,
		`{"access_token":"abc","expires_in":"soon"}`,
		`{"access_token":"abc","expires_in":1.5}`,
		`{"access_token":"abc","expires_in":1e400}`,
		`{"access_token":"abc","expires_in":9223372036854775807}`,
		`{"access_token":"abc","expires_in":9223372036854775808}`,
		`{"access_token":"abc","expires_in":"NaN"}`,
		`{"access_token":"abc","expires_in":"Inf"}`,
		`{"access_token":123}`,
		`{"ACCESS_TOKEN":"abc","Expires_In":"60"}`,
		`{"access_token":"a","expires_in":1,"expires_in":"2"}`,
		`{"access_token":"\u00e9\ud800"}`,
		`null`,
		`[]`,
		`"token"`,
		``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var tok tokenmanager.Token
		if err := json.Unmarshal(data, &tok); err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			return
		}
		// The same document seen by encoding/json alone, with the same
		// field matching (case-insensitive, last duplicate wins).
		var raw struct {
			ExpiresIn json.RawMessage `json:"expires_in"`
		}
		if err := json.Unmarshal(data, &raw); err != nil {
			t.Fatalf("Token decoded %q but a plain struct does not: %v", data, err)
		}
		want, ok := fuzzExpiresIn(raw.ExpiresIn)
		if !ok {
			t.Fatalf("expires_in %s accepted (as %d); want only numbers and numeric strings", raw.ExpiresIn, tok.ExpiresIn)
		}
		if tok.ExpiresIn != want {
			t.Fatalf("expires_in %s decoded as %d; want %d", raw.ExpiresIn, tok.ExpiresIn, want)
		}

		out, err := json.Marshal(tok)
		if err != nil {
			t.Fatalf("Marshal(%#v): %v", tok, err)
		}
		var back tokenmanager.Token
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("Unmarshal(Marshal(tok)) = %v for %s", err, out)
		}
		if back != tok {
			t.Fatalf("round trip changed the token: %+v -> %s -> %+v", tok, out, back)
		}
		again, _ := json.Marshal(back)
		if string(again) != string(out) {
			t.Fatalf("marshalling is not stable: %s then %s", out, again)
		}

		if d, ok := tok.Lifetime(); ok && (d <= 0 || d > 11*365*24*time.Hour) {
			t.Fatalf("Lifetime() = %v for expires_in %d; want positive and capped", d, tok.ExpiresIn)
		}
		_ = tokenmanager.CheckToken(tok)
	})
}

// fuzzExpiresIn is an independent reading of an expires_in value: the
// seconds it stands for, and whether it is acceptable at all (absent,
// null, a number, or a string holding a number; integral values only).
func fuzzExpiresIn(raw json.RawMessage) (int64, bool) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return 0, true
	}
	if s[0] == '"' {
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return 0, false
		}
		s = strings.TrimSpace(str)
		if s == "" {
			return 0, true
		}
	} else if s[0] != '-' && (s[0] < '0' || s[0] > '9') {
		return 0, false // true, false, objects, arrays
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, true
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) || v != math.Trunc(v) || math.Abs(v) > math.MaxInt64/2 {
		return 0, false
	}
	return int64(v), true
}

// fuzzMaxEventBuffer bounds the EventBuffer values this fuzzer hands to
// transport.New: it allocates a queue of that many events per
// subscriber, so larger values only measure the machine's memory.
const fuzzMaxEventBuffer = 1 << 16

// FuzzSettingsValidate: Validate never panics; it reports each invalid
// field, by name, one line per problem, and nothing for valid settings;
// transport.New refuses invalid settings without building anything and
// accepts valid ones.
func FuzzSettingsValidate(f *testing.F) {
	type seed struct {
		provider                  bool
		refreshBuffer             int64
		header                    string
		status1, status2          int
		nStatus                   uint8
		tokenTry, maxRecovery     int
		retryBase, retryMax       int64
		fetchTimeout, waitTimeout int64
		eventBuffer               int
	}
	for _, s := range []seed{
		{provider: true},
		{provider: false},
		{provider: true, refreshBuffer: -1},
		{provider: true, header: "X-Api-Key", status1: 401, status2: 403, nStatus: 2},
		{provider: true, header: "bad header"},
		{provider: true, header: "X-Tok\r\n"},
		{provider: true, status1: 99, nStatus: 1},
		{provider: true, status1: 600, status2: 0, nStatus: 2},
		{provider: true, tokenTry: -3, maxRecovery: -1},
		{provider: true, retryBase: int64(time.Minute)},
		{provider: true, retryBase: 5, retryMax: 4},
		{provider: true, retryBase: -1, retryMax: -1},
		{provider: true, fetchTimeout: -1, waitTimeout: -1, eventBuffer: -1},
		{provider: false, refreshBuffer: -1, header: ":", status1: 1000, nStatus: 1, tokenTry: -1, retryBase: -1, retryMax: -1, fetchTimeout: -1, waitTimeout: -1, eventBuffer: -1},
		{provider: true, refreshBuffer: math.MaxInt64, maxRecovery: math.MinInt, eventBuffer: 1},
	} {
		f.Add(s.provider, s.refreshBuffer, s.header, s.status1, s.status2, s.nStatus, s.tokenTry, s.maxRecovery,
			s.retryBase, s.retryMax, s.fetchTimeout, s.waitTimeout, s.eventBuffer)
	}
	f.Fuzz(func(t *testing.T, provider bool, refreshBuffer int64, header string, status1, status2 int, nStatus uint8,
		tokenTry, maxRecovery int, retryBase, retryMax, fetchTimeout, waitTimeout int64, eventBuffer int) {
		s := tokenmanager.Settings{
			RefreshBuffer:     time.Duration(refreshBuffer),
			Header:            header,
			TokenTryThreshold: tokenTry,
			MaxRecoveryTries:  maxRecovery,
			RetryBaseDelay:    time.Duration(retryBase),
			RetryMaxDelay:     time.Duration(retryMax),
			FetchTimeout:      time.Duration(fetchTimeout),
			WaitTimeout:       time.Duration(waitTimeout),
			EventBuffer:       eventBuffer,
		}
		if provider {
			s.GetCredentials = func(context.Context) (tokenmanager.Token, error) {
				return tokenmanager.Token{AccessToken: "fuzz"}, nil
			}
		}
		switch nStatus % 3 {
		case 1:
			s.RefreshOnStatus = []int{status1}
		case 2:
			s.RefreshOnStatus = []int{status1, status2}
		}

		// What is wrong, worked out independently: one entry per problem,
		// naming the fields it must mention.
		var problems [][]string
		if !provider {
			problems = append(problems, []string{"GetCredentials"})
		}
		if refreshBuffer < 0 {
			problems = append(problems, []string{"RefreshBuffer"})
		}
		if header != "" && !fuzzIsToken(header) {
			problems = append(problems, []string{"Header"})
		}
		for _, code := range s.RefreshOnStatus {
			if code < 400 || code > 599 {
				problems = append(problems, []string{"RefreshOnStatus", strconv.Itoa(code)})
			}
		}
		if tokenTry < 0 {
			problems = append(problems, []string{"TokenTryThreshold"})
		}
		if retryBase < 0 {
			problems = append(problems, []string{"RetryBaseDelay"})
		}
		if retryMax < 0 {
			problems = append(problems, []string{"RetryMaxDelay"})
		}
		if retryBase >= 0 && retryMax >= 0 {
			// A zero side takes its default, bent to fit the other side.
			if retryBase > 0 && retryMax > 0 && retryBase > retryMax {
				problems = append(problems, []string{"RetryBaseDelay", "RetryMaxDelay"})
			}
		}
		if fetchTimeout < 0 {
			problems = append(problems, []string{"FetchTimeout"})
		}
		if waitTimeout < 0 {
			problems = append(problems, []string{"WaitTimeout"})
		}
		if eventBuffer < 0 {
			problems = append(problems, []string{"EventBuffer"})
		}

		err := s.Validate()
		if len(problems) == 0 {
			if err != nil {
				t.Fatalf("Validate() = %v; want nil for %+v", err, s)
			}
		} else {
			if err == nil {
				t.Fatalf("Validate() = nil; want errors about %v", problems)
			}
			msg := err.Error()
			lines := strings.Split(msg, "\n")
			if len(lines) != len(problems) {
				t.Fatalf("Validate() reported %d problems; want %d (%v):\n%s", len(lines), len(problems), problems, msg)
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, "tokenmanager: ") {
					t.Errorf("error line %q does not start with the package name", l)
				}
			}
			for _, p := range problems {
				for _, word := range p {
					if !strings.Contains(msg, word) {
						t.Errorf("Validate() = %q; want it to mention %s", msg, word)
					}
				}
			}
		}

		if err == nil && eventBuffer > fuzzMaxEventBuffer {
			return
		}
		rt, newErr := transport.New(s, transport.WithBase(fuzzNoNetwork{}))
		switch {
		case err != nil && (newErr == nil || rt != nil):
			t.Fatalf("transport.New with invalid settings = %v, %v; want nil and an error", rt, newErr)
		case err == nil && (newErr != nil || rt == nil):
			t.Fatalf("transport.New with valid settings = %v, %v; want a RoundTripper", rt, newErr)
		case rt != nil:
			if cerr := rt.Close(); cerr != nil {
				t.Fatalf("Close: %v", cerr)
			}
		}
	})
}

// fuzzIsToken reports whether s is an RFC 9110 token, as a header name
// must be.
func fuzzIsToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c >= 0x80 || c <= ' ' || c == 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// fuzzNoNetwork is a base transport that must never be used.
type fuzzNoNetwork struct{}

func (fuzzNoNetwork) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, fmt.Errorf("no network in fuzz tests")
}
