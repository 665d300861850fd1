package providers_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

func ExampleClientCredentials() {
	// A token endpoint issuing a fixed token; in real life, your identity
	// server's, e.g. https://YOUR_TENANT.auth0.com/oauth/token.
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _, _ := r.BasicAuth()
		r.ParseForm()
		fmt.Printf("token endpoint: client %s, grant_type=%s, audience=%s, scope=%s\n",
			id, r.PostForm.Get("grant_type"), r.PostForm.Get("audience"), r.PostForm.Get("scope"))
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"example-token","token_type":"Bearer","expires_in":"3600"}`)
	}))
	defer idp.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "API saw %q", r.Header.Get("Authorization"))
	}))
	defer api.Close()

	rt, err := transport.New(tokenmanager.Settings{
		GetCredentials: providers.ClientCredentials(providers.ClientCredentialsConfig{
			TokenURL:       idp.URL,
			ClientID:       "billing-service",
			ClientSecret:   "s3cr3t",
			Scopes:         []string{"invoices:read"},
			EndpointParams: url.Values{"audience": {"https://api.example.com/"}},
		}),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Close()

	for range 2 { // the second request reuses the cached token
		resp, err := rt.Client().Get(api.URL)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(body))
	}
	// Output:
	// token endpoint: client billing-service, grant_type=client_credentials, audience=https://api.example.com/, scope=invoices:read
	// API saw "Bearer example-token"
	// API saw "Bearer example-token"
}

func ExampleClientCredentialsConfig_Validate() {
	err := providers.ClientCredentialsConfig{TokenURL: "idp.example/token"}.Validate()
	fmt.Println(err)
	// Output:
	// providers: TokenURL "idp.example/token" must be an http or https URL
	// providers: ClientID is empty; the client's identifier is required
}
