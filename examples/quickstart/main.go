// Command quickstart shows tokenmanager at work against a token endpoint
// and a protected API that it starts itself on 127.0.0.1: tokens are
// cached, refreshed before they expire, and when the API revokes them the
// request recovers with a fresh one. It exits on its own after ~7 seconds.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

func main() {
	start := time.Now()
	logf := func(format string, args ...any) {
		fmt.Printf("[%5.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	// A token endpoint that issues 3-second tokens, and an API that
	// accepts only tokens it issued and has not revoked.
	var (
		mu     sync.Mutex
		valid  = map[string]time.Time{}
		issued atomic.Int64
	)
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 8)
		rand.Read(b)
		tok := hex.EncodeToString(b)
		mu.Lock()
		valid[tok] = time.Now().Add(3 * time.Second)
		mu.Unlock()
		issued.Add(1)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3})
	}))
	defer tokens.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		exp, ok := valid[tok]
		mu.Unlock()
		if !ok || time.Now().After(exp) {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, "hello")
	}))
	defer api.Close()

	// The token provider: any function returning a Token will do.
	provider := func(ctx context.Context) (tokenmanager.Token, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokens.URL, nil)
		if err != nil {
			return tokenmanager.Token{}, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return tokenmanager.Token{}, err
		}
		defer resp.Body.Close()
		var tok tokenmanager.Token
		return tok, json.NewDecoder(resp.Body).Decode(&tok)
	}

	rt, err := transport.New(tokenmanager.Settings{
		GetCredentials: provider,
		RefreshBuffer:  time.Second, // refresh 1s before the 3s token expires
	})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close()

	unsubscribe := rt.Subscribe(func(ev messages.Event) {
		switch e := ev.(type) {
		case messages.TokenRefreshed:
			logf("event: %s (fetch took %v)", e.Message, e.FetchDuration.Round(10*time.Microsecond))
		case messages.AuthFailed:
			logf("event: auth failed: %s", e.Message)
		case messages.RecoveryTried:
			logf("event: recover: %s", e.Message)
		case messages.RecoveryAborted:
			logf("event: %s", e.Message)
		case messages.TokenRequestFailed:
			logf("event: token request failed: %v", e.Err)
		}
	})
	defer unsubscribe()

	client := rt.Client()
	call := func(n int) {
		resp, err := client.Get(api.URL + "/hello")
		if err != nil {
			logf("request %d: error: %v", n, err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		logf("request %d: %d %s", n, resp.StatusCode, body)
	}

	logf("sending a request every 500ms; tokens live 3s and are refreshed 1s early")
	for n := 1; n <= 14; n++ {
		if n == 9 {
			mu.Lock()
			clear(valid)
			mu.Unlock()
			logf("the API revokes every token; the next request will recover")
		}
		call(n)
		time.Sleep(500 * time.Millisecond)
	}
	logf("done: 14 requests, %d tokens fetched (cold start, early refreshes, one recovery)", issued.Load())
}
