//go:build !unix

package bench

import "time"

// cpuTime is not measured on this platform; CPU metrics read zero.
func cpuTime() time.Duration { return 0 }
