// Package users keeps the refresh tokens of users, so that a manager can
// get access tokens on their behalf long after they signed in.
//
// An identity is a user, a client and a resource ([Identity]). Its
// refresh token lives in a [Store], sealed with AES-256-GCM by [Keys]
// under a key id, bound to the identity, so that a store (a file, a
// database row, a backup) holds nothing usable without the keys. The
// provider that refreshes (providers.RefreshToken) loads the token from
// the store, sends it to the token endpoint with grant_type
// refresh_token, writes the rotated one back durably, and only then hands
// the new access token to the manager. The manager's token state gives
// one refresh at a time per identity, early refresh, backoff and the
// handling of permanent failures, as for every other provider.
//
// [OpenFile] is the embedded store: one local file, no server, no
// dependency. The PostgreSQL store for many replicas is the module
// github.com/go-tokenmanager/tokenmanager/pgstore. [Seed] puts a user's
// first refresh token in a store.
package users
