package providers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/protocol"
	"github.com/go-tokenmanager/tokenmanager/messages"
	"github.com/go-tokenmanager/tokenmanager/users"
)

// grantTypeRefreshToken is RFC 6749 §6's grant type.
const grantTypeRefreshToken = "refresh_token"

// RefreshTokenConfig describes tokens on behalf of a user: the refresh
// token grant (RFC 6749 §6) for one identity, whose refresh token lives
// in a [users.Store]. See [RefreshToken].
type RefreshTokenConfig struct {
	// TokenURL is the token endpoint, an absolute http or https URL.
	// Required unless Issuer is set. Plain http is accepted only to a
	// loopback host, unless AllowInsecureHTTP is set.
	TokenURL string
	// Issuer finds the token endpoint by discovery: set it instead of
	// TokenURL. Optional.
	Issuer *Issuer
	// Identity is the key of the refresh token in Store, and the
	// identity the provider's events name: the same string as the
	// identity of an owner of many identities, such as
	// users.Identity{...}.String(). Required.
	Identity string
	// Store holds the identity's refresh token. Required.
	Store users.Store
	// Keys seal and open the refresh token in Store. Required.
	Keys *users.Keys
	// Scopes are sent space-separated in the scope parameter, to narrow
	// the scopes of the access token (RFC 6749 §6). Optional: the
	// server then grants those of the original grant.
	Scopes []string
	// Auth authenticates the client. Required: a public client (a
	// native or single-page app) sends its client id with
	// [NoClientAuth].
	Auth ClientAuth
	// EndpointParams are added to the request body (resource, audience,
	// ...). Optional. They may not set grant_type, refresh_token or the
	// client's credentials.
	EndpointParams url.Values
	// HTTPClient sends the token requests. Optional; if nil,
	// http.DefaultClient is used.
	HTTPClient *http.Client
	// AllowInsecureHTTP lets the token request travel over plain http to
	// any host, as in [ClientCredentialsConfig]. Optional.
	AllowInsecureHTTP bool
}

// Validate reports every problem with c at once, or nil when c is usable.
func (c RefreshTokenConfig) Validate() error {
	var p problems
	p.endpoint(c.TokenURL, c.Issuer, c.AllowInsecureHTTP, "the refresh token")
	if c.Identity == "" {
		p.add("Identity is empty; the key of the refresh token in the store is required")
	}
	if c.Store == nil {
		p.add("Store is nil; a users.Store holding the refresh token is required")
	}
	if c.Keys == nil {
		p.add("Keys is nil; the keys that seal the refresh token are required")
	}
	p.auth(c.Auth, true)
	p.endpointParams(c.EndpointParams, c.Scopes, "Auth", clientAuthParams...)
	p.endpointParams(c.EndpointParams, nil, "the store", "grant_type", "refresh_token")
	return p.err()
}

// ReauthError is the error of a refresh that cannot go on without the
// user signing in again: the server answered invalid_grant, or nothing
// is stored for the identity. It wraps [tokenmanager.ErrReauthRequired]
// and is permanent ([tokenmanager.IsPermanent]). It never holds a token.
type ReauthError struct {
	// Identity is the identity whose user must sign in again.
	Identity string
	// Err is why: a *[RetrieveError] with invalid_grant, or an error
	// wrapping users.ErrNotFound.
	Err error
}

// Error says which identity must sign in again, and why.
func (e *ReauthError) Error() string {
	return fmt.Sprintf("providers: identity %q must sign in again: %v", e.Identity, e.Err)
}

// Unwrap returns [tokenmanager.ErrReauthRequired] and Err.
func (e *ReauthError) Unwrap() []error { return []error{tokenmanager.ErrReauthRequired, e.Err} }

// Permanent reports true: the refresh token will not come back by
// itself.
func (e *ReauthError) Permanent() bool { return true }

// RefreshToken returns a provider that gets access tokens on behalf of a
// user with the refresh token grant. Each call loads the identity's
// refresh token from cfg.Store, opens it with cfg.Keys, and sends it to
// the token endpoint with grant_type refresh_token. When the answer
// carries a new refresh token (rotation), the new one is sealed with the
// current key and saved, compare-and-swap on the entry's version, and
// only once the store holds it durably is the access token returned; a
// [messages.RefreshTokenRotated] event follows. A token sealed under an
// older key is sealed anew with the current one even when the server
// does not rotate; that save is best effort (a failure leaves the old
// seal, which still opens, and the access token is returned).
//
// Give each identity one provider, used by one manager (or one owner's
// identity, or a cluster grain): the manager's one fetch at a time is what
// keeps two refreshes from spending the same refresh token, which a
// server with reuse detection punishes by revoking the whole family. The
// provider's own calls run one at a time too: a call the manager
// abandoned after FetchTimeout delays the next instead of overlapping it.
// A store shared by processes that implements [users.Locker] (pgstore
// does) extends that across them: each call holds the identity's lock
// from loading the refresh token until the rotated one is saved, so two
// replicas, or a cluster grain that moved while its previous activation
// was refreshing, refresh one after the other, each with the token the
// other saved.
//
// Once a call has sent the refresh token, it reads the answer and saves
// the rotated token even if its context ends meanwhile (the manager
// closing, a cluster grain moving to another member), for at most 30
// seconds: the server may have spent the token sent, and giving up on
// its answer would lose the new one. A manager is not held up by that:
// it abandons a provider call at FetchTimeout and the call finishes on
// its own; a later call waits for it and uses the token it saved. Before
// the process exits, [DrainRefreshes] waits for such calls.
//
// Failures:
//   - invalid_grant (the refresh token was revoked, expired, or reused)
//     removes the entry from the store, publishes
//     [messages.RefreshTokenRevoked] and returns a permanent
//     *[ReauthError] wrapping [tokenmanager.ErrReauthRequired]; so does
//     an identity with nothing stored. The event is published once,
//     not at every later fetch, until a token is stored again. The
//     manager fails waiting requests at once and never sends the dead
//     token again.
//   - A refused token that the store fails to remove is not sent again:
//     while the store holds it, each fetch returns the *[ReauthError]
//     and tries the removal again.
//   - An invalid_grant for a token that another writer had already
//     replaced in the store (the entry's version moved) is temporary: the
//     next fetch uses the stored token.
//   - A store that fails to save the rotated token fails the fetch
//     (temporary) and keeps the token in memory; the next fetch saves it
//     first and does not send the old one. The access token of that
//     answer is never used.
//   - An answer whose access token is refused (no access_token, an
//     expires_in that is not an integer, a JWT already expired) but that
//     carries a new refresh token fails the fetch; the new refresh token
//     is saved (or kept pending) first, as the server spent the old one.
//   - A save that loses the compare-and-swap (another writer saved first)
//     keeps the other writer's token and returns the access token.
//   - Everything else is as in [ClientCredentials]: *[RetrieveError]
//     answers, Retry-After, bounded bodies, an invalid config returned as
//     a permanent error on every call.
//
// Neither refresh token appears in an error, event or log: a server
// echoing one gets it shown as [redacted]. Events reach the manager's
// subscribers when the provider runs inside a manager; called on its
// own, it publishes nothing.
func RefreshToken(cfg RefreshTokenConfig) tokenmanager.TokenProvider {
	return newRefreshToken(cfg).fetch
}

// refresher is one identity's refresh token grant.
type refresher struct {
	e        *endpoint
	identity string
	store    users.Store
	keys     *users.Keys

	// turn lets one fetch at a time run: the manager starts one at a
	// time, but a fetch it abandoned after FetchTimeout may still be
	// running when it starts the next, and two refreshes with the same
	// refresh token would have a server with reuse detection revoke the
	// family. Holding it guards pending.
	turn chan struct{}
	// pending is a rotated token that the store failed to save; it is
	// saved before anything is sent again.
	pending *users.Entry
	// dead is an entry the server refused (invalid_grant) that the store
	// failed to remove: while it is what the store holds, it is not
	// sent again.
	dead *deadEntry
	// revoked is set once RefreshTokenRevoked is published, until a token
	// is stored again: the event is published once, not at every fetch.
	revoked bool
}

func newRefreshToken(cfg RefreshTokenConfig) *refresher {
	form := baseForm(grantTypeRefreshToken, cfg.Scopes, cfg.EndpointParams)
	r := &refresher{identity: cfg.Identity, store: cfg.Store, keys: cfg.Keys, turn: make(chan struct{}, 1)}
	r.e = newEndpoint(cfg.TokenURL, cfg.Issuer, cfg.HTTPClient, cfg.AllowInsecureHTTP, cfg.Auth, form, cfg.Validate())
	r.e.params = func(ctx context.Context, _ target) (url.Values, []string, error) {
		rt, _ := ctx.Value(refreshTokenKey{}).(sentToken)
		return url.Values{"refresh_token": {rt.v}}, []string{rt.v}, nil
	}
	return r
}

// refreshTokenKey carries the refresh token a fetch sends, from fetch to
// the endpoint's params, as a [sentToken].
type refreshTokenKey struct{}

// sentToken holds the refresh token in the context. It has no String
// method and no exported field: a context printed (fmt.Sprint(ctx), as a
// RoundTripper's log may do) shows only its type, never the token.
type sentToken struct{ v string }

func (r *refresher) fetch(ctx context.Context) (tokenmanager.Token, error) {
	if r.e.err != nil {
		return tokenmanager.Token{}, r.e.err
	}
	select {
	case r.turn <- struct{}{}:
		defer func() { <-r.turn }()
	case <-ctx.Done():
		return tokenmanager.Token{}, fmt.Errorf("providers: RefreshToken: waiting for an earlier refresh of the identity: %w", ctx.Err())
	}
	if l, ok := r.store.(users.Locker); ok {
		locked, unlock, err := l.Lock(ctx, r.identity)
		if err != nil {
			return tokenmanager.Token{}, fmt.Errorf("providers: RefreshToken: taking the identity's lock in the store: %w", err)
		}
		defer unlock()
		ctx = locked
	}
	if err := r.savePending(ctx); err != nil {
		return tokenmanager.Token{}, err
	}
	cur, err := r.store.Load(ctx, r.identity)
	if errors.Is(err, users.ErrNotFound) {
		reauth := &ReauthError{Identity: r.identity, Err: err}
		r.publishRevoked(ctx, reauth)
		return tokenmanager.Token{}, reauth
	}
	if err != nil {
		return tokenmanager.Token{}, fmt.Errorf("providers: RefreshToken: loading the refresh token: %w", err)
	}
	if d := r.dead; d != nil {
		if d.entry.Version == cur.Version && bytes.Equal(d.entry.Sealed, cur.Sealed) {
			return tokenmanager.Token{}, r.refused(ctx, cur, d.err)
		}
		r.dead = nil // another writer stored a new token
	}
	r.revoked = false
	plain, keyID, err := r.keys.Open(r.identity, cur.Sealed)
	if err != nil {
		// The keys are wrong or the entry was tampered with: no retry
		// mends that, a change of configuration does.
		return tokenmanager.Token{}, tokenmanager.Permanent(fmt.Errorf("providers: RefreshToken: opening the stored refresh token: %w", err))
	}
	old := string(plain)
	// Once sent, the refresh token may be spent whatever becomes of the
	// fetch: the exchange, and the save of what it brings, go on when the
	// fetch is cancelled or times out (the manager closing, a grain
	// moving to another member), bounded by exchangeTimeout of their own.
	// Giving up on an answer the server has made would lose the rotated
	// token, and the next refresh would spend the old one again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), exchangeTimeout)
	defer cancel()
	beginExchange() // see DrainRefreshes
	defer endExchange()
	a, err := r.e.fetchAnswer(context.WithValue(ctx, refreshTokenKey{}, sentToken{old}))
	if err != nil {
		if a.refreshToken != "" && a.refreshToken != old {
			// The server rotated but its access token was refused: the
			// token sent is spent, so the new one is kept all the same.
			if serr := r.save(ctx, cur, a.refreshToken, old); serr != nil {
				err = errors.Join(err, serr)
			}
			return tokenmanager.Token{}, err
		}
		return tokenmanager.Token{}, r.failed(ctx, cur, err)
	}
	next := a.refreshToken
	if next == "" || next == old {
		if keyID == r.keys.Current() {
			return a.tok, nil // no rotation: the stored token stays valid
		}
		next = old // reseal under the current key
	}
	if err := r.save(ctx, cur, next, old); err != nil && next != old {
		return tokenmanager.Token{}, err
	}
	// Resealing the same token is best effort: the stored one still
	// opens and is still valid, and the next refresh tries again.
	return a.tok, nil
}

// save stores next in place of cur, whose token was old; a rotated token
// the store fails to save is kept pending. A save that loses the
// compare-and-swap keeps the other writer's token and reports nil.
func (r *refresher) save(ctx context.Context, cur users.Entry, next, old string) error {
	sealed, err := r.keys.Seal(r.identity, []byte(next))
	if err != nil {
		return fmt.Errorf("providers: RefreshToken: sealing the new refresh token: %w", err)
	}
	e := users.Entry{Version: cur.Version + 1, Sealed: sealed}
	// The server has spent the old token: the save goes on even if the
	// fetch is cancelled meanwhile (the manager closing, say), bounded
	// by saveTimeout of its own.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
	defer cancel()
	switch err := r.store.Save(sctx, r.identity, e); {
	case errors.Is(err, users.ErrConflict):
		// Another writer saved a newer token first; it stays.
		return nil
	case err != nil:
		if next != old {
			r.pending = &e
		}
		return fmt.Errorf("providers: RefreshToken: saving the rotated refresh token: %w", err)
	}
	if next != old {
		publish(ctx, messages.RefreshTokenRotated{Identity: r.identity, Version: e.Version, KeyID: r.keys.Current()})
	}
	return nil
}

// saveTimeout bounds the save of a rotated refresh token, which does
// not end with the fetch's context.
const saveTimeout = 10 * time.Second

// exchangeTimeout bounds a refresh-token request once sent, which does
// not end with the fetch's context either.
const exchangeTimeout = 30 * time.Second

// savePending saves a rotated token a previous fetch could not save; the
// caller holds the turn.
func (r *refresher) savePending(ctx context.Context) error {
	if r.pending == nil {
		return nil
	}
	switch err := r.store.Save(ctx, r.identity, *r.pending); {
	case err == nil:
		publish(ctx, messages.RefreshTokenRotated{Identity: r.identity, Version: r.pending.Version, KeyID: r.keys.Current()})
	case errors.Is(err, users.ErrConflict):
		// Someone else stored a token meanwhile: theirs is newer.
	default:
		return fmt.Errorf("providers: RefreshToken: saving the rotated refresh token of an earlier refresh: %w", err)
	}
	r.pending = nil
	return nil
}

// failed handles a failed refresh of the entry cur.
func (r *refresher) failed(ctx context.Context, cur users.Entry, err error) error {
	var re *RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		return err
	}
	return r.refused(ctx, cur, err)
}

// deadEntry is a stored entry whose token the server refused with err.
type deadEntry struct {
	entry users.Entry
	err   error
}

// refused removes the entry cur, whose token the server refused for err,
// and returns the error that asks the user to sign in again; the caller
// holds the turn.
func (r *refresher) refused(ctx context.Context, cur users.Entry, err error) error {
	switch derr := r.store.Delete(ctx, r.identity, cur.Version); {
	case errors.Is(derr, users.ErrConflict):
		// The token sent was stale: another writer stored a new one
		// meanwhile. Try again with that one.
		return temporary{fmt.Errorf("providers: RefreshToken: the refresh token was replaced in the store during the refresh: %w", err)}
	case derr != nil:
		// The entry stays; the next fetch does not send it again but
		// tries the delete again. Still, the user must sign in again.
		r.dead = &deadEntry{entry: cur, err: err}
		err = errors.Join(err, fmt.Errorf("providers: RefreshToken: removing the refused refresh token: %w", derr))
	default:
		r.dead = nil
	}
	reauth := &ReauthError{Identity: r.identity, Err: err}
	r.publishRevoked(ctx, reauth)
	return reauth
}

// publishRevoked publishes RefreshTokenRevoked, unless it was published
// and no token was stored since; the caller holds the turn.
func (r *refresher) publishRevoked(ctx context.Context, reauth *ReauthError) {
	if r.revoked {
		return
	}
	r.revoked = true
	publish(ctx, messages.RefreshTokenRevoked{Identity: r.identity, Err: reauth})
}

// temporary marks an error as not permanent, whatever it wraps: the
// first error in a chain with a Permanent method decides
// (tokenmanager.IsPermanent).
type temporary struct{ error }

func (e temporary) Unwrap() error   { return e.error }
func (e temporary) Permanent() bool { return false }

// publish puts ev where the manager calling the provider publishes the
// identity's events; called on its own, the provider publishes nothing.
func publish(ctx context.Context, ev messages.Event) {
	if p := protocol.PublishFrom(ctx); p != nil {
		p(ev)
	}
}
