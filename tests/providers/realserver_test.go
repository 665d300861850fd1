package providers_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	oauth2 "github.com/go-oauth2/oauth2/v4"
	"github.com/go-oauth2/oauth2/v4/manage"
	"github.com/go-oauth2/oauth2/v4/models"
	"github.com/go-oauth2/oauth2/v4/server"
	"github.com/go-oauth2/oauth2/v4/store"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// authServer is a real OAuth 2.0 server (github.com/go-oauth2/oauth2)
// on 127.0.0.1, with one registered client, and an API it protects.
type authServer struct {
	manager *manage.Manager
	srv     *server.Server
	token   *httptest.Server // POST /token
	api     *httptest.Server // accepts only the server's live tokens
}

func newAuthServer(t *testing.T, clientID, secret string) *authServer {
	t.Helper()
	manager := manage.NewDefaultManager()
	manager.MustTokenStorage(store.NewMemoryTokenStore())
	clients := store.NewClientStore()
	if err := clients.Set(clientID, &models.Client{ID: clientID, Secret: secret}); err != nil {
		t.Fatal(err)
	}
	manager.MapClientStorage(clients)
	srv := server.NewDefaultServer(manager)
	srv.SetAllowedGrantType(oauth2.ClientCredentials)
	a := &authServer{manager: manager, srv: srv}
	a.token = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = srv.HandleTokenRequest(w, r) // it writes its own error answers
	}))
	a.api = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ti, err := srv.ValidationBearerToken(r)
		if err != nil {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "hello "+ti.GetClientID())
	}))
	t.Cleanup(func() {
		a.api.Close()
		a.token.Close()
	})
	return a
}

func TestClientCredentials_goOAuth2Server(t *testing.T) {
	const clientID, secret = "billing-service", "s3cr3t-value"
	tests := []struct {
		name       string
		formClient bool // the server reads client_id/client_secret from the body
		style      providers.AuthStyle
	}{
		{name: "basic auth", style: providers.AuthStyleInHeader},
		{name: "body params", formClient: true, style: providers.AuthStyleInParams},
		{name: "auto-detect, server wants basic", style: providers.AuthStyleAutoDetect},
		{name: "auto-detect, server wants body", formClient: true, style: providers.AuthStyleAutoDetect},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuthServer(t, clientID, secret)
			if tt.formClient {
				a.srv.SetClientInfoHandler(server.ClientFormHandler)
			}
			p := providers.ClientCredentials(providers.ClientCredentialsConfig{
				TokenURL: a.token.URL, ClientID: clientID, ClientSecret: secret, AuthStyle: tt.style,
			})
			tok, err := p(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if tok.AccessToken == "" || tok.ExpiresIn != 7200 || tok.TokenType != "Bearer" {
				t.Errorf("got %v; want a Bearer token living 7200s (go-oauth2's default)", tok)
			}
			if _, err := a.manager.LoadAccessToken(context.Background(), tok.AccessToken); err != nil {
				t.Errorf("the server does not know the token: %v", err)
			}
		})
	}
}

func TestClientCredentials_goOAuth2Server_wrongSecret(t *testing.T) {
	a := newAuthServer(t, "svc", "right-secret")
	_, err := providers.ClientCredentials(providers.ClientCredentialsConfig{
		TokenURL: a.token.URL, ClientID: "svc", ClientSecret: "wrong-secret",
	})(context.Background())
	var re *providers.RetrieveError
	if !errors.As(err, &re) || re.StatusCode != http.StatusUnauthorized || re.ErrorCode != "invalid_client" {
		t.Fatalf("err = %v; want 401 invalid_client", err)
	}
}

// TestClientCredentials_transport runs the whole stack: transport.New with
// ClientCredentials against the real server, a protected API, and a
// revocation the RoundTripper recovers from.
func TestClientCredentials_transport(t *testing.T) {
	a := newAuthServer(t, "svc", "s3cr3t-value")
	rt, err := transport.New(tokenmanager.Settings{
		GetCredentials: providers.ClientCredentials(providers.ClientCredentialsConfig{
			TokenURL: a.token.URL, ClientID: "svc", ClientSecret: "s3cr3t-value",
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	events := make(chan messages.Event, 64)
	defer rt.Subscribe(func(ev messages.Event) { events <- ev })()

	get := func() string { t.Helper(); return getOK(t, rt.Client(), a.api.URL+"/things") }
	if got := get(); got != "hello svc" {
		t.Errorf("body = %q; want %q", got, "hello svc")
	}
	first, err := rt.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	// The server revokes the token; the next request recovers.
	if err := a.manager.RemoveAccessToken(context.Background(), first.AccessToken); err != nil {
		t.Fatal(err)
	}
	if got := get(); got != "hello svc" {
		t.Errorf("body after revocation = %q; want %q", got, "hello svc")
	}
	second, err := rt.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if second.AccessToken == first.AccessToken {
		t.Error("the token was not replaced after revocation")
	}

	// Two publishers, each in its own order: the actor (token_refreshed
	// for the cold start, then for the invalidation) and the RoundTripper
	// (auth_failed, then recovery_tried). Events of one may overtake the
	// other's: the actor's arrive through one more hop.
	var actorSide, requestSide []string
	for range 4 {
		switch e := (<-events).(type) {
		case messages.TokenRefreshed:
			actorSide = append(actorSide, string(e.Reason))
		default:
			requestSide = append(requestSide, e.Name())
		}
	}
	if want := []string{"cold_start", "invalidated"}; !slices.Equal(actorSide, want) {
		t.Errorf("token_refreshed reasons = %v; want %v", actorSide, want)
	}
	if want := []string{"auth_failed", "recovery_tried"}; !slices.Equal(requestSide, want) {
		t.Errorf("request-side events = %v; want %v", requestSide, want)
	}
}

// getOK GETs url through client and returns the body, failing the test
// unless the answer is 200.
func getOK(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	return string(body)
}
