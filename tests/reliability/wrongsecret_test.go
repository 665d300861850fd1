package reliability

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/providers"
)

// TestOAuth2_WrongSecretFailsFast runs a manager with a wrong client secret
// against the real authorization server: every request fails at once with
// the server's typed refusal, instead of waiting out WaitTimeout, and the
// token endpoint is asked once per backoff step, not once per request.
func TestOAuth2_WrongSecretFailsFast(t *testing.T) {
	a := newAuthServer(t, 0, 0)
	mock := clock.NewMock()
	rt := testutil.NewRT(t, tokenmanager.Settings{
		GetCredentials: providers.ClientCredentials(providers.ClientCredentialsConfig{
			TokenURL:     a.token.URL + "/token",
			ClientID:     oauthClientID,
			ClientSecret: "not-the-secret",
			AuthStyle:    providers.AuthStyleInHeader, // auto-detect would try twice per fetch
			HTTPClient:   &http.Client{Transport: newHTTPTransport(t)},
		}),
		Clock:         mock,
		RetryMaxDelay: 10 * time.Second,
	}, newHTTPTransport(t))
	failed := make(chan messages.TokenRequestFailed, 100)
	defer rt.Subscribe(func(ev messages.Event) {
		if e, ok := ev.(messages.TokenRequestFailed); ok {
			failed <- e
		}
	})()

	const steps, perStep = 4, 25
	var took []time.Duration
	for step := range steps {
		for range perStep {
			began := time.Now()
			_, err := doGet(context.Background(), rt, a.api.URL+"/x")
			took = append(took, time.Since(began))
			var re *providers.RetrieveError
			if !errors.As(err, &re) || re.ErrorCode != "invalid_client" || !tokenmanager.IsPermanent(err) {
				t.Fatalf("step %d: err %v; want a permanent *providers.RetrieveError with invalid_client", step, err)
			}
		}
		if got := a.tokenCalls.Load(); got != int64(step+1) {
			t.Fatalf("after step %d: token endpoint calls = %d; want %d, one per backoff step", step, got, step+1)
		}
		mock.Add(10 * time.Second) // past the capped backoff
	}
	for range steps {
		if ev := <-failed; !ev.Permanent {
			t.Errorf("TokenRequestFailed %+v; want Permanent", ev)
		}
	}
	slices.Sort(took)
	t.Logf("wrong secret: %d requests, %d token endpoint calls; per request p50 %v, max %v",
		len(took), a.tokenCalls.Load(), took[len(took)/2], took[len(took)-1])
	// Today's WaitTimeout is 30s; a second leaves room for a loaded CI
	// machine under -race while proving nobody waited it out.
	if max := took[len(took)-1]; max > time.Second {
		t.Errorf("slowest request took %v; want a prompt failure", max)
	}
}
