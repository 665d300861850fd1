package providers_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
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
