package providers_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// TestClientCredentials_retryAfterHonoured checks that a 429's
// Retry-After reaches the token actor's backoff.
func TestClientCredentials_retryAfterHonoured(t *testing.T) {
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", "90")
				w.WriteHeader(status)
			}))
			defer idp.Close()
			rt, err := transport.New(tokenmanager.Settings{
				GetCredentials: providers.ClientCredentials(providers.ClientCredentialsConfig{TokenURL: idp.URL, ClientID: "svc"}),
				Clock:          clock.NewMock(),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer rt.Close()
			failed := make(chan messages.TokenRequestFailed, 8)
			defer rt.Subscribe(func(ev messages.Event) {
				if e, ok := ev.(messages.TokenRequestFailed); ok {
					failed <- e
				}
			})()

			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				_, err := rt.Token(ctx) // waits through failures until ctx ends
				errc <- err
			}()
			e := <-failed
			cancel()
			<-errc
			if e.RetryIn != 90*time.Second {
				t.Errorf("RetryIn = %v; want 90s from Retry-After", e.RetryIn)
			}
			var re *providers.RetrieveError
			if !errors.As(e.Err, &re) || re.StatusCode != status {
				t.Errorf("Err = %v; want a *RetrieveError with status %d", e.Err, status)
			}
		})
	}
}

// TestResponseTooLarge_requestFailsFast checks that a token answer over
// 1 MiB fails a waiting request at once with ErrResponseTooLarge, without
// any retry: the mock clock never moves, so a retry's backoff would never
// end, and WaitTimeout would be what ends the request.
func TestResponseTooLarge_requestFailsFast(t *testing.T) {
	var fetches atomic.Int32
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"`+strings.Repeat("x", 1<<20)+`"}`)
	}))
	defer idp.Close()
	var apiCalls atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { apiCalls.Add(1) }))
	defer api.Close()

	mock := clock.NewMock()
	start := mock.Now()
	const wait = 5 * time.Second
	rt, err := transport.New(tokenmanager.Settings{
		GetCredentials: providers.ClientCredentials(providers.ClientCredentialsConfig{TokenURL: idp.URL, ClientID: "svc", ClientSecret: "s"}),
		Clock:          mock,
		WaitTimeout:    wait,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()

	began := time.Now()
	resp, err := rt.Client().Get(api.URL)
	if resp != nil {
		resp.Body.Close()
	}
	if elapsed := time.Since(began); elapsed >= wait {
		t.Errorf("the request took %v, as long as WaitTimeout; want it to fail at once", elapsed)
	}
	if !errors.Is(err, providers.ErrResponseTooLarge) || !tokenmanager.IsPermanent(err) {
		t.Fatalf("err = %v; want a permanent error wrapping providers.ErrResponseTooLarge", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v; want it to fail before its deadline", err)
	}
	if got := mock.Now(); !got.Equal(start) {
		t.Errorf("mock clock at %v; want it unmoved", got.Sub(start))
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("%d token requests; want 1, no retry", n)
	}
	if n := apiCalls.Load(); n != 0 {
		t.Errorf("the API got %d requests; want none without a token", n)
	}
}
