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
	"unicode"
	"unicode/utf8"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/secure"
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
	// Required. Plain http is accepted only to a loopback host, unless
	// AllowInsecureHTTP is set.
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
	// AllowInsecureHTTP lets the token request travel over plain http to
	// any host. Optional; false means a TokenURL that is plain http to a
	// host other than loopback (localhost, 127.0.0.0/8, ::1) is refused,
	// so the client secret never travels in clear text; set it only where
	// something else protects the traffic (a service mesh sidecar
	// terminating TLS, a test rig). While it is false, a redirect from the
	// token endpoint to such a URL is refused too.
	AllowInsecureHTTP bool
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
	case !c.AllowInsecureHTTP && !secure.Allowed(u):
		errs = append(errs, fmt.Errorf("providers: TokenURL %q is plain http to a host that is not loopback, "+
			"so the client secret would travel in clear text; use https, or set AllowInsecureHTTP "+
			"only where something else protects the traffic: %w", redactURL(u), tokenmanager.ErrInsecureTransport))
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
// provider returns that error, marked permanent (tokenmanager.IsPermanent
// reports true; errors.Is and errors.As still see the causes, such as
// tokenmanager.ErrInsecureTransport for a plain http TokenURL), on every
// call without any request; call Validate first to fail at start-up
// instead.
//
// The token's lifetime is the response's expires_in (a number or a
// numeric string). When expires_in is missing or zero and the access token
// is a JWT, the lifetime is read from its exp claim (the signature is not
// checked; the token endpoint is trusted). Without either, the token is
// cached until a response rejects it. A JWT whose exp has already passed
// (and no expires_in) gives an error wrapping
// tokenmanager.ErrExpiredOnArrival, which is temporary: the token is not
// used, and the fetch is retried.
//
// A non-2xx answer, or a 2xx answer carrying an OAuth error, is returned
// as a *[RetrieveError], permanent or temporary as
// [RetrieveError.Permanent] says (invalid_client, invalid_scope, a 401 or
// 403 are permanent; 429, 5xx, Retry-After are not). A ctx that ends
// aborts the request with an error wrapping ctx.Err(); that, network
// errors and undecodable answers are temporary. The provider is safe for
// concurrent use.
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
	if !cfg.AllowInsecureHTTP {
		cfg.HTTPClient = refuseInsecureRedirects(cfg.HTTPClient)
	}
	return &clientCredentials{cfg: cfg, err: tokenmanager.Permanent(cfg.Validate()), form: form, now: time.Now}
}

// refuseInsecureRedirects returns a copy of c that refuses to follow a
// redirect to plain http on a host that is not loopback: on a 307 or 308
// the request body, client secret included, would be sent again, and
// net/http keeps the Authorization header when only the scheme changes.
// c's own CheckRedirect, or the default limit of 10 redirects, still
// applies.
func refuseInsecureRedirects(c *http.Client) *http.Client {
	cp := *c
	next := c.CheckRedirect
	cp.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if !secure.Allowed(req.URL) {
			return tokenmanager.Permanent(fmt.Errorf("providers: the token endpoint redirected to %q, plain http to a host that is not loopback; "+
				"set AllowInsecureHTTP only where something else protects the traffic: %w", redactURL(req.URL), tokenmanager.ErrInsecureTransport))
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &cp
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
		// Only without a positive expires_in is the JWT looked at.
		n, err := jwtLifetime(tok.AccessToken, p.now())
		if err != nil {
			return tokenmanager.Token{}, err
		}
		tok.ExpiresIn = n
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

// clean bounds s to maxCleanLen bytes (plus "..."), maps control
// characters to spaces and redacts the client secret (see [redact]).
func (p *clientCredentials) clean(s string) string {
	forms := p.secretForms()
	truncated := len(s) > maxCleanLen
	if truncated {
		s = s[:cutBefore(s, maxCleanLen, forms)]
	}
	s = strings.Map(printable, s)
	for i, v := range forms {
		forms[i] = strings.Map(printable, v)
	}
	s = redact(s, forms)
	if truncated {
		s += "..."
	}
	return s
}

// maxCleanLen bounds the OAuth error fields kept in a RetrieveError.
const maxCleanLen = 512

// redactedMark replaces the client secret in error texts.
const redactedMark = "[redacted]"

// printable maps control characters to spaces, so an error text stays on
// one line and cannot drive a terminal.
func printable(r rune) rune {
	if r < ' ' || r == 0x7f {
		return ' '
	}
	return r
}

// secretForms returns the forms the client secret takes in a request:
// the HTTP Basic credentials, URL-encoded, path-escaped and raw. It
// returns nil for a public client.
func (p *clientCredentials) secretForms() []string {
	sec := p.cfg.ClientSecret
	if sec == "" {
		return nil
	}
	basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(p.cfg.ClientID) + ":" + url.QueryEscape(sec)))
	return []string{basic, url.QueryEscape(sec), url.PathEscape(sec), sec}
}

// cutBefore returns where to cut s to at most n bytes without cutting
// through one of forms: n, or the start of an occurrence that would
// straddle it, so no prefix of the secret is left at the end.
func cutBefore(s string, n int, forms []string) int {
	for moved := true; moved; {
		moved = false
		for _, v := range forms {
			lo, hi := max(0, n-len(v)+1), min(len(s), n+len(v)-1)
			if lo >= hi {
				continue
			}
			if i := strings.Index(s[lo:hi], v); i >= 0 {
				n, moved = lo+i, true // lo+i < n < lo+i+len(v)
			}
		}
	}
	return n
}

// redact replaces the whole-token occurrences of each of forms in s with
// "[redacted]". An occurrence is a whole token when neither the character
// before it nor the one after it is part of a token value: a letter, a
// digit, or one of -._~+/% (and =, after it only: base64 padding extends
// a value, but "name=" ends before one). So an echoed secret is redacted
// in `client_secret=s&x`, `"s"` or `Basic czpz`, but a short secret is
// not masked inside a longer word ("s" in "slow_down"), which would make
// error texts unreadable. A secret that is a whole word of the text is
// redacted all the same: it cannot be told from an echoed value.
//
// Redacting one occurrence can turn a neighbour into a whole token, so
// passes repeat until nothing changes. Each pass that changes something
// removes secret bytes that lie outside any marker, so that ends, unless
// a form contains the marker's own text; then a single pass is made.
func redact(s string, forms []string) string {
	passes := len(s) + 1
	for _, v := range forms {
		if strings.Contains(v, "redacted") {
			passes = 1
		}
	}
	for ; passes > 0; passes-- {
		changed := false
		for _, v := range forms {
			var c bool
			s, c = redactPass(s, v)
			changed = changed || c
		}
		if !changed {
			break
		}
	}
	return s
}

// redactPass replaces the whole-token occurrences of v in s, left to
// right, and reports whether it replaced any.
func redactPass(s, v string) (string, bool) {
	if v == "" || !strings.Contains(s, v) {
		return s, false
	}
	var b strings.Builder
	copied := 0 // s[:copied] is in b
	for i := 0; i+len(v) <= len(s); {
		j := strings.Index(s[i:], v)
		if j < 0 {
			break
		}
		start, end := i+j, i+j+len(v)
		// copied > 0 only after a replacement, so an occurrence starting
		// there follows the marker's "]" in the output.
		before := start == 0 || (copied > 0 && start == copied)
		if !before {
			r, _ := utf8.DecodeLastRuneInString(s[:start])
			before = !valueRune(r) || r == '='
		}
		after := end == len(s)
		if !after {
			r, _ := utf8.DecodeRuneInString(s[end:])
			after = !valueRune(r)
		}
		if !before || !after {
			i = start + 1
			continue
		}
		b.WriteString(s[copied:start])
		b.WriteString(redactedMark)
		copied, i = end, end
	}
	if copied == 0 {
		return s, false
	}
	b.WriteString(s[copied:])
	return b.String(), true
}

// valueRune reports whether r can be part of a token value: a letter, a
// digit, or one of -._~+/=% (URL-safe, URL-encoded and base64 text).
func valueRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("-._~+/=%", r)
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
