package clusterdemo

import "github.com/go-tokenmanager/tokenmanager/tokengrain/internal/testcerts"

// ServerName is the DNS name every member's certificate carries: members
// dial each other by IP, and verify this name (tokengrain.TLSFiles).
const ServerName = testcerts.ServerName

// WriteCredentials writes a fresh CA and a member certificate signed by
// it into dir: ca.crt, tls.crt and tls.key (see testcerts.Write).
func WriteCredentials(dir string) error { return testcerts.Write(dir) }
