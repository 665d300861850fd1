package providers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/observability"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// TestNewGrants_secretsNeverInEventsOrLogs runs every new grant through
// transport.New against a server that echoes the whole request in its
// error answer, and checks that no assertion, subject or actor token
// shows in the error Token returns, in any event, or in the slog records
// observability.SlogHandler writes from them (text and JSON), echoed
// as they are or at the end of a sentence.
func TestNewGrants_secretsNeverInEventsOrLogs(t *testing.T) {
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{
			"error": "invalid_grant",
			"error_description": fmt.Sprintf("got %s; assertion %s. client_assertion %s. subject %s. actor %s.", body,
				form.Get("assertion"), form.Get("client_assertion"), form.Get("subject_token"), form.Get("actor_token")),
		})
	}))
	defer idp.Close()

	const assertion, subject, actor = "bearer.assertion.value", "subject-token+/=", "actor token%"
	var mu sync.Mutex
	var clientAssertions []string
	signer := func(ctx context.Context, r providers.AssertionRequest) (string, error) {
		tok := fmt.Sprintf("client.assertion.%d", time.Now().UnixNano())
		mu.Lock()
		clientAssertions = append(clientAssertions, tok)
		mu.Unlock()
		return tok, nil
	}
	key := newECKey(t)
	pk, err := providers.PrivateKeyJWT(providers.PrivateKeyJWTConfig{ClientID: "c", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	grants := map[string]tokenmanager.TokenProvider{
		"client credentials, private_key_jwt": providers.ClientCredentialsGrant(providers.GrantConfig{TokenURL: idp.URL, Auth: pk}),
		"client credentials, client assertion": providers.ClientCredentialsGrant(providers.GrantConfig{TokenURL: idp.URL,
			Auth: providers.ClientAssertion("c", signer)}),
		"JWT bearer": providers.JWTBearer(providers.JWTBearerConfig{TokenURL: idp.URL,
			Assertion: func(context.Context, providers.AssertionRequest) (string, error) { return assertion, nil }}),
		"token exchange": providers.TokenExchange(providers.TokenExchangeConfig{TokenURL: idp.URL,
			Auth:             providers.ClientAssertion("c", signer),
			SubjectToken:     func(context.Context) (string, error) { return subject, nil },
			SubjectTokenType: providers.TokenTypeJWT,
			ActorToken:       func(context.Context) (string, error) { return actor, nil },
			ActorTokenType:   providers.TokenTypeJWT,
		}),
	}
	for name, p := range grants {
		t.Run(name, func(t *testing.T) {
			var logs bytes.Buffer
			text, js := slog.New(slog.NewTextHandler(&logs, nil)), slog.New(slog.NewJSONHandler(&logs, nil))
			rt, err := transport.New(tokenmanager.Settings{GetCredentials: p})
			if err != nil {
				t.Fatal(err)
			}
			defer rt.Close()
			var events []messages.Event
			defer rt.Subscribe(func(ev messages.Event) {
				mu.Lock()
				defer mu.Unlock()
				events = append(events, ev)
				observability.SlogHandler(text)(ev)
				observability.SlogHandler(js)(ev)
			})()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, tokErr := rt.Token(ctx)
			if tokErr == nil || !tokenmanager.IsPermanent(tokErr) {
				t.Fatalf("Token: %v; want the permanent invalid_grant", tokErr)
			}
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				mu.Lock()
				n := len(events)
				mu.Unlock()
				if n > 0 {
					break
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(events) == 0 {
				t.Fatal("no event")
			}
			all := fmt.Sprintf("%v %+v %#v", tokErr, tokErr, tokErr)
			for _, ev := range events {
				all += fmt.Sprintf(" %v %+v %#v", ev, ev, ev)
			}
			all += logs.String()
			secrets := append([]string{assertion, subject, actor}, clientAssertions...)
			for _, s := range secrets {
				for _, form := range []string{s, url.QueryEscape(s), url.PathEscape(s)} {
					if strings.Contains(all, form) {
						t.Errorf("%q shows in the error, an event or a log: %.400s", form, all)
					}
				}
			}
			if !strings.Contains(all, "[redacted]") || !strings.Contains(logs.String(), "invalid_grant") {
				t.Errorf("want the echoed values redacted and the refusal logged: %.400s", all)
			}
		})
	}
}
