package reliability

import (
	"context"
	"testing"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// TestSettings_hugeEventBuffer: an EventBuffer too large to allocate must
// be refused by Validate (and so by New) with an error, not accepted and
// then crash New. Each subscriber's queue is make(chan Event,
// EventBuffer); 1<<62 panics with "makechan: size out of range", and
// values around 1<<31 ask for tens of gigabytes per subscriber.
func TestSettings_hugeEventBuffer(t *testing.T) {
	s := tokenmanager.Settings{
		GetCredentials: func(context.Context) (tokenmanager.Token, error) {
			return tokenmanager.Token{AccessToken: "t"}, nil
		},
		EventBuffer: 1 << 62,
	}
	verr := s.Validate()
	var (
		rt     *transport.RoundTripper
		newErr error
		panicV any
	)
	func() {
		defer func() { panicV = recover() }()
		rt, newErr = transport.New(s)
	}()
	if rt != nil {
		rt.Close()
	}
	if panicV != nil {
		t.Errorf("transport.New(EventBuffer: 1<<62) panicked: %v (Validate() = %v); want an error from Validate and New", panicV, verr)
		return
	}
	if verr == nil || newErr == nil {
		t.Errorf("Validate() = %v, New error = %v; want both to refuse EventBuffer 1<<62", verr, newErr)
	}
}
