package providers

import (
	"context"
	"sync"
)

// refreshing counts the RefreshToken calls of the process that have sent
// a refresh token and not yet saved what the server answered.
var refreshing struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0; made when it leaves 0
}

// beginExchange counts a call that is about to send a refresh token;
// endExchange counts it done once what the server answered is saved, or
// failed.
func beginExchange() {
	refreshing.mu.Lock()
	if refreshing.n == 0 {
		refreshing.idle = make(chan struct{})
	}
	refreshing.n++
	refreshing.mu.Unlock()
}

func endExchange() {
	refreshing.mu.Lock()
	if refreshing.n--; refreshing.n == 0 {
		close(refreshing.idle)
	}
	refreshing.mu.Unlock()
}

// DrainRefreshes waits until no [RefreshToken] call of the process is
// between sending a refresh token and saving the rotated one the server
// answered, or until ctx ends (then it returns ctx.Err()). Such a call
// goes on when its manager closes or its cluster grain stops, for up to
// 30 seconds, but not when the process exits: call DrainRefreshes before
// a process exits, after closing its managers and leaving its cluster
// (for example in a SIGTERM handler), so that no rotation in flight is
// lost and no user has to sign in again because of a rolling update.
func DrainRefreshes(ctx context.Context) error {
	for {
		refreshing.mu.Lock()
		if refreshing.n == 0 {
			refreshing.mu.Unlock()
			return nil
		}
		idle := refreshing.idle
		refreshing.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
