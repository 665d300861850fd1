package providers

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/dpopctx"
	"github.com/go-tokenmanager/tokenmanager/internal/secure"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/users"
)

// grantTypeAuthorizationCode is RFC 6749 §4.1.3's grant type.
const grantTypeAuthorizationCode = "authorization_code"

// ErrStateMismatch is wrapped by the error of [AuthCode.Exchange] when
// the callback's state is not the one of the authorization request: a
// forged or replayed callback (RFC 6749 §10.12). Nothing is sent.
var ErrStateMismatch = errors.New("providers: the callback's state does not match the authorization request")

// ErrNoRefreshToken is wrapped by the error of a sign-in whose token
// answer has no refresh token: ask for it (offline_access, or the
// server's own parameter such as Google's access_type=offline).
var ErrNoRefreshToken = errors.New("providers: the token answer has no refresh token; ask for offline_access")

// AuthCodeConfig describes the sign-in of a web app's users with the
// authorization code grant and PKCE (RFC 6749 §4.1, RFC 7636 S256). See
// [NewAuthCode].
type AuthCodeConfig struct {
	// AuthURL is the authorization endpoint, where the user's browser
	// goes. TokenURL is the token endpoint. Both are required unless
	// Issuer is set, and are then taken from its metadata. Plain http is
	// accepted only to a loopback host, unless AllowInsecureHTTP is set.
	AuthURL  string
	TokenURL string
	Issuer   *Issuer
	// RedirectURL is the app's callback, registered with the server: an
	// https URL, a loopback http one, or a native app's private-use
	// scheme (com.example.app:/callback, RFC 8252 §7.1). Required.
	RedirectURL string
	// Scopes are asked for at sign-in; include offline_access (or what
	// the server wants) to get a refresh token. Optional.
	Scopes []string
	// AuthParams are added to the authorization URL (audience, prompt,
	// access_type, ...). Optional; they may not set the parameters the
	// flow sets itself.
	AuthParams url.Values
	// Auth authenticates the client at the token endpoint. Required: a
	// public client sends its client id with [NoClientAuth]. Its client
	// id is the authorization request's client_id.
	Auth ClientAuth
	// EndpointParams are added to the token request. Optional.
	EndpointParams url.Values
	// Store and Keys keep the user's refresh token, as in
	// [RefreshTokenConfig]. Required.
	Store users.Store
	Keys  *users.Keys
	// DPoP, when set, binds the tokens to its key: the authorization URL
	// carries dpop_jkt (RFC 9449 §10) and the token request a proof.
	// Set the same key as the identity's Settings.DPoP. Optional.
	DPoP *tokenmanager.DPoP
	// Events, when set, receives [messages.SignedIn]. Optional.
	Events func(messages.Event)
	// HTTPClient sends the token request. Optional; http.DefaultClient.
	HTTPClient *http.Client
	// AllowInsecureHTTP lets the requests travel over plain http to any
	// host. Optional.
	AllowInsecureHTTP bool
}

// authParamsReserved are the parameters of the authorization URL the
// flow sets itself.
var authParamsReserved = []string{"response_type", "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method", "dpop_jkt"}

// Validate reports every problem with c at once, or nil when c is usable.
func (c AuthCodeConfig) Validate() error {
	var p problems
	p.endpoint(c.TokenURL, c.Issuer, c.AllowInsecureHTTP, "the authorization code")
	if c.Issuer == nil {
		p.url("AuthURL", c.AuthURL, c.AllowInsecureHTTP)
	} else if c.AuthURL != "" {
		p.add("AuthURL and Issuer are both set; set one")
	}
	p.url("RedirectURL", c.RedirectURL, true)
	if _, ok := c.AuthParams["scope"]; ok && len(c.Scopes) > 0 {
		p.add(`AuthParams sets "scope" and Scopes is set too; use one of them`)
	}
	for _, k := range authParamsReserved {
		if _, ok := c.AuthParams[k]; ok {
			p.add("AuthParams sets %q, which the flow sets itself", k)
		}
	}
	p.auth(c.Auth, true)
	if c.Auth != nil && c.Auth.clientID() == "" {
		p.add("Auth sends no client id; the authorization request needs one")
	}
	p.endpointParams(c.EndpointParams, nil, "Auth", clientAuthParams...)
	p.endpointParams(c.EndpointParams, nil, "the flow", "grant_type", "code", "code_verifier", "redirect_uri")
	p.store(c.Store, c.Keys)
	return p.err()
}

// AuthCode signs users in with the authorization code grant and PKCE,
// and puts each user's first refresh token in a [users.Store], from
// where [RefreshToken] takes it. It keeps nothing per user: the
// [AuthRequest] that [AuthCode.Start] returns is kept by the app (in the
// user's session) until the callback. It is safe for concurrent use.
type AuthCode struct {
	cfg AuthCodeConfig
	e   *endpoint
}

// NewAuthCode returns an AuthCode for cfg, or cfg's problems.
func NewAuthCode(cfg AuthCodeConfig) (*AuthCode, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	form := baseForm(grantTypeAuthorizationCode, nil, cfg.EndpointParams)
	form.Set("redirect_uri", cfg.RedirectURL)
	e := newEndpoint(cfg.TokenURL, cfg.Issuer, cfg.HTTPClient, cfg.AllowInsecureHTTP, cfg.Auth, form, nil)
	e.params = paramsFromContext
	return &AuthCode{cfg: cfg, e: e}, nil
}

// AuthRequest is one sign-in under way: where to send the user's
// browser, and what [AuthCode.Exchange] needs at the callback. Keep it in
// the user's session (server side, or in an encrypted cookie): Verifier
// is a secret, which printing or logging an AuthRequest does not show.
type AuthRequest struct {
	// URL is the authorization URL: redirect the browser there.
	URL string
	// State ties the callback to this request (RFC 6749 §10.12).
	State string
	// Verifier is the PKCE code_verifier (RFC 7636 §4.1).
	Verifier string
}

// Format prints r without its Verifier, whatever the verb.
func (r AuthRequest) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "AuthRequest{URL:%q State:%q Verifier:%s}", r.URL, r.State, secretText(r.Verifier))
}

// LogValue logs r as Format prints it.
func (r AuthRequest) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(r)) }

// Start begins a sign-in: a fresh state and PKCE verifier, and the
// authorization URL carrying response_type=code, client_id,
// redirect_uri, scope, state, code_challenge (S256), dpop_jkt when DPoP
// is set, and AuthParams. With an Issuer, the authorization endpoint
// comes from its metadata.
func (a *AuthCode) Start(ctx context.Context) (AuthRequest, error) {
	authURL := a.cfg.AuthURL
	if a.cfg.Issuer != nil {
		md, err := a.cfg.Issuer.Metadata(ctx)
		if err != nil {
			return AuthRequest{}, err
		}
		if authURL = md.AuthorizationEndpoint; authURL == "" {
			return AuthRequest{}, tokenmanager.Permanent(fmt.Errorf("providers: AuthCode: the metadata of issuer %q names no authorization_endpoint", md.Issuer))
		}
	}
	u, err := url.Parse(authURL)
	if err != nil {
		return AuthRequest{}, fmt.Errorf("providers: AuthCode: the authorization endpoint: %w", err)
	}
	r := AuthRequest{State: randomString(), Verifier: randomString()}
	sum := sha256.Sum256([]byte(r.Verifier))
	q := u.Query()
	for k, v := range a.cfg.AuthParams {
		q[k] = append([]string(nil), v...)
	}
	q.Set("response_type", "code")
	q.Set("client_id", a.cfg.Auth.clientID())
	q.Set("redirect_uri", a.cfg.RedirectURL)
	if len(a.cfg.Scopes) > 0 {
		q.Set("scope", strings.Join(a.cfg.Scopes, " "))
	}
	q.Set("state", r.State)
	q.Set("code_challenge", base64.RawURLEncoding.EncodeToString(sum[:]))
	q.Set("code_challenge_method", "S256")
	if a.cfg.DPoP != nil {
		q.Set("dpop_jkt", a.cfg.DPoP.Thumbprint())
	}
	u.RawQuery = q.Encode()
	r.URL = u.String()
	return r, nil
}

// Exchange ends a sign-in at the callback: it checks that callback (the
// query of the request to RedirectURL) carries r's state, sends its code
// with r's verifier to the token endpoint (client authentication from
// Auth, a DPoP proof when DPoP is set), seals the answer's refresh token
// and stores it for id ([users.Seed]: over what was stored), publishes
// [messages.SignedIn] and returns the access token.
//
// A wrong or missing state fails with [ErrStateMismatch] and sends
// nothing; a callback carrying the server's error (access_denied, ...)
// fails with that error; an answer without a refresh token fails with
// [ErrNoRefreshToken]. Neither the code, the verifier nor a token appears
// in an error.
func (a *AuthCode) Exchange(ctx context.Context, r AuthRequest, callback url.Values, id users.Identity) (tokenmanager.Token, error) {
	if err := id.Validate(); err != nil {
		return tokenmanager.Token{}, err
	}
	state := callback.Get("state")
	if r.State == "" || subtle.ConstantTimeCompare([]byte(state), []byte(r.State)) != 1 {
		return tokenmanager.Token{}, tokenmanager.Permanent(ErrStateMismatch)
	}
	if code := callback.Get("error"); code != "" {
		return tokenmanager.Token{}, tokenmanager.Permanent(fmt.Errorf("providers: AuthCode: the authorization server refused the sign-in: %s: %s",
			clean(code, nil), clean(callback.Get("error_description"), nil)))
	}
	code := callback.Get("code")
	if code == "" || r.Verifier == "" {
		return tokenmanager.Token{}, tokenmanager.Permanent(errors.New("providers: AuthCode: the callback has no code, or the request no verifier"))
	}
	params := url.Values{"code": {code}, "code_verifier": {r.Verifier}}
	ans, err := a.e.fetchAnswer(withParams(dpopctx.With(ctx, a.cfg.DPoP), params, code, r.Verifier))
	if err != nil {
		return tokenmanager.Token{}, fmt.Errorf("providers: AuthCode: exchanging the code: %w", err)
	}
	return seedAnswer(ctx, ans, a.cfg.Store, a.cfg.Keys, id, grantTypeAuthorizationCode, a.cfg.Events)
}

// seedAnswer stores the refresh token of a sign-in's answer for id and
// returns its access token.
func seedAnswer(ctx context.Context, ans answer, store users.Store, keys *users.Keys, id users.Identity, flow string, events func(messages.Event)) (tokenmanager.Token, error) {
	if ans.refreshToken == "" {
		return tokenmanager.Token{}, tokenmanager.Permanent(ErrNoRefreshToken)
	}
	identity := id.String()
	v, err := users.Seed(ctx, store, keys, identity, ans.refreshToken)
	if err != nil {
		return tokenmanager.Token{}, fmt.Errorf("providers: storing the refresh token of %q: %w", identity, err)
	}
	if events != nil {
		events(messages.SignedIn{Identity: identity, Flow: flow, Version: v, KeyID: keys.Current()})
	}
	return ans.tok, nil
}

// paramsKey carries a sign-in's per-request parameters, and which of
// their values are secret, to the endpoint's params.
type paramsKey struct{}

type grantParams struct {
	values  url.Values
	secrets []string
}

func withParams(ctx context.Context, v url.Values, secrets ...string) context.Context {
	return context.WithValue(ctx, paramsKey{}, grantParams{values: v, secrets: secrets})
}

func paramsFromContext(ctx context.Context, _ target) (url.Values, []string, error) {
	p, _ := ctx.Value(paramsKey{}).(grantParams)
	return p.values, p.secrets, nil
}

// randomString returns 32 random bytes, base64url-encoded without
// padding: 43 characters, a PKCE verifier's length and alphabet (RFC 7636
// §4.1), and a state no one guesses.
func randomString() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand, Go 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

// secretText says whether a secret is set, without it.
func secretText(s string) string {
	if s == "" {
		return `""`
	}
	return redactedMark
}

// url checks a URL setting that is not the token endpoint.
func (p *problems) url(name, raw string, allowInsecure bool) {
	switch u, err := url.Parse(raw); {
	case raw == "":
		p.add("%s is empty", name)
	case err != nil:
		p.add("%s is not a valid URL: %v", name, err)
	case u.Scheme == "":
		p.add("%s %q must be an absolute URL", name, redactURL(u))
	case (u.Scheme == "http" || u.Scheme == "https") && u.Host == "":
		p.add("%s %q has no host", name, redactURL(u))
	case (u.Scheme == "http" || u.Scheme == "https") && !allowInsecure && !secure.Allowed(u):
		*p = append(*p, fmt.Errorf("providers: %s %q is plain http to a host that is not loopback; use https, "+
			"or set AllowInsecureHTTP only where something else protects the traffic: %w", name, redactURL(u), tokenmanager.ErrInsecureTransport))
	}
}

// store checks a sign-in's Store and Keys.
func (p *problems) store(s users.Store, k *users.Keys) {
	if s == nil {
		p.add("Store is nil; a users.Store to keep the refresh token is required")
	}
	if k == nil {
		p.add("Keys is nil; the keys that seal the refresh token are required")
	}
}
