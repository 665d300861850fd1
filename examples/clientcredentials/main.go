// Command clientcredentials shows providers.ClientCredentials at work.
//
// By default it starts, on 127.0.0.1, a small OAuth 2.0 client-credentials
// server with one registered client and an API that accepts only that
// server's live tokens; it calls the API, has the server
// revoke the token, and calls again: the request recovers with a fresh
// token. It exits on its own in about a second.
//
// Against your own identity server, give its token endpoint and client:
//
//	TOKEN_URL=https://YOUR_TENANT.auth0.com/oauth/token \
//	CLIENT_ID=... CLIENT_SECRET=... \
//	go run ./examples/clientcredentials -audience https://api.example.com/ [-api-url https://api.example.com/things]
//
// A token URL or API URL that is plain http to a host other than loopback
// is refused, so the secret and the token never travel in clear text;
// -allow-insecure-http (off by default) lifts that, for where something
// else protects the traffic (a service-mesh sidecar terminating TLS, a
// test rig).
//
// It then fetches one token and prints its type, lifetime and fingerprint
// (never the token itself), and calls -api-url with it if given.
package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/observability"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

func main() {
	cfg, apiURL, err := parseArgs(flag.NewFlagSet(os.Args[0], flag.ExitOnError), os.Args[1:])
	if err != nil {
		fail(err)
	}
	if cfg.TokenURL == "" {
		if err := runLocal(cfg); err != nil {
			fail(err)
		}
		return
	}
	if err := runRemote(cfg, apiURL); err != nil {
		fail(err)
	}
}

// parseArgs reads the command line into fs: the provider's config and the
// API to call.
func parseArgs(fs *flag.FlagSet, args []string) (providers.ClientCredentialsConfig, string, error) {
	var (
		tokenURL     = fs.String("token-url", os.Getenv("TOKEN_URL"), "token endpoint (env TOKEN_URL); empty: start a local OAuth 2.0 server")
		clientID     = fs.String("client-id", os.Getenv("CLIENT_ID"), "client id (env CLIENT_ID)")
		clientSecret = fs.String("client-secret", os.Getenv("CLIENT_SECRET"), "client secret (env CLIENT_SECRET)")
		scopes       = fs.String("scopes", os.Getenv("SCOPES"), "space- or comma-separated scopes (env SCOPES)")
		audience     = fs.String("audience", os.Getenv("AUDIENCE"), "Auth0 audience parameter (env AUDIENCE)")
		resource     = fs.String("resource", os.Getenv("RESOURCE"), "Entra ID v1 resource parameter (env RESOURCE)")
		apiURL       = fs.String("api-url", os.Getenv("API_URL"), "API to call with the token (env API_URL)")
		authStyle    = fs.String("auth-style", "auto", "client authentication: auto, header or params")
		insecure     = fs.Bool("allow-insecure-http", false, "allow plain http token and API URLs to hosts other than loopback; "+
			"only where something else protects the traffic (a service-mesh sidecar terminating TLS)")
	)
	if err := fs.Parse(args); err != nil {
		return providers.ClientCredentialsConfig{}, "", err
	}
	style, ok := map[string]providers.AuthStyle{
		"auto": providers.AuthStyleAutoDetect, "header": providers.AuthStyleInHeader, "params": providers.AuthStyleInParams,
	}[*authStyle]
	if !ok {
		return providers.ClientCredentialsConfig{}, "", fmt.Errorf("-auth-style %q: want auto, header or params", *authStyle)
	}
	cfg := providers.ClientCredentialsConfig{
		TokenURL:          *tokenURL,
		ClientID:          *clientID,
		ClientSecret:      *clientSecret,
		Scopes:            strings.FieldsFunc(*scopes, func(r rune) bool { return r == ' ' || r == ',' }),
		AuthStyle:         style,
		AllowInsecureHTTP: *insecure,
	}
	params := url.Values{}
	if *audience != "" {
		params.Set("audience", *audience)
	}
	if *resource != "" {
		params.Set("resource", *resource)
	}
	cfg.EndpointParams = params
	return cfg, *apiURL, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}

// runRemote fetches a token from a real identity server.
func runRemote(cfg providers.ClientCredentialsConfig, apiURL string) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	rt, err := transport.New(tokenmanager.Settings{
		GetCredentials:    providers.ClientCredentials(cfg),
		AllowInsecureHTTP: cfg.AllowInsecureHTTP,
	})
	if err != nil {
		return err
	}
	defer rt.Close()
	defer rt.Subscribe(observability.SlogHandler(newLogger()))()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok, err := rt.Token(ctx)
	if err != nil {
		var re *providers.RetrieveError
		if errors.As(err, &re) {
			fmt.Printf("token endpoint refused: status %d, error %q, description %q\n", re.StatusCode, re.ErrorCode, re.ErrorDescription)
		}
		return err
	}
	fmt.Printf("got a %s token: expires_in=%ds scope=%q fingerprint=%s\n",
		orDefault(tok.TokenType, "(no type)"), tok.ExpiresIn, tok.Scope, tokenmanager.Fingerprint(tok.AccessToken))
	if apiURL == "" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL, nil)
	if err != nil {
		return err
	}
	resp, err := rt.Client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	fmt.Printf("GET %s: %s\n%s\n", apiURL, resp.Status, body)
	return nil
}

// runLocal starts a small OAuth 2.0 client-credentials server and a
// protected API on 127.0.0.1 and goes through a fetch, a cached call and a
// revocation.
func runLocal(cfg providers.ClientCredentialsConfig) error {
	const id, secret = "demo-client", "demo-secret"
	idp := newLocalIdP(id, secret)
	idpSrv := httptest.NewServer(idp)
	defer idpSrv.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client, ok := idp.valid(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		if !ok {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "hello, %s", client)
	}))
	defer api.Close()
	fmt.Printf("local OAuth 2.0 server at %s, API at %s\n", idpSrv.URL, api.URL)

	cfg.TokenURL, cfg.ClientID, cfg.ClientSecret = idpSrv.URL, id, secret
	rt, err := transport.New(tokenmanager.Settings{GetCredentials: providers.ClientCredentials(cfg)})
	if err != nil {
		return err
	}
	defer rt.Close()
	defer rt.Subscribe(observability.SlogHandler(newLogger()))()

	client := rt.Client()
	call := func(what string) error {
		resp, err := client.Get(api.URL + "/things")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("%-28s -> %d %s\n", what, resp.StatusCode, body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("API answered %s", resp.Status)
		}
		return nil
	}
	if err := call("first call (fetches)"); err != nil {
		return err
	}
	if err := call("second call (cached token)"); err != nil {
		return err
	}
	tok, err := rt.Token(context.Background())
	if err != nil {
		return err
	}
	idp.revoke(tok.AccessToken)
	fmt.Printf("the server revokes token %s\n", tokenmanager.Fingerprint(tok.AccessToken))
	if err := call("third call (recovers)"); err != nil {
		return err
	}
	time.Sleep(100 * time.Millisecond) // let the last events reach the log
	return nil
}

// localIdP is a minimal client-credentials token endpoint (RFC 6749 §4.4)
// with one registered client. Like many servers, it takes the client's
// credentials only in the form body (client_secret_post), so the provider's
// AuthStyleAutoDetect finds that out on the first fetch.
type localIdP struct {
	id, secret string
	mu         sync.Mutex
	live       map[string]string // access token -> client id
}

func newLocalIdP(id, secret string) *localIdP {
	return &localIdP{id: id, secret: secret, live: map[string]string{}}
}

func (p *localIdP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodPost || r.PostFormValue("grant_type") != "client_credentials" {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"unsupported_grant_type"}`)
		return
	}
	if r.PostFormValue("client_id") != p.id || subtle.ConstantTimeCompare([]byte(r.PostFormValue("client_secret")), []byte(p.secret)) != 1 {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"invalid_client"}`)
		return
	}
	tok := rand.Text()
	p.mu.Lock()
	p.live[tok] = p.id
	p.mu.Unlock()
	fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, tok)
}

func (p *localIdP) valid(tok string) (client string, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	client, ok = p.live[tok]
	return client, ok
}

func (p *localIdP) revoke(tok string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.live, tok)
}

func newLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
