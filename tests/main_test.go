// Package tests holds black-box integration, stress, fault-injection and
// leak tests of the public API.
package tests

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
