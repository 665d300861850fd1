package transport_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// FuzzHeaderFormatter: any token string and header name, through a
// RoundTripper whose provider returns that token. Nothing panics; an
// invalid header name is refused by New; an empty token or one holding
// CR, LF or NUL is refused as an invalid token and never sent; any other
// token reaches the base as exactly Formatter(token), in exactly one
// header value.
func FuzzHeaderFormatter(f *testing.F) {
	for _, s := range []struct {
		token, header string
		custom        bool
	}{
		{"abc", "", false},
		{"abc", "X-Api-Key", true},
		{"abc", "x-api-key", false},
		{"", "", false},
		{"a\r\nX-Injected: 1", "", false},
		{"a\nb", "Authorization", true},
		{"a\rb", "", false},
		{"a\x00b", "", false},
		{" padded ", "", false},
		{"tab\there", "", true},
		{"\x7f\x01", "", false},
		{"caf\xc3\xa9\xff", "X-Token", false},
		{strings.Repeat("t", 8<<10), "", false},
		{"abc", "Bad Header", false},
		{"abc", "X-Tok:en", false},
		{"abc", "X-Tok\r\n", false},
		{"abc", "Host", false},
		{"abc", "Content-Length", true},
	} {
		f.Add(s.token, s.header, s.custom)
	}
	f.Fuzz(func(t *testing.T, token, header string, custom bool) {
		s := tokenmanager.Settings{
			GetCredentials: func(context.Context) (tokenmanager.Token, error) {
				return tokenmanager.Token{AccessToken: token, ExpiresIn: 3600}, nil
			},
			Header: header,
			Clock:  clock.NewMock(),
		}
		format := tokenmanager.BearerFormatter
		if custom {
			format = func(tok string) string { return "Key " + tok }
			s.Formatter = format
		}
		var (
			mu    sync.Mutex
			sent  int
			value []string
		)
		base := testutil.RoundTripFunc(func(req *http.Request) (*http.Response, error) {
			mu.Lock()
			sent++
			value = req.Header.Values(header)
			if header == "" {
				value = req.Header.Values("Authorization")
			}
			mu.Unlock()
			return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: req}, nil
		})
		rt, err := transport.New(s, transport.WithBase(base))
		if s.Validate() != nil {
			if err == nil || rt != nil {
				t.Fatalf("New with header %q = %v, %v; want nil and an error", header, rt, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("New with header %q: %v", header, err)
		}
		defer rt.Close()

		failed := make(chan error, 1)
		unsub := rt.Subscribe(func(ev messages.Event) {
			if e, ok := ev.(messages.TokenRequestFailed); ok {
				select {
				case failed <- e.Err:
				default:
				}
			}
		})
		defer unsub()

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		type result struct {
			resp *http.Response
			err  error
		}
		done := make(chan result, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.test/fuzz", nil)
			resp, err := rt.RoundTrip(req)
			done <- result{resp, err}
		}()

		invalid := token == "" || strings.ContainsAny(token, "\r\n\x00")
		var r result
		select {
		case r = <-done:
		case ferr := <-failed:
			if !invalid {
				t.Fatalf("token %q refused: %v", token, ferr)
			}
			if !errors.Is(ferr, tokenmanager.ErrInvalidToken) {
				t.Errorf("token %q refused with %v; want ErrInvalidToken", token, ferr)
			}
			if token != "" && strings.Contains(ferr.Error(), token) {
				t.Errorf("the refusal %q quotes the token", ferr)
			}
			cancel() // the request would wait through retries
			r = <-done
		}
		mu.Lock()
		defer mu.Unlock()
		if invalid {
			if r.err == nil {
				t.Fatalf("token %q: request succeeded; want an error", token)
			}
			if sent != 0 {
				t.Fatalf("token %q: base saw %d requests carrying %q; want none", token, sent, value)
			}
			return
		}
		if r.err != nil {
			t.Fatalf("token %q, header %q: %v", token, header, r.err)
		}
		r.resp.Body.Close()
		if want := format(token); sent != 1 || len(value) != 1 || value[0] != want {
			t.Fatalf("token %q, header %q: base saw %d requests with values %q; want one with %q", token, header, sent, value, want)
		}
	})
}
