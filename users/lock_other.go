//go:build !unix

package users

import "os"

// lockFile does nothing where flock is missing: there, only one
// FileStore may use a file, unchecked.
func lockFile(*os.File) error { return nil }
