package testutil

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-tokenmanager/tokenmanager"
)

// ErrEndpointDown is what a failing [Provider] returns.
var ErrEndpointDown = errors.New("token endpoint down")

// Provider is a token provider (its Get is a tokenmanager.TokenProvider)
// that hands out Prefix1, Prefix2, ... and counts its calls. Its faults
// are switched on per test. The zero value hands out tokens without
// expiry; it is safe for concurrent use.
type Provider struct {
	Prefix    string // default "tok-"
	ExpiresIn int64
	TokenType string // the tokens' token_type; "" for none (bearer)

	Calls  atomic.Int64
	FailN  atomic.Int64 // the next FailN calls return ErrEndpointDown
	PanicN atomic.Int64 // the next PanicN calls panic
	Always atomic.Bool  // every call fails with ErrEndpointDown
	Hang   atomic.Bool  // calls block until their ctx ends
	// Delay, when set, is the latency of each call in real time (a
	// call whose ctx ends first fails with ctx.Err()).
	Delay time.Duration
	// OnIssue, when set, is called with each token before it is handed
	// out (a backend that accepts only issued tokens learns it so).
	OnIssue func(token string)

	mu     sync.Mutex
	gate   chan struct{}   // while non-nil, calls wait for it to close
	ctxErr []error         // ctx.Err() seen by hanging or gated calls that gave up
	ended  []time.Duration // how long those calls waited for their ctx
}

// Get is the provider's tokenmanager.TokenProvider.
func (p *Provider) Get(ctx context.Context) (tokenmanager.Token, error) {
	n := p.Calls.Add(1)
	p.mu.Lock()
	g := p.gate
	p.mu.Unlock()
	began := time.Now()
	if p.Delay > 0 {
		select {
		case <-time.After(p.Delay):
		case <-ctx.Done():
		}
	}
	if p.Hang.Load() {
		g = nil
		<-ctx.Done()
	}
	if g != nil {
		select {
		case <-g:
		case <-ctx.Done():
		}
	}
	if err := ctx.Err(); err != nil {
		p.mu.Lock()
		p.ctxErr = append(p.ctxErr, err)
		p.ended = append(p.ended, time.Since(began))
		p.mu.Unlock()
		return tokenmanager.Token{}, err
	}
	if take(&p.PanicN) {
		panic("token provider exploded")
	}
	if p.Always.Load() || take(&p.FailN) {
		return tokenmanager.Token{}, ErrEndpointDown
	}
	prefix := p.Prefix
	if prefix == "" {
		prefix = "tok-"
	}
	tok := fmt.Sprintf("%s%d", prefix, n)
	if p.OnIssue != nil {
		p.OnIssue(tok)
	}
	return tokenmanager.Token{AccessToken: tok, ExpiresIn: p.ExpiresIn, TokenType: p.TokenType}, nil
}

// take decrements *n if it is positive and reports whether it did.
func take(n *atomic.Int64) bool {
	for {
		v := n.Load()
		if v <= 0 {
			return false
		}
		if n.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

// Hold makes every call from now on wait until release is called (or its
// ctx ends). release is idempotent.
func (p *Provider) Hold() (release func()) {
	g := make(chan struct{})
	p.mu.Lock()
	p.gate = g
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			if p.gate == g {
				p.gate = nil
			}
			p.mu.Unlock()
			close(g)
		})
	}
}

// GaveUp returns, for each hanging or held call whose ctx ended first,
// ctx.Err() and how long the call waited.
func (p *Provider) GaveUp() ([]error, []time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]error(nil), p.ctxErr...), append([]time.Duration(nil), p.ended...)
}
