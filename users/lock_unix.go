//go:build unix

package users

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockFile takes an exclusive advisory lock on f, failing at once if
// another FileStore (in this process or another) holds one: two writers
// would corrupt the log. The lock goes with the file's close.
func lockFile(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return fmt.Errorf("users: %s is in use by another store: %w", f.Name(), ErrLocked)
	}
	if err != nil {
		return fmt.Errorf("users: locking %s: %w", f.Name(), err)
	}
	return nil
}
