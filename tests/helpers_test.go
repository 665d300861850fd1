package tests

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"

	proto "github.com/asynkron/protoactor-go/actor"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/actor"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/messages"
)

// apiURL is the address the in-memory backend answers; nothing is dialled.
const apiURL = "https://api.test/resource"

// result is what one request came back with.
type result struct {
	status int
	auth   string // the Authorization header the backend saw last for it
	body   string
	err    error
}

// send sends a GET to the in-memory backend with ctx, tagged with id, and
// reads and closes the response.
func send(ctx context.Context, rt http.RoundTripper, id string) result {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL, nil)
	if err != nil {
		return result{err: err}
	}
	if id != "" {
		req.Header.Set("X-Request-Id", id)
	}
	return finish(rt.RoundTrip(req))
}

func finish(resp *http.Response, err error) result {
	if err != nil {
		return result{err: err}
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	auth := ""
	if resp.Request != nil {
		auth = resp.Request.Header.Get("Authorization")
	}
	return result{status: resp.StatusCode, auth: auth, body: string(data), err: err}
}

// mustOK sends a request and fails the test unless it gets a 200.
func mustOK(t *testing.T, rt http.RoundTripper) result {
	t.Helper()
	r := send(context.Background(), rt, "")
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("request: status %d, err %v; want 200", r.status, r.err)
	}
	return r
}

// spawn spawns a token actor in system and stops it when the test ends.
func spawn(t *testing.T, system *proto.ActorSystem, s tokenmanager.Settings) *proto.PID {
	t.Helper()
	props, err := actor.NewProps(s)
	if err != nil {
		t.Fatalf("actor.NewProps: %v", err)
	}
	pid := system.Root.Spawn(props)
	t.Cleanup(func() {
		if err := system.Root.StopFuture(pid).Wait(); err != nil {
			t.Errorf("stopping the token actor: %v", err)
		}
	})
	return pid
}

// ask sends messages.Get to pid and returns the reply.
func ask(t *testing.T, system *proto.ActorSystem, pid *proto.PID) *messages.TokenResult {
	t.Helper()
	reply, err := system.Root.RequestFuture(pid, messages.Get{}, testutil.Patience).Result()
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	res, ok := reply.(*messages.TokenResult)
	if !ok {
		t.Fatalf("Get replied %T; want *messages.TokenResult", reply)
	}
	return res
}

// concurrently runs n copies of fn at once and returns their results.
func concurrently(n int, fn func(i int) result) []result {
	out := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			out[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return out
}
