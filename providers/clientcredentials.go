package providers

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
)

// maxResponseBody bounds how much of a token endpoint's answer is read. A
// token response is a few kilobytes at most; anything past a mebibyte is
// a misconfigured URL or a hostile server.
const maxResponseBody = 1 << 20

// AuthStyle says how the client authenticates to the token endpoint.
type AuthStyle int

const (
	// AuthStyleAutoDetect tries HTTP Basic auth first and, if the server
	// answers 400 or 401, the request body; the style that worked is
	// remembered for later fetches.
	AuthStyleAutoDetect AuthStyle = 0
	// AuthStyleInHeader sends the client id and secret in an HTTP Basic
	// Authorization header, each form-url-encoded first as RFC 6749 §2.3.1
	// requires ("client_secret_basic").
	AuthStyleInHeader AuthStyle = 1
	// AuthStyleInParams sends client_id and client_secret in the request
	// body ("client_secret_post").
	AuthStyleInParams AuthStyle = 2
)

// String returns the style's name, as written in Go.
func (s AuthStyle) String() string {
	switch s {
	case AuthStyleAutoDetect:
		return "AuthStyleAutoDetect"
	case AuthStyleInHeader:
		return "AuthStyleInHeader"
	case AuthStyleInParams:
		return "AuthStyleInParams"
	}
	return fmt.Sprintf("AuthStyle(%d)", int(s))
}

// ClientCredentialsConfig describes a client-credentials grant. Its field
// names follow golang.org/x/oauth2/clientcredentials.Config.
type ClientCredentialsConfig struct {
	// TokenURL is the token endpoint, an absolute http or https URL.
	// Required.
	TokenURL string
	// ClientID is the client's identifier. Required.
	ClientID string
	// ClientSecret is the client's secret. Optional: empty for a public
	// client, in which case no client_secret parameter is sent.
	ClientSecret string
	// Scopes are sent space-separated in the scope parameter. Optional;
	// when empty no scope parameter is sent (a scope in EndpointParams,
	// as Entra ID's "https://graph.microsoft.com/.default", then applies).
	Scopes []string
	// EndpointParams are added to the request body: Auth0's audience,
	// Entra ID v1's resource, and the like. Optional. They may override
	// grant_type, for servers that want another value; they may not set
	// client_id or client_secret, nor scope when Scopes is set.
	EndpointParams url.Values
	// AuthStyle says how the client authenticates. Optional; the zero
	// value, AuthStyleAutoDetect, works with every server that accepts
	// either style.
	AuthStyle AuthStyle
	// HTTPClient sends the token requests. Optional; if nil,
	// http.DefaultClient is used. Its Timeout, if any, applies on top of
	// the context the manager passes.
	HTTPClient *http.Client
}

// Validate reports every problem with c at once, or nil when c is usable.
func (c ClientCredentialsConfig) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("providers: "+format, args...))
	}
	switch u, err := url.Parse(c.TokenURL); {
	case c.TokenURL == "":
		bad("TokenURL is empty; the token endpoint's URL is required")
	case err != nil:
		bad("TokenURL is not a valid URL: %v", err)
	case u.Scheme != "http" && u.Scheme != "https":
		bad("TokenURL %q must be an http or https URL", redactURL(u))
	case u.Host == "":
		bad("TokenURL %q has no host", redactURL(u))
	}
	if c.ClientID == "" {
		bad("ClientID is empty; the client's identifier is required")
	}
	if c.AuthStyle < AuthStyleAutoDetect || c.AuthStyle > AuthStyleInParams {
		bad("AuthStyle is %v; use AuthStyleAutoDetect, AuthStyleInHeader or AuthStyleInParams", c.AuthStyle)
	}
	for _, k := range []string{"client_id", "client_secret"} {
		if _, ok := c.EndpointParams[k]; ok {
			bad("EndpointParams sets %q; use ClientID, ClientSecret and AuthStyle instead", k)
		}
	}
	if _, ok := c.EndpointParams["scope"]; ok && len(c.Scopes) > 0 {
		bad(`EndpointParams sets "scope" and Scopes is set too; use one of them`)
	}
	return errors.Join(errs...)
}

// redactURL returns u as a string with any password replaced.
func redactURL(u *url.URL) string { return u.Redacted() }

// ClientCredentials returns a provider that fetches tokens with the OAuth
// 2.0 client-credentials grant (RFC 6749 §4.4). It copies cfg, so later
// changes to cfg do not affect it.
//
// When cfg is invalid (see [ClientCredentialsConfig.Validate]) the
// provider returns that error on every call without any request; call
// Validate first to fail at start-up instead.
//
// The token's lifetime is the response's expires_in (a number or a
// numeric string). When expires_in is missing or zero and the access token
// is a JWT, the lifetime is read from its exp claim (the signature is not
// checked; the token endpoint is trusted). Without either, the token is
// cached until a response rejects it.
//
// A non-2xx answer, or a 2xx answer carrying an OAuth error, is returned
// as a *[RetrieveError]; a ctx that ends aborts the request with an error
// wrapping ctx.Err(). The provider is safe for concurrent use.
func ClientCredentials(cfg ClientCredentialsConfig) tokenmanager.TokenProvider {
	p := newClientCredentials(cfg)
	return p.fetch
}

// clientCredentials is the provider behind ClientCredentials.
type clientCredentials struct {
	cfg     ClientCredentialsConfig
	err     error      // from Validate; returned by every fetch
	form    url.Values // grant_type, scope and EndpointParams
	learned atomic.Int32
	now     func() time.Time // for JWT exp and Retry-After dates
}

func newClientCredentials(cfg ClientCredentialsConfig) *clientCredentials {
	cfg.Scopes = append([]string(nil), cfg.Scopes...)
	params := make(url.Values, len(cfg.EndpointParams))
	for k, v := range cfg.EndpointParams {
		params[k] = append([]string(nil), v...)
	}
	cfg.EndpointParams = params
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	form := url.Values{"grant_type": {"client_credentials"}}
	if len(cfg.Scopes) > 0 {
		form.Set("scope", strings.Join(cfg.Scopes, " "))
	}
	for k, v := range params {
		form[k] = v
	}
	return &clientCredentials{cfg: cfg, err: cfg.Validate(), form: form, now: time.Now}
}

func (p *clientCredentials) fetch(ctx context.Context) (tokenmanager.Token, error) {
	if p.err != nil {
		return tokenmanager.Token{}, p.err
	}
	if err := ctx.Err(); err != nil {
		return tokenmanager.Token{}, fmt.Errorf("providers: fetching token: %w", err)
	}
	style := p.cfg.AuthStyle
	if style == AuthStyleAutoDetect {
		style = AuthStyle(p.learned.Load())
	}
	if style != AuthStyleAutoDetect {
		return p.retrieve(ctx, style)
	}
	tok, err := p.retrieve(ctx, AuthStyleInHeader)
	if err == nil {
		p.learned.Store(int32(AuthStyleInHeader))
		return tok, nil
	}
	var re *RetrieveError
	if !errors.As(err, &re) || (re.StatusCode != http.StatusBadRequest && re.StatusCode != http.StatusUnauthorized) {
		return tokenmanager.Token{}, err
	}
	tok, err = p.retrieve(ctx, AuthStyleInParams)
	if err == nil {
		p.learned.Store(int32(AuthStyleInParams))
	}
	return tok, err
}

// retrieve makes one token request with the given style.
func (p *clientCredentials) retrieve(ctx context.Context, style AuthStyle) (tokenmanager.Token, error) {
	form := make(url.Values, len(p.form)+2)
	for k, v := range p.form {
		form[k] = v
	}
	if style == AuthStyleInParams {
		form.Set("client_id", p.cfg.ClientID)
		if p.cfg.ClientSecret != "" {
			form.Set("client_secret", p.cfg.ClientSecret)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.cfg.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return tokenmanager.Token{}, fmt.Errorf("providers: building token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if style == AuthStyleInHeader {
		// RFC 6749 §2.3.1: both are form-url-encoded before Basic auth.
		req.SetBasicAuth(url.QueryEscape(p.cfg.ClientID), url.QueryEscape(p.cfg.ClientSecret))
	}
	resp, err := p.cfg.HTTPClient.Do(req)
	if err != nil {
		// net/http's error names the method and URL (password redacted),
		// never the body or headers, so the secret cannot be in it.
		return tokenmanager.Token{}, fmt.Errorf("providers: token request failed: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil {
		return tokenmanager.Token{}, fmt.Errorf("providers: reading token response: %w", err)
	}
	tooLarge := len(body) > maxResponseBody
	if tooLarge {
		body = body[:maxResponseBody]
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		re := &RetrieveError{StatusCode: resp.StatusCode, retryAfter: parseRetryAfter(resp.Header, p.now())}
		if f, err := parseFields(resp.Header.Get("Content-Type"), body); err == nil {
			p.setOAuthError(re, f)
		}
		return tokenmanager.Token{}, re
	}
	if tooLarge {
		return tokenmanager.Token{}, fmt.Errorf("providers: token response is larger than %d bytes", maxResponseBody)
	}
	f, err := parseFields(resp.Header.Get("Content-Type"), body)
	if err != nil {
		return tokenmanager.Token{}, err
	}
	if f.errorCode != "" || f.token.AccessToken == "" {
		re := &RetrieveError{StatusCode: resp.StatusCode, retryAfter: parseRetryAfter(resp.Header, p.now())}
		p.setOAuthError(re, f)
		if re.ErrorCode == "" {
			re.ErrorDescription = "the response has no access_token"
		}
		return tokenmanager.Token{}, re
	}
	if f.expiresErr != nil {
		return tokenmanager.Token{}, f.expiresErr
	}
	tok := f.token
	if tok.ExpiresIn <= 0 {
		tok.ExpiresIn = jwtLifetime(tok.AccessToken, p.now())
	}
	return tok, nil
}

// setOAuthError copies the OAuth error fields into re, cleaned: control
// characters dropped, length bounded, the client secret masked (a server
// echoing the request must not leak it into logs).
func (p *clientCredentials) setOAuthError(re *RetrieveError, f fields) {
	re.ErrorCode = p.clean(f.errorCode)
	re.ErrorDescription = p.clean(f.errorDescription)
	re.ErrorURI = p.clean(f.errorURI)
}

func (p *clientCredentials) clean(s string) string {
	const maxLen = 512
	if len(s) > maxLen {
		s = s[:maxLen] + "..."
	}
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if sec := p.cfg.ClientSecret; sec != "" {
		basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(p.cfg.ClientID) + ":" + url.QueryEscape(sec)))
		for _, v := range []string{basic, url.QueryEscape(sec), url.PathEscape(sec), sec} {
			s = strings.ReplaceAll(s, v, "[redacted]")
		}
	}
	return s
}

// fields is what a token endpoint's answer says.
type fields struct {
	token                                 tokenmanager.Token
	expiresErr                            error
	errorCode, errorDescription, errorURI string
}

// parseFields decodes a token endpoint's answer: JSON, or form-encoded as
// GitHub and some older servers send it. The Content-Type decides, except
// that a body opening with '{' is JSON whatever its label (some servers
// send JSON as text/plain).
func parseFields(contentType string, body []byte) (fields, error) {
	mt, _, _ := mime.ParseMediaType(contentType)
	trimmed := bytes.TrimSpace(body)
	if (mt == "application/x-www-form-urlencoded" || mt == "text/plain") && !bytes.HasPrefix(trimmed, []byte("{")) {
		return parseForm(trimmed)
	}
	return parseJSON(trimmed, mt)
}

func parseForm(body []byte) (fields, error) {
	v, err := url.ParseQuery(string(body))
	if err != nil {
		return fields{}, errors.New("providers: decoding form-encoded token response: malformed body")
	}
	f := fields{
		token: tokenmanager.Token{
			AccessToken: v.Get("access_token"),
			TokenType:   v.Get("token_type"),
			Scope:       v.Get("scope"),
		},
		errorCode:        v.Get("error"),
		errorDescription: v.Get("error_description"),
		errorURI:         v.Get("error_uri"),
	}
	if e := v.Get("expires_in"); e != "" {
		// Reuse Token's decoding, which accepts "3600" and 3600.
		var t tokenmanager.Token
		if err := t.UnmarshalJSON(fmt.Appendf(nil, `{"expires_in":%q}`, e)); err != nil {
			f.expiresErr = err
		}
		f.token.ExpiresIn = t.ExpiresIn
	}
	return f, nil
}

func parseJSON(body []byte, mediaType string) (fields, error) {
	var f fields
	var oauthErr struct {
		Error            any `json:"error"`
		ErrorDescription any `json:"error_description"`
		ErrorURI         any `json:"error_uri"`
	}
	if err := json.Unmarshal(body, &oauthErr); err != nil {
		if mediaType == "" {
			mediaType = "no Content-Type"
		}
		return f, fmt.Errorf("providers: decoding token response (%s): %w", mediaType, err)
	}
	f.errorCode = str(oauthErr.Error)
	f.errorDescription = str(oauthErr.ErrorDescription)
	f.errorURI = str(oauthErr.ErrorURI)
	if err := f.token.UnmarshalJSON(body); err != nil {
		f.expiresErr = err
		// Keep what decodes, so a bad expires_in next to an OAuth error
		// still reports the error.
		var partial struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.Unmarshal(body, &partial)
		f.token.AccessToken = partial.AccessToken
	}
	return f, nil
}

// str returns v when it is a string. Some servers send "error" as an
// object; only RFC 6749's string form is used.
func str(v any) string {
	s, _ := v.(string)
	return s
}
