package providers_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// exampleIdP is a token endpoint on 127.0.0.1 that prints what it is
// sent (show picks the parameters) and issues a fixed token.
func exampleIdP(show func(r *http.Request)) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		show(r)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"example-token","token_type":"Bearer","expires_in":3600}`)
	}))
}

// claimsOf verifies a signed JWT with pub and returns its claims.
func claimsOf(tok string, pub any) (jwt.Claims, map[string]any, error) {
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.PS256})
	if err != nil {
		return jwt.Claims{}, nil, err
	}
	var c jwt.Claims
	all := map[string]any{}
	err = parsed.Claims(pub, &c, &all)
	return c, all, err
}

func ExampleClientCredentialsGrant() {
	idp := exampleIdP(func(r *http.Request) {
		id, _, _ := r.BasicAuth()
		fmt.Printf("token endpoint: client %s, grant_type=%s, scope=%s\n", id, r.PostForm.Get("grant_type"), r.PostForm.Get("scope"))
	})
	defer idp.Close()

	// ClientSecret sends exactly what ClientCredentials sends; swap in
	// PrivateKeyJWT or ClientAssertion to drop the shared secret.
	p := providers.ClientCredentialsGrant(providers.GrantConfig{
		TokenURL: idp.URL,
		Auth:     providers.ClientSecret("billing-service", "s3cr3t", providers.AuthStyleInHeader),
		Scopes:   []string{"invoices:read"},
	})
	tok, err := p(context.Background())
	fmt.Println(tok, err)
	// Output:
	// token endpoint: client billing-service, grant_type=client_credentials, scope=invoices:read
	// Token{TokenType:"Bearer" ExpiresIn:3600 Scope:"" AccessToken:<13 bytes>} <nil>
}

func ExamplePrivateKeyJWT() {
	// The client's key pair; the identity server has the public half (in
	// Okta and Keycloak as a JWK, in Entra ID as a certificate).
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})

	var tokenURL string
	idp := exampleIdP(func(r *http.Request) {
		c, all, err := claimsOf(r.PostForm.Get("client_assertion"), key.Public())
		fmt.Printf("token endpoint: %s, signature ok: %v\n", r.PostForm.Get("client_assertion_type"), err == nil)
		fmt.Printf("iss=%s sub=%s aud is the token URL: %v, lifetime %v, has jti: %v\n",
			c.Issuer, c.Subject, all["aud"] == tokenURL, c.Expiry.Time().Sub(c.IssuedAt.Time()), c.ID != "")
	})
	defer idp.Close()
	tokenURL = idp.URL

	auth, err := providers.PrivateKeyJWT(providers.PrivateKeyJWTConfig{
		ClientID: "billing-service",
		KeyPEM:   keyPEM, // or Key: any crypto.Signer (an HSM, a KMS)
		KeyID:    "billing-2024",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	p := providers.ClientCredentialsGrant(providers.GrantConfig{TokenURL: tokenURL, Auth: auth})
	_, err = p(context.Background())
	fmt.Println(err)
	fmt.Println(auth) // never the key
	// Output:
	// token endpoint: urn:ietf:params:oauth:client-assertion-type:jwt-bearer, signature ok: true
	// iss=billing-service sub=billing-service aud is the token URL: true, lifetime 5m0s, has jti: true
	// <nil>
	// PrivateKeyJWT("billing-service", ES256, kid "billing-2024", key [redacted])
}

func ExampleClientAssertion() {
	// Entra workload identity on Kubernetes: the webhook mounts a
	// projected service-account token and names it in
	// AZURE_FEDERATED_TOKEN_FILE; the kubelet rotates it, so read it for
	// every request.
	dir, _ := os.MkdirTemp("", "token")
	defer os.RemoveAll(dir)
	tokenFile := filepath.Join(dir, "azure-identity-token")
	os.WriteFile(tokenFile, []byte("eyJhbGciOi.projected-sa-token.sig\n"), 0o600)

	idp := exampleIdP(func(r *http.Request) {
		fmt.Printf("token endpoint: client_id=%s client_assertion=%s scope=%s\n",
			r.PostForm.Get("client_id"), r.PostForm.Get("client_assertion"), r.PostForm.Get("scope"))
	})
	defer idp.Close()

	auth := providers.ClientAssertion("00000000-client-id", func(ctx context.Context, _ providers.AssertionRequest) (string, error) {
		b, err := os.ReadFile(tokenFile) // os.Getenv("AZURE_FEDERATED_TOKEN_FILE")
		return strings.TrimSpace(string(b)), err
	})
	p := providers.ClientCredentialsGrant(providers.GrantConfig{
		TokenURL: idp.URL, // https://login.microsoftonline.com/TENANT/oauth2/v2.0/token
		Auth:     auth,
		Scopes:   []string{"https://graph.microsoft.com/.default"},
	})
	_, err := p(context.Background())
	fmt.Println(err)
	// Output:
	// token endpoint: client_id=00000000-client-id client_assertion=eyJhbGciOi.projected-sa-token.sig scope=https://graph.microsoft.com/.default
	// <nil>
}

func ExampleNoClientAuth() {
	idp := exampleIdP(func(r *http.Request) {
		fmt.Printf("token endpoint: client_id=%s, secret sent: %v\n", r.PostForm.Get("client_id"),
			r.PostForm.Has("client_secret") || r.PostForm.Has("client_assertion") || r.Header.Get("Authorization") != "")
	})
	defer idp.Close()
	// A public client exchanging a user's token (RFC 8693).
	_, err := providers.TokenExchange(providers.TokenExchangeConfig{
		TokenURL:         idp.URL,
		Auth:             providers.NoClientAuth("cli-tool"),
		SubjectToken:     func(context.Context) (string, error) { return "user-token", nil },
		SubjectTokenType: providers.TokenTypeAccessToken,
	})(context.Background())
	fmt.Println(err)
	// The client-credentials grant is for confidential clients only.
	err = providers.GrantConfig{TokenURL: idp.URL, Auth: providers.NoClientAuth("cli-tool")}.Validate()
	fmt.Println(err != nil)
	// Output:
	// token endpoint: client_id=cli-tool, secret sent: false
	// <nil>
	// true
}

func ExampleJWTAssertion() {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sign, err := providers.JWTAssertion(providers.JWTAssertionConfig{
		Issuer:   "svc@project.iam.example",
		Audience: "https://oauth2.example/token",
		Key:      key,
		Claims:   map[string]any{"scope": "storage.read"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	tok, _ := sign(context.Background(), providers.AssertionRequest{TokenURL: "https://oauth2.example/token"})
	c, all, err := claimsOf(tok, key.Public())
	fmt.Println(c.Issuer, c.Subject, c.Audience, all["scope"], err)
	// Output:
	// svc@project.iam.example svc@project.iam.example [https://oauth2.example/token] storage.read <nil>
}

func ExampleJWTBearer() {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	idp := exampleIdP(func(r *http.Request) {
		c, _, err := claimsOf(r.PostForm.Get("assertion"), key.Public())
		fmt.Printf("token endpoint: grant_type=%s, assertion from %s, signature ok: %v\n", r.PostForm.Get("grant_type"), c.Issuer, err == nil)
	})
	defer idp.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "API saw %q", r.Header.Get("Authorization"))
	}))
	defer api.Close()

	// A self-signed assertion (aud defaults to the token URL); or set
	// Assertion to a callback returning one that someone else signed.
	sign, err := providers.JWTAssertion(providers.JWTAssertionConfig{Issuer: "svc@project.iam.example", Key: key})
	if err != nil {
		fmt.Println(err)
		return
	}
	rt, err := transport.New(tokenmanager.Settings{
		GetCredentials: providers.JWTBearer(providers.JWTBearerConfig{TokenURL: idp.URL, Assertion: sign}),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Close()
	resp, err := rt.Client().Get(api.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))
	// Output:
	// token endpoint: grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer, assertion from svc@project.iam.example, signature ok: true
	// API saw "Bearer example-token"
}

func ExampleTokenExchange() {
	idp := exampleIdP(func(r *http.Request) {
		f := r.PostForm
		id, _, _ := r.BasicAuth()
		fmt.Printf("token endpoint: client %s, grant_type=%s\n", id, f.Get("grant_type"))
		fmt.Printf("subject_token=%s (%s)\n", f.Get("subject_token"), f.Get("subject_token_type"))
		fmt.Printf("requested_token_type=%s audience=%v resource=%v scope=%s\n",
			f.Get("requested_token_type"), f["audience"], f["resource"], f.Get("scope"))
	})
	defer idp.Close()

	p := providers.TokenExchange(providers.TokenExchangeConfig{
		TokenURL: idp.URL,
		Auth:     providers.ClientSecret("gateway", "s3cr3t", providers.AuthStyleInHeader),
		// The token to exchange, fetched for every request: here a fixed
		// one; in real life a projected service-account token, or the
		// caller's access token.
		SubjectToken:       func(context.Context) (string, error) { return "incoming-user-token", nil },
		SubjectTokenType:   providers.TokenTypeAccessToken,
		RequestedTokenType: providers.TokenTypeAccessToken,
		Audience:           []string{"orders"},
		Resource:           []string{"https://orders.example/api"},
		Scopes:             []string{"orders:read"},
	})
	_, err := p(context.Background())
	fmt.Println(err)
	// Output:
	// token endpoint: client gateway, grant_type=urn:ietf:params:oauth:grant-type:token-exchange
	// subject_token=incoming-user-token (urn:ietf:params:oauth:token-type:access_token)
	// requested_token_type=urn:ietf:params:oauth:token-type:access_token audience=[orders] resource=[https://orders.example/api] scope=orders:read
	// <nil>
}

func ExampleTokenExchangeConfig_Validate() {
	err := providers.TokenExchangeConfig{TokenURL: "http://sts.example/token"}.Validate()
	fmt.Println(err)
	// Output:
	// providers: TokenURL "http://sts.example/token" is plain http to a host that is not loopback, so the subject token would travel in clear text; use https, or set AllowInsecureHTTP only where something else protects the traffic: tokenmanager: refusing to send a credential over plain http
	// providers: SubjectToken is nil; a function returning the subject token is required
	// providers: SubjectTokenType is empty; use TokenTypeJWT, TokenTypeAccessToken or the type the server wants
}
