package providers_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/transport"
	"github.com/go-tokenmanager/tokenmanager/users"
)

func ExampleRefreshToken() {
	// A token endpoint that rotates refresh tokens: rt-1 is spent for
	// at-1 and rt-2, and so on. In real life, your authorization server's.
	var n atomic.Int32
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		i := n.Add(1)
		fmt.Printf("token endpoint: grant_type=%s, refresh_token=%s\n", r.PostForm.Get("grant_type"), r.PostForm.Get("refresh_token"))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"at-%d","expires_in":3600,"refresh_token":"rt-%d"}`, i, i+1)
	}))
	defer idp.Close()

	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	store, err := users.OpenFile(filepath.Join(dir, "tokens.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()
	// The keys come from a setting; the first one seals. Here a fixed one.
	keys, err := users.ParseKeys("k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	if err != nil {
		fmt.Println(err)
		return
	}
	ann := users.Identity{User: "ann", Client: "my-app"}.String()
	// The refresh token of ann's sign in.
	if _, err := users.Seed(context.Background(), store, keys, ann, "rt-1"); err != nil {
		fmt.Println(err)
		return
	}

	rt, err := transport.New(tokenmanager.Settings{
		GetCredentials: providers.RefreshToken(providers.RefreshTokenConfig{
			TokenURL: idp.URL, Identity: ann, Store: store, Keys: keys,
			Auth: providers.NoClientAuth("my-app"),
		}),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Close()
	rotated := make(chan messages.RefreshTokenRotated, 1)
	defer rt.Subscribe(func(ev messages.Event) {
		if e, ok := ev.(messages.RefreshTokenRotated); ok {
			rotated <- e
		}
	})()

	tok, err := rt.Token(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("access token:", tok.AccessToken)
	e := <-rotated
	fmt.Printf("rotated: %s, version %d, sealed with %s\n", e.Identity, e.Version, e.KeyID)
	// Output:
	// token endpoint: grant_type=refresh_token, refresh_token=rt-1
	// access token: at-1
	// rotated: user=ann|client=my-app, version 2, sealed with k1
}
