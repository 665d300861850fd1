package transport_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

func ExampleNew() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "the API saw %q", r.Header.Get("Authorization"))
	}))
	defer api.Close()

	rt, err := transport.New(tokenmanager.Settings{
		GetCredentials: func(ctx context.Context) (tokenmanager.Token, error) {
			// Call your token endpoint here.
			return tokenmanager.Token{AccessToken: "abc123", ExpiresIn: 3600}, nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close()

	resp, err := rt.Client().Get(api.URL)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: the API saw "Bearer abc123"
}

func ExampleRoundTripper_Subscribe() {
	// An API that rejects the first token it sees.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer token-1" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	defer api.Close()

	n := 0
	rt, err := transport.New(tokenmanager.Settings{
		GetCredentials: func(ctx context.Context) (tokenmanager.Token, error) {
			n++ // the actor calls the provider one fetch at a time
			return tokenmanager.Token{AccessToken: fmt.Sprintf("token-%d", n), ExpiresIn: 3600}, nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close()

	events := make(chan messages.Event, 10)
	unsubscribe := rt.Subscribe(func(ev messages.Event) { events <- ev })
	defer unsubscribe()

	resp, err := rt.Client().Get(api.URL)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println("status:", resp.StatusCode)

	// The actor's events (token_refreshed) and the request's may
	// interleave, so print them sorted.
	var names []string
	for range 4 {
		names = append(names, (<-events).Name())
	}
	slices.Sort(names)
	fmt.Println(strings.Join(names, "\n"))
	// Output:
	// status: 200
	// auth_failed
	// recovery_tried
	// token_refreshed
	// token_refreshed
}
