package reliability

import (
	"context"
	"io"
	"net/http"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// reasons counts the TokenRefreshed events r recorded by reason.
func reasons(r *testutil.Recorder) map[messages.RefreshReason]int {
	m := map[messages.RefreshReason]int{}
	for _, e := range testutil.EventsOf[messages.TokenRefreshed](r) {
		m[e.Reason]++
	}
	return m
}

// lastFetchError returns the Err of the last TokenRequestFailed event r
// recorded.
func lastFetchError(r *testutil.Recorder) error {
	var err error
	for _, e := range testutil.EventsOf[messages.TokenRequestFailed](r) {
		err = e.Err
	}
	return err
}

// doGet sends a GET through rt and returns the status, reading and closing
// the body.
func doGet(ctx context.Context, rt http.RoundTripper, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// newUnmanagedRT builds a RoundTripper the test closes itself.
func newUnmanagedRT(s tokenmanager.Settings, base http.RoundTripper) (*transport.RoundTripper, error) {
	return transport.New(s, transport.WithBase(base))
}
