package providers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/url"

	"github.com/go-tokenmanager/tokenmanager"
)

// maxResponseBody bounds how much of a token endpoint's answer is read. A
// token response is a few kilobytes at most; anything past a mebibyte is
// a misconfigured URL or a hostile server.
const maxResponseBody = 1 << 20

// fields is what a token endpoint's answer says.
type fields struct {
	token tokenmanager.Token
	// refreshToken is the answer's refresh_token, if any.
	refreshToken                          string
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
		refreshToken:     v.Get("refresh_token"),
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
		RefreshToken     any `json:"refresh_token"`
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
	f.refreshToken = str(oauthErr.RefreshToken)
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
