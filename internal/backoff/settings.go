package backoff

import (
	"fmt"

	"github.com/go-tokenmanager/tokenmanager"
)

// SettingsOf calls fn for identity, containing a panic, and validates its
// settings; errors name the identity. Owners and grains call it.
func SettingsOf(fn tokenmanager.SettingsFunc, identity string) (s tokenmanager.Settings, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("tokenmanager: settings for identity %q: SettingsFor panicked: %v", identity, r)
		}
	}()
	s, err = fn(identity)
	if err == nil {
		err = s.Validate()
	}
	if err != nil {
		return s, fmt.Errorf("tokenmanager: settings for identity %q: %w", identity, err)
	}
	return s, nil
}
