// Package reliability holds long-running, fault-injection, security and
// soak tests of tokenmanager's public API: against a real OAuth2
// authorization server on 127.0.0.1, with faults injected at the token
// provider and at the base transport, and under sustained concurrent load
// with the race detector. RELIABILITY.md at the module root lists the
// scenarios and how to run each.
package reliability

import (
	"testing"

	"go.uber.org/goleak"
)

// buntdbManager is the expiry goroutine of the in-memory token store of
// github.com/go-oauth2/oauth2/v4 (store.NewMemoryTokenStore). The store
// offers no Close, so the goroutine outlives the test server that owns it.
// It belongs to the test's authorization server, not to tokenmanager.
const buntdbManager = "github.com/tidwall/buntdb.(*DB).backgroundManager"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction(buntdbManager))
}
