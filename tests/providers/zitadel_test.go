package providers_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// zitadel is a real OpenID Provider, github.com/zitadel/oidc/v3's op with
// its example storage, on 127.0.0.1, served through op's LegacyServer (the
// handler that verifies private_key_jwt client assertions), and an API
// that accepts only the provider's live access tokens.
type zitadel struct {
	issuer   string // also the audience the op wants in assertions
	tokenURL string
	provider *op.Provider
	storage  *zitadelStorage
	api      *httptest.Server
}

// zitadelStorage is the example storage with keys registered for the
// JWT profile grant and private_key_jwt (the example has only a fixed
// demo key) and clients that authenticate with private_key_jwt.
type zitadelStorage struct {
	*storage.Storage
	mu        sync.Mutex
	keys      map[string]*jose.JSONWebKey // by client (iss)
	pkClients map[string]bool
}

func (s *zitadelStorage) GetKeyByIDAndClientID(_ context.Context, keyID, clientID string) (*jose.JSONWebKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[clientID]
	if !ok || (keyID != "" && keyID != k.KeyID) {
		return nil, errors.New("no such key")
	}
	return k, nil
}

func (s *zitadelStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	if s.pkClients[id] {
		return privateKeyJWTClient{storage.WebClient(id, "", "http://127.0.0.1/cb")}, nil
	}
	return s.Storage.GetClientByClientID(ctx, id)
}

// privateKeyJWTClient is a web client (code, refresh, token exchange)
// that authenticates with private_key_jwt.
type privateKeyJWTClient struct{ op.Client }

func (privateKeyJWTClient) AuthMethod() oidc.AuthMethod { return oidc.AuthMethodPrivateKeyJWT }

const (
	zitadelUser                = "id1" // an admin user of the example storage: may impersonate
	zitadelWebClient           = "web-svc"
	zitadelWebSecret           = "web-s3cr3t"
	zitadelPrivateKeyJWTClient = "gateway"
)

func newZitadel(t *testing.T) *zitadel {
	t.Helper()
	var handler atomic.Value // http.Handler, set once the issuer is known
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler.Load().(http.Handler).ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	z := &zitadel{issuer: srv.URL, tokenURL: srv.URL + "/oauth/token"}
	z.storage = &zitadelStorage{
		Storage: storage.NewStorageWithClients(storage.NewUserStore(z.issuer), map[string]*storage.Client{
			zitadelWebClient: storage.WebClient(zitadelWebClient, zitadelWebSecret, "http://127.0.0.1/cb"),
		}),
		keys:      map[string]*jose.JSONWebKey{},
		pkClients: map[string]bool{zitadelPrivateKeyJWTClient: true},
	}
	provider, err := op.NewProvider(&op.Config{
		CryptoKey:               sha256.Sum256([]byte("test key")),
		AuthMethodPost:          true,
		AuthMethodPrivateKeyJWT: true,
	}, z.storage, op.StaticIssuer(z.issuer), op.WithAllowInsecure())
	if err != nil {
		t.Fatal(err)
	}
	z.provider = provider
	handler.Store(op.RegisterLegacyServer(op.NewLegacyServer(provider, provider.Endpoints()), op.AuthorizeCallbackHandler(provider)))
	z.api = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sub, ok := z.check(r.Context(), strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		if !ok {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "hello "+sub)
	}))
	t.Cleanup(z.api.Close)
	return z
}

// register makes key the one the op knows for client (iss), under kid.
func (z *zitadel) register(client string, key crypto.PublicKey, kid string) {
	z.storage.mu.Lock()
	defer z.storage.mu.Unlock()
	z.storage.keys[client] = &jose.JSONWebKey{Key: key, KeyID: kid, Use: "sig"}
}

// tokenID decodes one of the op's opaque access tokens, as its userinfo
// endpoint does.
func (z *zitadel) tokenID(tok string) (id, subject string, ok bool) {
	plain, err := z.provider.Crypto().Decrypt(tok)
	if err != nil {
		return "", "", false
	}
	id, subject, ok = strings.Cut(plain, ":")
	return id, subject, ok
}

// check reports whether tok is a live access token of the op, and its
// subject, with the op's own decoding and its storage's token check.
func (z *zitadel) check(ctx context.Context, tok string) (string, bool) {
	id, sub, ok := z.tokenID(tok)
	if !ok {
		return "", false
	}
	if err := z.storage.SetUserinfoFromToken(ctx, new(oidc.UserInfo), id, sub, ""); err != nil {
		return "", false
	}
	return sub, true
}

// revoke revokes tok in the op's storage, issued to client ("" for the
// JWT profile grant).
func (z *zitadel) revoke(t *testing.T, tok, client string) {
	t.Helper()
	id, sub, ok := z.tokenID(tok)
	if !ok {
		t.Fatal("not a token of the op")
	}
	if err := z.storage.RevokeToken(context.Background(), id, sub, client); err != nil {
		t.Fatal(err)
	}
}

func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// jwtBearer returns a JWTBearer provider signing as the op's user with
// key, its audience the op's issuer (as the op requires).
func (z *zitadel) jwtBearer(t *testing.T, key crypto.Signer, kid string) tokenmanager.TokenProvider {
	t.Helper()
	sign, err := providers.JWTAssertion(providers.JWTAssertionConfig{Issuer: zitadelUser, Audience: z.issuer, Key: key, KeyID: kid})
	if err != nil {
		t.Fatal(err)
	}
	return providers.JWTBearer(providers.JWTBearerConfig{TokenURL: z.tokenURL, Assertion: sign, Scopes: []string{"openid"}})
}

// TestZitadel_jwtBearer runs the JWT bearer grant (RFC 7523 §2.1, ZITADEL's
// "JWT profile") against the op: a signed assertion accepted, one signed
// with a wrong key or for the wrong audience refused, permanently.
func TestZitadel_jwtBearer(t *testing.T) {
	z := newZitadel(t)
	key := newECKey(t)
	z.register(zitadelUser, key.Public(), "k1")

	tok, err := z.jwtBearer(t, key, "k1")(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sub, ok := z.check(context.Background(), tok.AccessToken); !ok || sub != zitadelUser || tok.ExpiresIn < 290 || tok.TokenType != "Bearer" {
		t.Errorf("token %v (subject %q, live %v); want a live Bearer token for %s, about 300s", tok, sub, ok, zitadelUser)
	}

	t.Run("wrong key", func(t *testing.T) {
		_, err := z.jwtBearer(t, newECKey(t), "k1")(context.Background())
		var re *providers.RetrieveError
		if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest || !tokenmanager.IsPermanent(err) {
			t.Errorf("err = %v; want a permanent 400", err)
		}
	})
	t.Run("wrong audience", func(t *testing.T) {
		sign, err := providers.JWTAssertion(providers.JWTAssertionConfig{Issuer: zitadelUser, Key: key, KeyID: "k1"}) // aud: the token URL
		if err != nil {
			t.Fatal(err)
		}
		_, err = providers.JWTBearer(providers.JWTBearerConfig{TokenURL: z.tokenURL, Assertion: sign})(context.Background())
		if !tokenmanager.IsPermanent(err) || !strings.Contains(err.Error(), "assertion invalid") {
			t.Errorf("err = %v; want a permanent refusal of the assertion", err)
		}
	})
}

// TestZitadel_tokenExchange exchanges an access token of the op (from the
// JWT bearer grant) for another, the client authenticating with its
// secret and with private_key_jwt; a wrong client key is refused.
func TestZitadel_tokenExchange(t *testing.T) {
	z := newZitadel(t)
	userKey, clientKey := newECKey(t), newECKey(t)
	z.register(zitadelUser, userKey.Public(), "u1")
	z.register(zitadelPrivateKeyJWTClient, clientKey.Public(), "c1")
	subject := z.jwtBearer(t, userKey, "u1")
	subjectToken := func(ctx context.Context) (string, error) {
		tok, err := subject(ctx)
		return tok.AccessToken, err
	}
	pk := func(key crypto.Signer) providers.ClientAuth {
		auth, err := providers.PrivateKeyJWT(providers.PrivateKeyJWTConfig{ClientID: zitadelPrivateKeyJWTClient, Key: key, KeyID: "c1",
			Audience: z.issuer})
		if err != nil {
			t.Fatal(err)
		}
		return auth
	}
	tests := []struct {
		name   string
		auth   providers.ClientAuth
		client string
	}{
		{name: "client secret", auth: providers.ClientSecret(zitadelWebClient, zitadelWebSecret, providers.AuthStyleInHeader), client: zitadelWebClient},
		{name: "private_key_jwt", auth: pk(clientKey), client: zitadelPrivateKeyJWTClient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := providers.TokenExchange(providers.TokenExchangeConfig{
				TokenURL:           z.tokenURL,
				Auth:               tt.auth,
				SubjectToken:       subjectToken,
				SubjectTokenType:   providers.TokenTypeAccessToken,
				RequestedTokenType: providers.TokenTypeAccessToken,
				Audience:           []string{"orders"},
				Scopes:             []string{"openid", "profile"},
			})
			tok, err := p(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if sub, ok := z.check(context.Background(), tok.AccessToken); !ok || sub != zitadelUser {
				t.Errorf("exchanged token %v: subject %q, live %v; want a live token for %s", tok, sub, ok, zitadelUser)
			}
			if tok.Scope != "openid profile" || tok.ExpiresIn < 290 {
				t.Errorf("token = %v; want scope openid profile, about 300s", tok)
			}
		})
	}
	for _, bad := range []struct {
		name, want string
		auth       func() providers.ClientAuth
	}{
		{name: "private_key_jwt, wrong key", want: "invalid signature", auth: func() providers.ClientAuth { return pk(newECKey(t)) }},
		{name: "private_key_jwt, token URL audience", want: "audience is not valid", auth: func() providers.ClientAuth {
			auth, err := providers.PrivateKeyJWT(providers.PrivateKeyJWTConfig{ClientID: zitadelPrivateKeyJWTClient, Key: clientKey, KeyID: "c1"})
			if err != nil {
				t.Fatal(err)
			}
			return auth
		}},
	} {
		t.Run(bad.name, func(t *testing.T) {
			_, err := providers.TokenExchange(providers.TokenExchangeConfig{TokenURL: z.tokenURL, Auth: bad.auth(),
				SubjectToken: subjectToken, SubjectTokenType: providers.TokenTypeAccessToken})(context.Background())
			var re *providers.RetrieveError
			if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest || !tokenmanager.IsPermanent(err) ||
				!strings.Contains(err.Error(), bad.want) {
				t.Errorf("err = %v; want a permanent 400 saying %q", err, bad.want)
			}
		})
	}
	t.Run("unknown subject token", func(t *testing.T) {
		_, err := providers.TokenExchange(providers.TokenExchangeConfig{TokenURL: z.tokenURL,
			Auth:         providers.ClientSecret(zitadelWebClient, zitadelWebSecret, providers.AuthStyleInHeader),
			SubjectToken: func(context.Context) (string, error) { return "not-a-token-of-the-op", nil }, SubjectTokenType: providers.TokenTypeAccessToken,
		})(context.Background())
		if !tokenmanager.IsPermanent(err) || !strings.Contains(err.Error(), "subject_token is invalid") {
			t.Errorf("err = %v; want a permanent invalid_request", err)
		}
		if strings.Contains(err.Error(), "not-a-token-of-the-op") {
			t.Errorf("err = %v shows the subject token", err)
		}
	})
}

// TestZitadel_transport runs the whole stack: transport.New with the JWT
// bearer grant and with token exchange against the op, the API accepting
// only the op's live tokens, and a revocation the RoundTripper recovers
// from.
func TestZitadel_transport(t *testing.T) {
	z := newZitadel(t)
	userKey := newECKey(t)
	z.register(zitadelUser, userKey.Public(), "u1")
	subject := z.jwtBearer(t, userKey, "u1")
	tests := []struct {
		name     string
		provider tokenmanager.TokenProvider
		client   string // the client the op issues the token to
	}{
		{name: "JWT bearer", provider: subject},
		{name: "token exchange", client: zitadelWebClient, provider: providers.TokenExchange(providers.TokenExchangeConfig{
			TokenURL:           z.tokenURL,
			Auth:               providers.ClientSecret(zitadelWebClient, zitadelWebSecret, providers.AuthStyleAutoDetect),
			SubjectToken:       func(ctx context.Context) (string, error) { tok, err := subject(ctx); return tok.AccessToken, err },
			SubjectTokenType:   providers.TokenTypeAccessToken,
			RequestedTokenType: providers.TokenTypeAccessToken,
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt, err := transport.New(tokenmanager.Settings{GetCredentials: tt.provider})
			if err != nil {
				t.Fatal(err)
			}
			defer rt.Close()
			get := func() string { t.Helper(); return getOK(t, rt.Client(), z.api.URL+"/orders") }
			if got := get(); got != "hello "+zitadelUser {
				t.Errorf("body = %q", got)
			}
			first, err := rt.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			z.revoke(t, first.AccessToken, tt.client)
			if _, ok := z.check(context.Background(), first.AccessToken); ok {
				t.Fatal("the revoked token still works")
			}
			if got := get(); got != "hello "+zitadelUser {
				t.Errorf("body after revocation = %q", got)
			}
			second, err := rt.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if second.AccessToken == first.AccessToken {
				t.Error("the token was not replaced after revocation")
			}
		})
	}
}
