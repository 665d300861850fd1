package providers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/dpopctx"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/users"
)

// grantTypeDeviceCode is RFC 8628 §3.4's grant type.
const grantTypeDeviceCode = "urn:ietf:params:oauth:grant-type:device_code"

// ErrAccessDenied is wrapped by the error of [DeviceFlow.Wait] when the
// user refused the sign-in (access_denied, RFC 8628 §3.5).
var ErrAccessDenied = errors.New("providers: the user denied the sign-in")

// ErrDeviceCodeExpired is wrapped by the error of [DeviceFlow.Wait] when
// the codes expired before the user signed in (expired_token, or the
// expires_in of the device authorization passed): start again.
var ErrDeviceCodeExpired = errors.New("providers: the device code expired before the user signed in")

// defaultDeviceInterval is RFC 8628 §3.5's interval when the server
// gives none; slowDownStep is what each slow_down adds.
const (
	defaultDeviceInterval = 5 * time.Second
	slowDownStep          = 5 * time.Second
)

// DeviceFlowConfig describes the sign-in of a CLI tool's or a device's
// user with the device authorization grant (RFC 8628). See
// [NewDeviceFlow].
type DeviceFlowConfig struct {
	// DeviceAuthURL is the device authorization endpoint and TokenURL the
	// token endpoint. Both are required unless Issuer is set, and are
	// then taken from its metadata. Plain http is accepted only to a
	// loopback host, unless AllowInsecureHTTP is set.
	DeviceAuthURL string
	TokenURL      string
	Issuer        *Issuer
	// Scopes are asked for; include offline_access (or what the server
	// wants) to get a refresh token. Optional.
	Scopes []string
	// Auth authenticates the client at both endpoints. Required: a
	// public client sends its client id with [NoClientAuth].
	Auth ClientAuth
	// EndpointParams are added to the device authorization request
	// (audience, resource, ...). Optional.
	EndpointParams url.Values
	// Store and Keys keep the user's refresh token, as in
	// [RefreshTokenConfig]. Required.
	Store users.Store
	Keys  *users.Keys
	// DPoP, when set, binds the tokens to its key: the token requests
	// carry a proof. Set the same key as the identity's Settings.DPoP.
	// Optional.
	DPoP *tokenmanager.DPoP
	// Events, when set, receives [messages.DeviceCodeIssued],
	// [messages.DevicePollPending] and [messages.SignedIn], on the
	// goroutine calling Start and Wait. Optional.
	Events func(messages.Event)
	// Clock times the polling. Optional; nil means the real clock.
	Clock clock.Clock
	// HTTPClient sends the requests. Optional; http.DefaultClient.
	HTTPClient *http.Client
	// AllowInsecureHTTP lets the requests travel over plain http to any
	// host. Optional.
	AllowInsecureHTTP bool
}

// Validate reports every problem with c at once, or nil when c is usable.
func (c DeviceFlowConfig) Validate() error {
	var p problems
	p.endpoint(c.TokenURL, c.Issuer, c.AllowInsecureHTTP, "the device code")
	if c.Issuer == nil {
		p.url("DeviceAuthURL", c.DeviceAuthURL, c.AllowInsecureHTTP)
	} else if c.DeviceAuthURL != "" {
		p.add("DeviceAuthURL and Issuer are both set; set one")
	}
	p.auth(c.Auth, true)
	p.endpointParams(c.EndpointParams, c.Scopes, "Auth", clientAuthParams...)
	p.endpointParams(c.EndpointParams, nil, "the flow", "grant_type", "device_code")
	p.store(c.Store, c.Keys)
	return p.err()
}

// DeviceFlow signs users in with the device authorization grant and puts
// each user's first refresh token in a [users.Store], from where
// [RefreshToken] takes it. [DeviceFlow.Start] asks for the codes to show
// the user, [DeviceFlow.Wait] polls the token endpoint until the user
// answers. It is safe for concurrent use; nothing runs between calls.
type DeviceFlow struct {
	cfg   DeviceFlowConfig
	start *endpoint // the device authorization endpoint
	poll  *endpoint // the token endpoint
	clock clock.Clock
}

// NewDeviceFlow returns a DeviceFlow for cfg, or cfg's problems.
func NewDeviceFlow(cfg DeviceFlowConfig) (*DeviceFlow, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &DeviceFlow{cfg: cfg, clock: cfg.Clock}
	if d.clock == nil {
		d.clock = clock.New()
	}
	form := baseForm("", cfg.Scopes, cfg.EndpointParams)
	form.Del("grant_type")
	d.start = newEndpoint(cfg.TokenURL, cfg.Issuer, cfg.HTTPClient, cfg.AllowInsecureHTTP, cfg.Auth, form, nil)
	d.start.other = &otherEndpoint{url: cfg.DeviceAuthURL, name: "device_authorization_endpoint",
		of: func(md Metadata) string { return md.DeviceAuthorizationEndpoint }}
	d.poll = newEndpoint(cfg.TokenURL, cfg.Issuer, cfg.HTTPClient, cfg.AllowInsecureHTTP, cfg.Auth, url.Values{"grant_type": {grantTypeDeviceCode}}, nil)
	d.poll.params = paramsFromContext
	d.start.now, d.poll.now = d.clock.Now, d.clock.Now
	return d, nil
}

// DeviceAuthorization is one device sign-in under way (RFC 8628 §3.2):
// what to show the user, and the device code [DeviceFlow.Wait] polls
// with. The device code is a secret: it is not exported, and printing or
// logging a DeviceAuthorization does not show it.
type DeviceAuthorization struct {
	// UserCode is the code the user enters at VerificationURI.
	UserCode string
	// VerificationURI is where the user signs in; VerificationURIComplete,
	// when the server gives one, carries the user code (for a QR code).
	VerificationURI         string
	VerificationURIComplete string
	// ExpiresAt is when the codes expire, on the flow's clock.
	ExpiresAt time.Time
	// Interval is the wait between polls the server asked for (5 seconds
	// when it did not say).
	Interval time.Duration

	identity   users.Identity
	deviceCode string
}

// Format prints a without its device code, whatever the verb.
func (a *DeviceAuthorization) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "DeviceAuthorization{Identity:%q UserCode:%q VerificationURI:%q VerificationURIComplete:%q ExpiresAt:%s Interval:%v DeviceCode:%s}",
		a.identity.String(), a.UserCode, a.VerificationURI, a.VerificationURIComplete, a.ExpiresAt.Format(time.RFC3339), a.Interval, secretText(a.deviceCode))
}

// LogValue logs a as Format prints it.
func (a *DeviceAuthorization) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(a)) }

// deviceAnswer is RFC 8628 §3.2's device authorization response.
type deviceAnswer struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURL         string `json:"verification_url"` // Google's name for it
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int64  `json:"expires_in"`
	Interval                int64  `json:"interval"`
}

// Start asks the device authorization endpoint for codes for id's sign-in
// and publishes [messages.DeviceCodeIssued]. Show the user UserCode and
// VerificationURI (or VerificationURIComplete), then call Wait.
func (d *DeviceFlow) Start(ctx context.Context, id users.Identity) (*DeviceAuthorization, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	ans, err := d.start.fetchAnswer(dpopctx.With(ctx, d.cfg.DPoP))
	if err != nil {
		return nil, fmt.Errorf("providers: DeviceFlow: device authorization request: %w", err)
	}
	var da deviceAnswer
	if err := json.Unmarshal(ans.body, &da); err != nil {
		return nil, fmt.Errorf("providers: DeviceFlow: decoding the device authorization answer: %w", err)
	}
	if da.VerificationURI == "" {
		da.VerificationURI = da.VerificationURL
	}
	if da.DeviceCode == "" || da.UserCode == "" || da.VerificationURI == "" || da.ExpiresIn <= 0 || da.Interval < 0 {
		return nil, tokenmanager.Permanent(errors.New("providers: DeviceFlow: the device authorization answer lacks device_code, user_code, " +
			"verification_uri or a positive expires_in (RFC 8628 §3.2)"))
	}
	a := &DeviceAuthorization{
		UserCode:                da.UserCode,
		VerificationURI:         da.VerificationURI,
		VerificationURIComplete: da.VerificationURIComplete,
		ExpiresAt:               d.clock.Now().Add(time.Duration(da.ExpiresIn) * time.Second),
		Interval:                time.Duration(da.Interval) * time.Second,
		identity:                id,
		deviceCode:              da.DeviceCode,
	}
	if a.Interval == 0 {
		a.Interval = defaultDeviceInterval
	}
	d.publish(messages.DeviceCodeIssued{Identity: id.String(), UserCode: a.UserCode, VerificationURI: a.VerificationURI,
		VerificationURIComplete: a.VerificationURIComplete, ExpiresAt: a.ExpiresAt, Interval: a.Interval})
	return a, nil
}

// Wait polls the token endpoint with a's device code, every a.Interval,
// until the user signs in; then it seals the refresh token, stores it for
// the identity given to Start ([users.Seed]), publishes
// [messages.SignedIn] and returns the access token.
//
// authorization_pending polls again; slow_down polls again 5 seconds
// slower, for the rest of the flow; a 5xx, 429 or network error polls
// again at the same pace. After each of these a
// [messages.DevicePollPending] is published. access_denied ends the flow
// with [ErrAccessDenied]; expired_token, or a's expiry passing, with
// [ErrDeviceCodeExpired]; ctx's end with its error; any other refusal
// with the *[RetrieveError]. The device code never appears in an error or
// event.
func (d *DeviceFlow) Wait(ctx context.Context, a *DeviceAuthorization) (tokenmanager.Token, error) {
	if a == nil || a.deviceCode == "" {
		return tokenmanager.Token{}, errors.New("providers: DeviceFlow: Wait needs the DeviceAuthorization that Start returned")
	}
	ctx = dpopctx.With(ctx, d.cfg.DPoP)
	identity := a.identity.String()
	interval := a.Interval
	for attempt := 1; ; attempt++ {
		wait := interval
		if left := a.ExpiresAt.Sub(d.clock.Now()); left < wait {
			wait = max(left, 0)
		}
		if err := d.sleep(ctx, wait); err != nil {
			return tokenmanager.Token{}, fmt.Errorf("providers: DeviceFlow: waiting for %q to sign in: %w", identity, err)
		}
		if !d.clock.Now().Before(a.ExpiresAt) {
			return tokenmanager.Token{}, fmt.Errorf("providers: DeviceFlow: %q did not sign in within the codes' lifetime: %w", identity, ErrDeviceCodeExpired)
		}
		ans, err := d.poll.fetchAnswer(withParams(ctx, url.Values{"device_code": {a.deviceCode}}, a.deviceCode))
		if err == nil {
			return seedAnswer(ctx, ans, d.cfg.Store, d.cfg.Keys, a.identity, "device_code", d.cfg.Events)
		}
		reason := ""
		var re *RetrieveError
		switch {
		case ctx.Err() != nil:
			return tokenmanager.Token{}, fmt.Errorf("providers: DeviceFlow: waiting for %q to sign in: %w", identity, ctx.Err())
		case errors.As(err, &re) && re.ErrorCode == "authorization_pending":
			reason = re.ErrorCode
		case errors.As(err, &re) && re.ErrorCode == "slow_down":
			reason = re.ErrorCode
			interval += slowDownStep
		case errors.As(err, &re) && re.ErrorCode == "access_denied":
			return tokenmanager.Token{}, tokenmanager.Permanent(fmt.Errorf("providers: DeviceFlow: %q: %w (%v)", identity, ErrAccessDenied, err))
		case errors.As(err, &re) && re.ErrorCode == "expired_token":
			return tokenmanager.Token{}, tokenmanager.Permanent(fmt.Errorf("providers: DeviceFlow: %q: %w (%v)", identity, ErrDeviceCodeExpired, err))
		case !tokenmanager.IsPermanent(err) && (re == nil || re.Temporary()):
			reason = "retry"
		default:
			return tokenmanager.Token{}, fmt.Errorf("providers: DeviceFlow: polling for %q: %w", identity, err)
		}
		d.publish(messages.DevicePollPending{Identity: identity, Attempt: attempt, Reason: reason, Interval: interval})
	}
}

// sleep waits d on the flow's clock, or until ctx ends.
func (d *DeviceFlow) sleep(ctx context.Context, wait time.Duration) error {
	t := d.clock.Timer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *DeviceFlow) publish(ev messages.Event) {
	if d.cfg.Events != nil {
		d.cfg.Events(ev)
	}
}
