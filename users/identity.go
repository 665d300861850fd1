package users

import (
	"errors"
	"net/url"
	"strings"
)

// Identity names whose tokens are asked for: a user, the client acting
// on the user's behalf, and the resource (API, audience) the tokens are
// for. Its String is the identity of an owner of many identities and the
// key under which a [Store] keeps the refresh token. It holds no secret.
type Identity struct {
	// User is the user's stable identifier (the subject, or an id of
	// your own). Required.
	User string
	// Client is the OAuth client id. Required.
	Client string
	// Resource names the API the tokens are for. Optional.
	Resource string
}

// String returns "user=U|client=C|resource=R", each part query-escaped,
// so that distinct identities never give the same string.
func (id Identity) String() string {
	var b strings.Builder
	b.WriteString("user=")
	b.WriteString(url.QueryEscape(id.User))
	b.WriteString("|client=")
	b.WriteString(url.QueryEscape(id.Client))
	if id.Resource != "" {
		b.WriteString("|resource=")
		b.WriteString(url.QueryEscape(id.Resource))
	}
	return b.String()
}

// Validate reports what is missing from id, or nil.
func (id Identity) Validate() error {
	var errs []error
	if id.User == "" {
		errs = append(errs, errors.New("users: Identity.User is empty"))
	}
	if id.Client == "" {
		errs = append(errs, errors.New("users: Identity.Client is empty"))
	}
	return errors.Join(errs...)
}
