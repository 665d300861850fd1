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

	"golang.org/x/oauth2"

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

func ExampleNewMulti() {
	// An API that echoes the token it got.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Header.Get("Authorization"))
	}))
	defer api.Close()

	m, err := transport.NewMulti(tokenmanager.OwnerSettings{
		SettingsFor: func(identity string) (tokenmanager.Settings, error) {
			return tokenmanager.Settings{
				GetCredentials: func(ctx context.Context) (tokenmanager.Token, error) {
					// Call this identity's token endpoint here.
					return tokenmanager.Token{AccessToken: identity + "-token", ExpiresIn: 3600}, nil
				},
			}, nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	get := func(client *http.Client, ctx context.Context) string {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	// The identity from the request's context...
	fmt.Println(get(m.Client(), transport.WithIdentity(context.Background(), "acme")))
	fmt.Println(get(m.Client(), transport.WithIdentity(context.Background(), "globex")))
	// ...or a client bound to one identity.
	fmt.Println(get(&http.Client{Transport: m.For("initech")}, context.Background()))
	// Output:
	// Bearer acme-token
	// Bearer globex-token
	// Bearer initech-token
}

func ExampleWithResolver() {
	// Two APIs, each wanting a token for its own audience.
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Header.Get("Authorization"))
	})
	orders, billing := httptest.NewServer(echo), httptest.NewServer(echo)
	defer orders.Close()
	defer billing.Close()
	audience := map[string]string{orders.Listener.Addr().String(): "aud=orders", billing.Listener.Addr().String(): "aud=billing"}

	m, err := transport.NewMulti(tokenmanager.OwnerSettings{
		SettingsFor: func(identity string) (tokenmanager.Settings, error) {
			return tokenmanager.Settings{
				GetCredentials: func(ctx context.Context) (tokenmanager.Token, error) {
					return tokenmanager.Token{AccessToken: "token-for-" + identity, ExpiresIn: 3600}, nil
				},
			}, nil
		},
	}, transport.WithResolver(func(r *http.Request) (string, error) {
		if aud, ok := audience[r.URL.Host]; ok {
			return aud, nil
		}
		return "", fmt.Errorf("no audience for %s", r.URL.Host)
	}))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	for _, url := range []string{orders.URL, billing.URL} {
		resp, err := m.Client().Get(url)
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(body))
	}
	// Output:
	// Bearer token-for-aud=orders
	// Bearer token-for-aud=billing
}

func ExampleRoundTripper_Token() {
	rt, err := transport.New(tokenmanager.Settings{
		GetCredentials: func(ctx context.Context) (tokenmanager.Token, error) {
			return tokenmanager.Token{AccessToken: "abc123", ExpiresIn: 3600}, nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close()

	// A client of another protocol: take the token, use it, and say when
	// the other side rejected it.
	tok, err := rt.Token(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok.AccessToken, tok.ExpiresIn > 3590) // ExpiresIn counts from now

	// The other side rejected it: drop it, and fetch a fresh one unless
	// the manager holds because every new token is being rejected.
	retry := rt.Invalidate(tok.AccessToken)
	fmt.Println("retry:", retry)
	// Output:
	// abc123 true
	// retry: true
}

func ExampleRoundTripper_TokenSource() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "the API saw %q", r.Header.Get("Authorization"))
	}))
	defer api.Close()

	rt, err := transport.New(tokenmanager.Settings{
		GetCredentials: func(ctx context.Context) (tokenmanager.Token, error) {
			return tokenmanager.Token{AccessToken: "abc123", TokenType: "Bearer", ExpiresIn: 3600}, nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close()

	// Any golang.org/x/oauth2 consumer can draw on the manager.
	client := oauth2.NewClient(context.Background(), rt.TokenSource())
	resp, err := client.Get(api.URL)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: the API saw "Bearer abc123"
}
