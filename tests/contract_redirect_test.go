package tests

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// echoServer answers /echo with the Authorization header it got and
// /redirect?to=URL with a redirect to URL.
func echoServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			fmt.Fprint(w, r.Header.Get("Authorization"))
		case "/redirect":
			http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// ownTransport returns an http.Transport whose idle connections are closed
// when the test ends, so goleak finds none of them.
func ownTransport(t *testing.T) *http.Transport {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// followed sends GET url through client and returns what /echo saw.
func followed(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", url, resp.StatusCode)
	}
	return string(data)
}

func TestRedirect_tokenStaysOnOriginalHost(t *testing.T) {
	first, second := echoServer(t), echoServer(t) // both on 127.0.0.1, different ports
	asLocalhost := func(u string) string { return strings.Replace(u, "127.0.0.1", "localhost", 1) }

	p := &testutil.Provider{ExpiresIn: 3600}
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get}, ownTransport(t))
	client := rt.Client()

	tests := []struct {
		name, from, to, want string
	}{
		{"same host and port", first.URL, first.URL + "/echo", "Bearer tok-1"},
		{"same IP, other port", first.URL, second.URL + "/echo", "Bearer tok-1"},
		{"IP to localhost", first.URL, asLocalhost(second.URL) + "/echo", ""},
		{"localhost to IP", asLocalhost(first.URL), second.URL + "/echo", ""},
		{"localhost to localhost, other port", asLocalhost(first.URL), asLocalhost(second.URL) + "/echo", "Bearer tok-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := followed(t, client, tt.from+"/redirect?to="+tt.to)
			if got != tt.want {
				t.Errorf("redirect %s -> %s carried %q; want %q", tt.from, tt.to, got, tt.want)
			}
		})
	}
	// Without a redirect the token is always carried.
	if got := followed(t, client, asLocalhost(first.URL)+"/echo"); got != "Bearer tok-1" {
		t.Errorf("direct request carried %q; want the token", got)
	}
}

func TestRedirect_subdomainsOnly(t *testing.T) {
	srv := echoServer(t)
	// Every host name resolves to the test server, so redirects between
	// made-up names reach it.
	tr := ownTransport(t)
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
	}
	p := &testutil.Provider{ExpiresIn: 3600}
	// Made-up names over plain http: a test rig, so opt in.
	rt, err := transport.New(tokenmanager.Settings{GetCredentials: p.Get, AllowInsecureHTTP: true}, transport.WithBase(tr))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	client := rt.Client()

	tests := []struct {
		from, to string
		carried  bool
	}{
		{"http://api.test", "http://api.test:8080", true},
		{"http://api.test", "http://sub.api.test", true},
		{"http://api.test", "http://deep.sub.api.test:81", true},
		{"http://api.test", "http://Sub.API.test", true},
		{"http://sub.api.test", "http://api.test", false},
		{"http://api.test", "http://evilapi.test", false},
		{"http://api.test", "http://test", false},
		{"http://api.test", "http://api.test.evil.example", false},
		{"http://127.0.0.1", "http://x.127.0.0.1", false},
		{"http://127.0.0.1", "http://127.0.0.2", false},
		{"http://127.0.0.1:1", "http://127.0.0.1:2", true},
	}
	for _, tt := range tests {
		t.Run(tt.from+" to "+tt.to, func(t *testing.T) {
			got := followed(t, client, tt.from+"/redirect?to="+tt.to+"/echo")
			if carried := got != ""; carried != tt.carried {
				t.Errorf("redirect %s -> %s carried %q; want carried=%v", tt.from, tt.to, got, tt.carried)
			}
		})
	}
}
