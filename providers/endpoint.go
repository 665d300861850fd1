package providers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/dpopctx"
	"github.com/go-tokenmanager/tokenmanager/internal/secure"
)

// endpoint is what every grant shares: one token endpoint, one client
// authentication, the grant's parameters, and the handling of the
// answer. ClientCredentials, ClientCredentialsGrant, JWTBearer and
// TokenExchange are all an endpoint's fetch.
type endpoint struct {
	tokenURL string  // "" when issuer is set
	issuer   *Issuer // nil when tokenURL is set
	client   *http.Client
	auth     ClientAuth // nil: the client does not authenticate
	form     url.Values // fixed parameters: grant_type, scope, EndpointParams, ...
	// params returns the parameters fetched anew for every token
	// (assertions, subject tokens) and, among their values, those that
	// must never show in an error. Nil for a grant without any.
	params func(ctx context.Context, t target) (url.Values, []string, error)
	// other, when set, sends the requests to another endpoint of the
	// server that takes the token endpoint's client authentication (the
	// device authorization endpoint); its 2xx answer is returned
	// undecoded.
	other   *otherEndpoint
	err     error        // from Validate; returned by every fetch
	learned atomic.Int32 // the AuthStyle that auto-detection settled on
	now     func() time.Time
}

// newEndpoint returns an endpoint sending its requests to tokenURL, or to
// the token endpoint iss's metadata names; err, when not nil, is returned
// by every fetch, marked permanent.
func newEndpoint(tokenURL string, iss *Issuer, hc *http.Client, allowInsecure bool, auth ClientAuth, form url.Values, err error) *endpoint {
	if hc == nil {
		hc = http.DefaultClient
	}
	if a, ok := auth.(*tlsClientAuth); ok {
		c, cerr := a.clientWithCertificate(hc)
		if cerr != nil {
			err = errors.Join(err, cerr)
		} else {
			hc = c
		}
	}
	if iss != nil {
		allowInsecure = allowInsecure || iss.allowInsecure
	}
	if !allowInsecure {
		hc = refuseInsecureRedirects(hc)
	}
	return &endpoint{tokenURL: tokenURL, issuer: iss, client: hc, auth: auth, form: form,
		err: tokenmanager.Permanent(err), now: time.Now}
}

// target is where one token request goes, and what its assertions name.
type target struct {
	url      string // where the request is sent: the token endpoint, or its mutual-TLS alias
	tokenURL string // the token endpoint: an assertion's audience by default
	issuer   string // the issuer identifier, when found by discovery
}

// otherEndpoint is an endpoint other than the token endpoint.
type otherEndpoint struct {
	url  string                // without an issuer
	name string                // the metadata field naming it
	of   func(Metadata) string // with an issuer
}

// target returns where the next token request goes: TokenURL, or the
// token endpoint from the issuer's metadata (its mutual-TLS alias when
// the client authenticates with a certificate).
func (e *endpoint) target(ctx context.Context) (target, error) {
	if e.issuer == nil {
		t := target{url: e.tokenURL, tokenURL: e.tokenURL}
		if e.other != nil {
			t.url = e.other.url
		}
		return t, nil
	}
	md, err := e.issuer.Metadata(ctx)
	if err != nil {
		return target{}, err
	}
	t := target{url: md.TokenEndpoint, tokenURL: md.TokenEndpoint, issuer: md.Issuer}
	if e.other != nil {
		if t.url = e.other.of(md); t.url == "" {
			return target{}, tokenmanager.Permanent(fmt.Errorf("providers: the metadata of issuer %q names no %s", md.Issuer, e.other.name))
		}
		return t, nil
	}
	if _, ok := e.auth.(*tlsClientAuth); ok && md.MTLSEndpointAliases.TokenEndpoint != "" {
		t.url = md.MTLSEndpointAliases.TokenEndpoint
	}
	return t, nil
}

// metadataSuspect reports whether err, from a token request, may come
// from outdated metadata: the endpoint unreachable, or not there.
func metadataSuspect(err error) bool {
	var re *RetrieveError
	if errors.As(err, &re) {
		return re.StatusCode == http.StatusNotFound || re.StatusCode == http.StatusMethodNotAllowed || re.StatusCode == http.StatusGone
	}
	var ue *url.Error
	return errors.As(err, &ue) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// tokenRequest is one token request being built, handed to the client
// authentication to add its part.
type tokenRequest struct {
	target

	// style says how a client secret travels in this request: in the
	// header or in the body (never AuthStyleAutoDetect).
	style   AuthStyle
	form    url.Values
	header  http.Header
	secrets []string // values sent that must never show in an error
}

// answer is what a successful token request gave.
type answer struct {
	tok tokenmanager.Token
	// refreshToken is the answer's refresh_token; empty when it had none.
	refreshToken string
	// body is the undecoded answer of an endpoint other than the token
	// endpoint (see endpoint.other).
	body []byte
}

// fetch gets one token.
func (e *endpoint) fetch(ctx context.Context) (tokenmanager.Token, error) {
	a, err := e.fetchAnswer(ctx)
	return a.tok, err
}

// fetchAnswer gets one token and what came with it. On an error the
// answer holds only the refresh token of an answer whose access token was
// refused (empty otherwise). A client secret with AuthStyleAutoDetect is
// sent in the header first and, when the server refuses that (see
// authRefused), in the body; the style that worked is remembered.
func (e *endpoint) fetchAnswer(ctx context.Context) (answer, error) {
	if e.err != nil {
		return answer{}, e.err
	}
	if err := ctx.Err(); err != nil {
		return answer{}, fmt.Errorf("providers: fetching token: %w", err)
	}
	t, err := e.target(ctx)
	if err != nil {
		return answer{}, err
	}
	a, err := e.fetchFrom(ctx, t)
	if err != nil && e.issuer != nil && metadataSuspect(err) {
		e.issuer.invalidate()
	}
	return a, err
}

// fetchFrom gets one token from t.
func (e *endpoint) fetchFrom(ctx context.Context, t target) (answer, error) {
	// Each attempt gets its own grant parameters: a JWT assertion's jti
	// is single-use, so the auto-detect retry must not resend it.
	attempt := func(style AuthStyle) (answer, error) {
		for try := 0; ; try++ {
			var params url.Values
			var secrets []string
			if e.params != nil {
				var err error
				if params, secrets, err = e.params(ctx, t); err != nil {
					return answer{}, err
				}
			}
			tok, err := e.retrieve(ctx, t, params, secrets, style)
			if try == 0 && nonceRequested(ctx, err) {
				// The server asked for a DPoP nonce and gave one (RFC 9449
				// §8): once more, with it, and with fresh parameters (an
				// assertion is good for one request).
				continue
			}
			return tok, err
		}
	}
	style, detect := AuthStyleInParams, false
	if cs, ok := e.auth.(*clientSecret); ok {
		style = cs.style
		if style == AuthStyleAutoDetect {
			style = AuthStyle(e.learned.Load())
		}
		detect = style == AuthStyleAutoDetect
	}
	if !detect {
		return attempt(style)
	}
	tok, err := attempt(AuthStyleInHeader)
	if err == nil {
		e.learned.Store(int32(AuthStyleInHeader))
		return tok, nil
	}
	if tok.refreshToken != "" || !authRefused(err) {
		return tok, err
	}
	tok, err = attempt(AuthStyleInParams)
	if err == nil {
		e.learned.Store(int32(AuthStyleInParams))
	}
	return tok, err
}

// authRefused reports whether err may be the server refusing how the
// client secret travelled, worth one more request with it in the body: a
// 401, or a 400 with invalid_client, invalid_request (a server wanting
// client_id in the body says so) or no error code. Never invalid_grant or
// another code about the grant: the grant (a refresh token, a code) would
// be sent twice.
func authRefused(err error) bool {
	var re *RetrieveError
	if !errors.As(err, &re) || re.ErrorCode == "invalid_grant" {
		return false
	}
	switch re.StatusCode {
	case http.StatusUnauthorized:
		return true
	case http.StatusBadRequest:
		return re.ErrorCode == "invalid_client" || re.ErrorCode == "invalid_request" || re.ErrorCode == ""
	}
	return false
}

// retrieve makes one token request: the fixed parameters, params, and the
// client authentication (a client secret travelling as style says).
func (e *endpoint) retrieve(ctx context.Context, t target, params url.Values, secrets []string, style AuthStyle) (answer, error) {
	r := &tokenRequest{
		target:  t,
		style:   style,
		form:    make(url.Values, len(e.form)+len(params)+3),
		header:  make(http.Header),
		secrets: append([]string(nil), secrets...),
	}
	for k, v := range e.form {
		r.form[k] = v
	}
	for k, v := range params {
		r.form[k] = v
	}
	if e.auth != nil {
		if err := e.auth.authenticate(ctx, r); err != nil {
			return answer{}, err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, strings.NewReader(r.form.Encode()))
	if err != nil {
		return answer{}, fmt.Errorf("providers: building token request: %w", err)
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	client := e.client
	d := dpopctx.From(ctx)
	if d != nil {
		if client, err = withProof(client, d, req); err != nil {
			return answer{}, err
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		// net/http's error names the method and URL (password redacted),
		// never the body or headers, so no secret can be in it.
		return answer{}, fmt.Errorf("providers: token request failed: %w", err)
	}
	defer resp.Body.Close()
	if d != nil && resp.Request != nil {
		d.SetNonceFor(resp.Request.URL, resp.Header.Get("DPoP-Nonce"))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil {
		return answer{}, fmt.Errorf("providers: reading token response: %w", err)
	}
	tooLarge := len(body) > maxResponseBody
	if tooLarge {
		body = body[:maxResponseBody]
	}
	forms := append(e.secretForms(), valueForms(r.secrets)...)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		re := &RetrieveError{StatusCode: resp.StatusCode, retryAfter: parseRetryAfter(resp.Header, e.now()), nonce: resp.Header.Get("DPoP-Nonce") != ""}
		if f, err := parseFields(resp.Header.Get("Content-Type"), body); err == nil {
			setOAuthError(re, f, forms)
		}
		return answer{}, re
	}
	if tooLarge {
		// No server answers a token request with this much; asking again
		// gets the same answer (a TokenURL naming something else, a
		// hostile server), so waiting requests fail at once.
		return answer{}, tokenmanager.Permanent(fmt.Errorf("providers: token endpoint answered %d with more than %d bytes: %w",
			resp.StatusCode, maxResponseBody, ErrResponseTooLarge))
	}
	if e.other != nil {
		return answer{body: body}, nil
	}
	f, err := parseFields(resp.Header.Get("Content-Type"), body)
	if err != nil {
		return answer{}, err
	}
	// From here on the server accepted the request: a refused access
	// token still comes with the answer's refresh token, which the server
	// may have rotated (the one sent is then spent).
	refused := answer{refreshToken: f.refreshToken}
	if f.errorCode != "" || f.token.AccessToken == "" {
		re := &RetrieveError{StatusCode: resp.StatusCode, retryAfter: parseRetryAfter(resp.Header, e.now())}
		setOAuthError(re, f, forms)
		if re.ErrorCode == "" {
			re.ErrorDescription = "the response has no access_token"
		}
		return refused, re
	}
	if f.expiresErr != nil {
		// A token answer that decodes but whose expires_in does not: the
		// server sends the same again, so waiting requests fail at once.
		return refused, tokenmanager.Permanent(f.expiresErr)
	}
	tok := f.token
	if tok.ExpiresIn <= 0 {
		// Only without a positive expires_in is the JWT looked at.
		n, err := jwtLifetime(tok.AccessToken, e.now())
		if err != nil {
			return refused, err
		}
		tok.ExpiresIn = n
	}
	return answer{tok: tok, refreshToken: f.refreshToken}, nil
}

// setOAuthError copies the OAuth error fields into re, cleaned: control
// characters dropped, length bounded, every secret of the request masked
// (a server echoing the request must not leak it into logs).
func setOAuthError(re *RetrieveError, f fields, forms []string) {
	re.ErrorCode = clean(f.errorCode, forms)
	re.ErrorDescription = clean(f.errorDescription, forms)
	re.ErrorURI = clean(f.errorURI, forms)
}

// secretForms returns the forms the client's fixed secret takes in a
// request (see [clientSecret]); nil when it has none.
func (e *endpoint) secretForms() []string {
	if e.auth == nil {
		return nil
	}
	return e.auth.secretForms()
}

// clean is [clean] with the client's fixed secret.
func (e *endpoint) clean(s string) string { return clean(s, e.secretForms()) }

// valueForms returns the forms each of values takes in a request body:
// raw, URL-encoded and path-escaped.
func valueForms(values []string) []string {
	forms := make([]string, 0, 3*len(values))
	for _, v := range values {
		if v == "" {
			continue
		}
		forms = append(forms, url.QueryEscape(v), url.PathEscape(v), v)
	}
	return forms
}

// refuseInsecureRedirects returns a copy of c that refuses to follow a
// redirect to plain http on a host that is not loopback: on a 307 or 308
// the request body, client secret and assertions included, would be sent
// again, and net/http keeps the Authorization header when only the scheme
// changes. c's own CheckRedirect, or the default limit of 10 redirects,
// still applies.
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

// redactURL returns u as a string with any password replaced.
func redactURL(u *url.URL) string { return u.Redacted() }

// problems collects a config's problems for Validate.
type problems []error

func (p *problems) add(format string, args ...any) {
	*p = append(*p, fmt.Errorf("providers: "+format, args...))
}

// endpoint checks a grant's TokenURL and Issuer: one of them is set.
func (p *problems) endpoint(tokenURL string, iss *Issuer, allowInsecure bool, what string) {
	switch {
	case iss != nil && tokenURL != "":
		p.add("TokenURL and Issuer are both set; set one")
	case iss == nil:
		p.tokenURL(tokenURL, allowInsecure, what)
	}
}

// tokenURL checks a TokenURL. what names what would travel in clear text
// over plain http.
func (p *problems) tokenURL(tokenURL string, allowInsecure bool, what string) {
	switch u, err := url.Parse(tokenURL); {
	case tokenURL == "":
		p.add("TokenURL is empty; the token endpoint's URL, or an Issuer, is required")
	case err != nil:
		p.add("TokenURL is not a valid URL: %v", err)
	case u.Scheme != "http" && u.Scheme != "https":
		p.add("TokenURL %q must be an http or https URL", redactURL(u))
	case u.Host == "":
		p.add("TokenURL %q has no host", redactURL(u))
	case !allowInsecure && !secure.Allowed(u):
		*p = append(*p, fmt.Errorf("providers: TokenURL %q is plain http to a host that is not loopback, "+
			"so %s would travel in clear text; use https, or set AllowInsecureHTTP "+
			"only where something else protects the traffic: %w", redactURL(u), what, tokenmanager.ErrInsecureTransport))
	}
}

// clientAuthParams are the body parameters of client authentication,
// which EndpointParams may not set.
var clientAuthParams = []string{"client_id", "client_secret", "client_assertion", "client_assertion_type"}

// endpointParams checks EndpointParams: none of reserved (set through
// the field named by use instead), and no scope when Scopes is set.
func (p *problems) endpointParams(params url.Values, scopes []string, use string, reserved ...string) {
	for _, k := range reserved {
		if _, ok := params[k]; ok {
			p.add("EndpointParams sets %q; use %s instead", k, use)
		}
	}
	if _, ok := params["scope"]; ok && len(scopes) > 0 {
		p.add(`EndpointParams sets "scope" and Scopes is set too; use one of them`)
	}
}

// auth checks a ClientAuth; required says whether nil is a problem.
func (p *problems) auth(a ClientAuth, required bool) {
	if a == nil {
		if required {
			p.add("Auth is nil; use ClientSecret, PrivateKeyJWT, ClientAssertion or TLSClientAuth")
		}
		return
	}
	*p = append(*p, a.problems()...)
}

func (p problems) err() error { return errors.Join(p...) }

// baseForm returns the fixed parameters of a grant: grant_type, scope
// when scopes is not empty, then params (which may override both).
func baseForm(grantType string, scopes []string, params url.Values) url.Values {
	form := url.Values{"grant_type": {grantType}}
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	for k, v := range params {
		form[k] = append([]string(nil), v...)
	}
	return form
}
