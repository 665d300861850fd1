package providers

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
)

// Format prints c without its client secret, and its TokenURL without a
// password, whatever the verb.
func (c ClientCredentialsConfig) Format(f fmt.State, _ rune) {
	secret := `""`
	if c.ClientSecret != "" {
		secret = "[redacted]"
	}
	fmt.Fprintf(f, "ClientCredentialsConfig{TokenURL:%s ClientID:%q ClientSecret:%s Scopes:%q EndpointParams:%q AuthStyle:%v HTTPClient:%s AllowInsecureHTTP:%t}",
		urlText(c.TokenURL), c.ClientID, secret, c.Scopes, c.EndpointParams, c.AuthStyle, clientText(c.HTTPClient), c.AllowInsecureHTTP)
}

// LogValue logs c without its client secret.
func (c ClientCredentialsConfig) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(c)) }

// MarshalJSON encodes c as the string Format prints, without its client
// secret, so a config logged as JSON (inside a slice or a struct, where
// slog does not call LogValue) does not show it.
func (c ClientCredentialsConfig) MarshalJSON() ([]byte, error) { return json.Marshal(fmt.Sprint(c)) }

// Format prints c, its Auth as that prints (never a secret or a key) and
// its TokenURL without a password, whatever the verb.
func (c GrantConfig) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "GrantConfig{TokenURL:%s Auth:%v Scopes:%q EndpointParams:%q HTTPClient:%s AllowInsecureHTTP:%t}",
		urlText(c.TokenURL), c.Auth, c.Scopes, c.EndpointParams, clientText(c.HTTPClient), c.AllowInsecureHTTP)
}

// LogValue logs c as Format prints it.
func (c GrantConfig) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(c)) }

// MarshalJSON encodes c as the string Format prints.
func (c GrantConfig) MarshalJSON() ([]byte, error) { return json.Marshal(fmt.Sprint(c)) }

// Format prints c, its Auth as that prints (never a secret or a key) and
// its TokenURL without a password, whatever the verb.
func (c JWTBearerConfig) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "JWTBearerConfig{TokenURL:%s Assertion:%s Auth:%v Scopes:%q EndpointParams:%q HTTPClient:%s AllowInsecureHTTP:%t}",
		urlText(c.TokenURL), funcText(c.Assertion == nil), c.Auth, c.Scopes, c.EndpointParams, clientText(c.HTTPClient), c.AllowInsecureHTTP)
}

// LogValue logs c as Format prints it.
func (c JWTBearerConfig) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(c)) }

// MarshalJSON encodes c as the string Format prints.
func (c JWTBearerConfig) MarshalJSON() ([]byte, error) { return json.Marshal(fmt.Sprint(c)) }

// Format prints c, its Auth as that prints (never a secret or a key) and
// its TokenURL without a password, whatever the verb.
func (c TokenExchangeConfig) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "TokenExchangeConfig{TokenURL:%s SubjectToken:%s SubjectTokenType:%q ActorToken:%s ActorTokenType:%q "+
		"RequestedTokenType:%q Audience:%q Resource:%q Scopes:%q Auth:%v EndpointParams:%q HTTPClient:%s AllowInsecureHTTP:%t}",
		urlText(c.TokenURL), funcText(c.SubjectToken == nil), c.SubjectTokenType, funcText(c.ActorToken == nil), c.ActorTokenType,
		c.RequestedTokenType, c.Audience, c.Resource, c.Scopes, c.Auth, c.EndpointParams, clientText(c.HTTPClient), c.AllowInsecureHTTP)
}

// LogValue logs c as Format prints it.
func (c TokenExchangeConfig) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(c)) }

// MarshalJSON encodes c as the string Format prints.
func (c TokenExchangeConfig) MarshalJSON() ([]byte, error) { return json.Marshal(fmt.Sprint(c)) }

// urlText quotes a token URL with any password replaced; a URL that does
// not parse is not shown, since where its password ends is unknown.
func urlText(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "[invalid URL]"
	}
	return fmt.Sprintf("%q", u.Redacted())
}

// clientText says whether an HTTP client is set, without its internals.
func clientText(c *http.Client) string {
	if c == nil {
		return "nil"
	}
	return "set"
}

// funcText says whether a function is set.
func funcText(isNil bool) string {
	if isNil {
		return "nil"
	}
	return "set"
}
