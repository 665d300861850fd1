package dpop

import (
	"net/url"
	"strings"
	"sync"
)

// maxOrigins bounds how many origins' nonces a Nonces keeps: one identity
// talks to a few servers; beyond the bound, an arbitrary one is forgotten
// (its server asks for a nonce again).
const maxOrigins = 64

// Nonces holds the last DPoP nonce each origin gave. The zero value is
// ready; it is safe for concurrent use by multiple goroutines.
type Nonces struct {
	mu sync.RWMutex
	m  map[string]string // origin -> nonce; guarded by mu
}

// Get returns the nonce known for origin, "" if none.
func (n *Nonces) Get(origin string) string {
	n.mu.RLock()
	v := n.m[origin]
	n.mu.RUnlock()
	return v
}

// Set records nonce for origin; an empty nonce is ignored.
func (n *Nonces) Set(origin, nonce string) {
	if origin == "" || !validNonce(nonce) {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m[origin] == nonce {
		return
	}
	if n.m == nil {
		n.m = make(map[string]string, 2)
	}
	if _, ok := n.m[origin]; !ok && len(n.m) >= maxOrigins {
		for k := range n.m {
			delete(n.m, k)
			break
		}
	}
	n.m[origin] = nonce
}

// validNonce reports whether s is a nonce as RFC 9449 §8.1 defines it:
// one or more NQCHAR (%x21 / %x23-5B / %x5D-7E).
func validNonce(s string) bool {
	if s == "" || len(s) > 4096 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// Origin returns u's origin, scheme://host:port, lower case, the port
// always written: the key nonces are kept under.
func Origin(u *url.URL) string {
	if u == nil || u.Host == "" {
		return ""
	}
	scheme := strings.ToLower(u.Scheme)
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if port == "" {
		port = defaultPort(scheme)
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host + ":" + port
}

func defaultPort(scheme string) string {
	switch scheme {
	case "https":
		return "443"
	case "http":
		return "80"
	}
	return ""
}

// HTU returns the htu claim for u (RFC 9449 §4.2, §4.3): u without query
// and fragment, normalised as RFC 3986 §6.2.2 and §6.2.3 say: scheme and
// host in lower case, the default port dropped, percent-encodings in upper
// case and those of unreserved characters decoded, dot segments removed,
// and an empty path written "/".
func HTU(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" && port != defaultPort(scheme) {
		host += ":" + port
	}
	path := normalizePercent(wirePath(u))
	path = removeDots(path)
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path
}

// wirePath returns the path of u as net/http sends it in the request
// line (url.URL.RequestURI): u.Opaque when set ("/a%2Fb", or the path of
// "//host/a%2Fb"), u.EscapedPath() otherwise.
func wirePath(u *url.URL) string {
	op := u.Opaque
	if op == "" {
		return u.EscapedPath()
	}
	if rest, ok := strings.CutPrefix(op, "//"); ok {
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			return rest[i:]
		}
		return ""
	}
	return op
}

// normalizePercent upper-cases the hex digits of percent-encodings and
// decodes those of unreserved characters (RFC 3986 §6.2.2.1, §6.2.2.2).
func normalizePercent(p string) string {
	if !strings.Contains(p, "%") {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			b.WriteByte(p[i])
			continue
		}
		c := unhex(p[i+1])<<4 | unhex(p[i+2])
		if isUnreserved(c) {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte(upper(p[i+1]))
			b.WriteByte(upper(p[i+2]))
		}
		i += 2
	}
	return b.String()
}

// removeDots removes "." and ".." segments (RFC 3986 §5.2.4).
func removeDots(p string) string {
	if !strings.Contains(p, ".") {
		return p
	}
	segs := strings.Split(p, "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return strings.Join(out, "/")
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// Challenge reports whether a response's WWW-Authenticate values ask for
// a DPoP nonce: a DPoP challenge with error="use_dpop_nonce" (RFC 9449
// §9). The values are parsed as RFC 9110 §11.6.1 challenges: spaces
// around "=" (BWS), quoted or token values, several challenges per value.
func Challenge(values []string) bool {
	for _, v := range values {
		found := false
		parseChallenges(v, func(scheme, name, value string) {
			if strings.EqualFold(scheme, "DPoP") && strings.EqualFold(name, "error") && strings.EqualFold(value, "use_dpop_nonce") {
				found = true
			}
		})
		if found {
			return true
		}
	}
	return false
}

// parseChallenges calls param for each auth-param of each challenge in
// the WWW-Authenticate value v:
//
//	challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//	auth-param = token BWS "=" BWS ( token / quoted-string )
//
// A bare token after a comma starts a challenge; one right after a scheme
// is its token68. What is not a token is skipped up to the next comma.
func parseChallenges(v string, param func(scheme, name, value string)) {
	scheme := ""
	afterComma := true
	for i := 0; i < len(v); {
		switch v[i] {
		case ' ', '\t':
			i++
			continue
		case ',':
			afterComma = true
			i++
			continue
		}
		start := i
		for i < len(v) && isTchar(v[i]) {
			i++
		}
		if i == start { // not a token: skip it
			for i < len(v) && v[i] != ',' {
				i++
			}
			continue
		}
		name := v[start:i]
		j := skipWS(v, i)
		if j < len(v) && v[j] == '=' {
			k := skipWS(v, j+1)
			if k < len(v) && (v[k] == '"' || isTchar(v[k])) {
				var value string
				value, i = readValue(v, k)
				if scheme != "" {
					param(scheme, name, value)
				}
				afterComma = false
				continue
			}
			for i = j; i < len(v) && v[i] == '='; i++ { // token68 padding
			}
			continue
		}
		if afterComma || scheme == "" {
			scheme = name
			afterComma = false
		} // else: the scheme's token68
	}
}

// readValue reads a token or a quoted-string starting at v[i]; it returns
// the value (unquoted) and the index after it.
func readValue(v string, i int) (string, int) {
	if v[i] != '"' {
		start := i
		for i < len(v) && isTchar(v[i]) {
			i++
		}
		return v[start:i], i
	}
	var b strings.Builder
	for i++; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"':
			return b.String(), i + 1
		case c == '\\' && i+1 < len(v):
			i++
			b.WriteByte(v[i])
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), i // unterminated: up to the end
}

func skipWS(v string, i int) int {
	for i < len(v) && (v[i] == ' ' || v[i] == '\t') {
		i++
	}
	return i
}

// isTchar reports whether c may be in an RFC 9110 token.
func isTchar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
