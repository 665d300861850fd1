package providers_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-oauth2's in-memory token store (used by the real-server test)
		// opens a buntdb database whose background goroutine it offers no
		// way to stop.
		goleak.IgnoreAnyFunction("github.com/tidwall/buntdb.(*DB).backgroundManager"),
	)
}
