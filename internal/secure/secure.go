// Package secure decides whether a credential may travel to a URL: only
// over https, or over plain http to a loopback host.
package secure

import (
	"net"
	"net/url"
	"strings"
)

// Allowed reports whether a token or secret may be sent to u: its scheme
// is https, or its host is loopback (localhost, 127.0.0.0/8, ::1), where
// the traffic never leaves the machine.
func Allowed(u *url.URL) bool {
	if u == nil {
		return false
	}
	if strings.EqualFold(u.Scheme, "https") {
		return true
	}
	return Loopback(u.Hostname())
}

// Loopback reports whether host names this machine: "localhost" (or a
// name under .localhost, RFC 6761), an address in 127.0.0.0/8, or ::1.
func Loopback(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
