package providers

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/go-tokenmanager/tokenmanager"
)

type tokenSourceFunc func() (*oauth2.Token, error)

func (f tokenSourceFunc) Token() (*oauth2.Token, error) { return f() }

func TestConvert(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		tok     *oauth2.Token
		want    tokenmanager.Token
		wantErr string
	}{
		{
			name: "expiry rounds down",
			tok:  &oauth2.Token{AccessToken: "a", TokenType: "Bearer", Expiry: now.Add(90*time.Second + 900*time.Millisecond)},
			want: tokenmanager.Token{AccessToken: "a", TokenType: "Bearer", ExpiresIn: 90},
		},
		{
			name: "zero expiry means none",
			tok:  &oauth2.Token{AccessToken: "a"},
			want: tokenmanager.Token{AccessToken: "a"},
		},
		{
			name: "scope from the response",
			tok:  (&oauth2.Token{AccessToken: "a", Expiry: now.Add(time.Hour)}).WithExtra(map[string]any{"scope": "read write"}),
			want: tokenmanager.Token{AccessToken: "a", ExpiresIn: 3600, Scope: "read write"},
		},
		{
			name:    "already expired",
			tok:     &oauth2.Token{AccessToken: "a", Expiry: now.Add(-time.Second)},
			wantErr: "providers: TokenSource returned a token that expires in -1s",
		},
		{
			name:    "expires within a second",
			tok:     &oauth2.Token{AccessToken: "a", Expiry: now.Add(500 * time.Millisecond)},
			wantErr: "expires in 500ms",
		},
		{
			name:    "nil token",
			wantErr: "neither a token nor an error",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := convert(tt.tok, nil, now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v; want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "a\"") {
					t.Errorf("err = %q shows the token", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestFromTokenSource(t *testing.T) {
	t.Run("token", func(t *testing.T) {
		p := FromTokenSource(tokenSourceFunc(func() (*oauth2.Token, error) {
			return &oauth2.Token{AccessToken: "a", Expiry: time.Now().Add(time.Hour)}, nil
		}))
		got, err := p(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got.AccessToken != "a" || got.ExpiresIn < 3590 || got.ExpiresIn > 3600 {
			t.Errorf("got %v; want token a expiring in about 3600s", got)
		}
	})
	t.Run("error passes through", func(t *testing.T) {
		boom := errors.New("boom")
		_, err := FromTokenSource(tokenSourceFunc(func() (*oauth2.Token, error) { return nil, boom }))(context.Background())
		if !errors.Is(err, boom) {
			t.Errorf("err = %v; want boom", err)
		}
		var hint interface{ RetryAfter() time.Duration }
		if errors.As(err, &hint) {
			t.Errorf("err has a RetryAfter hint; want none")
		}
	})
	t.Run("panic", func(t *testing.T) {
		_, err := FromTokenSource(tokenSourceFunc(func() (*oauth2.Token, error) { panic("oops") }))(context.Background())
		if err == nil || !strings.Contains(err.Error(), "panicked: oops") {
			t.Errorf("err = %v; want a panic error", err)
		}
	})
	t.Run("nil source", func(t *testing.T) {
		if _, err := FromTokenSource(nil)(context.Background()); err == nil {
			t.Error("err = nil; want an error")
		}
	})
	t.Run("ctx already done", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		called := false
		_, err := FromTokenSource(tokenSourceFunc(func() (*oauth2.Token, error) {
			called = true
			return &oauth2.Token{AccessToken: "a"}, nil
		}))(ctx)
		if !errors.Is(err, context.Canceled) || called {
			t.Errorf("err = %v, called = %v; want context.Canceled without a call", err, called)
		}
	})
	t.Run("ctx ends while the source hangs", func(t *testing.T) {
		entered, release := make(chan struct{}), make(chan struct{})
		p := FromTokenSource(tokenSourceFunc(func() (*oauth2.Token, error) {
			close(entered)
			<-release
			return &oauth2.Token{AccessToken: "late"}, nil
		}))
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := p(ctx)
			errc <- err
		}()
		<-entered
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v; want context.Canceled", err)
		}
		close(release) // the abandoned call ends; goleak checks it did
	})
}

// TestFromTokenSource_clientcredentials drives x/oauth2's own
// client-credentials flow through the adapter, including a Retry-After
// that x/oauth2 itself ignores.
func TestFromTokenSource_clientcredentials(t *testing.T) {
	var limited atomic.Bool
	limited.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if limited.Load() {
			w.Header().Set("Retry-After", "42")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"error":"slow_down"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"xo","token_type":"Bearer","expires_in":"600"}`)
	}))
	defer srv.Close()
	cc := clientcredentials.Config{ClientID: "id", ClientSecret: "s3cr3t-value", TokenURL: srv.URL}
	// A plain source, not cc.TokenSource: its ReuseTokenSource would keep
	// the first token, and this test wants two fetches.
	p := FromTokenSource(tokenSourceFunc(func() (*oauth2.Token, error) { return cc.Token(context.Background()) }))

	_, err := p(context.Background())
	var hint interface{ RetryAfter() time.Duration }
	if !errors.As(err, &hint) || hint.RetryAfter() != 42*time.Second {
		t.Fatalf("err = %v; want a RetryAfter hint of 42s", err)
	}
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "slow_down" {
		t.Errorf("err = %v; want it to wrap *oauth2.RetrieveError slow_down", err)
	}

	limited.Store(false)
	tok, err := p(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "xo" || tok.ExpiresIn < 595 || tok.ExpiresIn > 600 {
		t.Errorf("got %v; want token xo expiring in about 600s", tok)
	}
}
