package users

// LocksHeld counts the identities in s's lock table (held or waited for).
func LocksHeld(s *FileStore) int {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	return len(s.locks)
}
