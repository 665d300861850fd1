package grpcauth_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/grpcauth"
	"github.com/go-tokenmanager/tokenmanager/internal/testutil"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

// DPoP has no defined use over gRPC: a single-identity manager with a
// DPoP key is refused at construction, and a call for a DPoP identity of
// a multi-identity manager fails with FailedPrecondition, without a
// token fetch.
func TestDPoP_refused(t *testing.T) {
	d, err := tokenmanager.NewDPoP(nil)
	if err != nil {
		t.Fatal(err)
	}
	var p testutil.Provider
	rt := testutil.NewRT(t, tokenmanager.Settings{GetCredentials: p.Get, DPoP: d}, nil)
	if _, err := grpcauth.New(rt); err == nil || !strings.Contains(err.Error(), "DPoP") {
		t.Errorf("New over a DPoP RoundTripper: %v; want a DPoP error", err)
	}

	m := testutil.NewMulti(t, tokenmanager.OwnerSettings{SettingsFor: func(id string) (tokenmanager.Settings, error) {
		s := tokenmanager.Settings{GetCredentials: p.Get}
		if id == "bound" {
			s.DPoP = d
		}
		return s, nil
	}}, nil)
	c, err := grpcauth.New(m, grpcauth.AllowInsecure())
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetRequestMetadata(transport.WithIdentity(context.Background(), "bound"))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "DPoP") {
		t.Errorf("call for a DPoP identity: %v; want FailedPrecondition naming DPoP", err)
	}
	if p.Calls.Load() != 0 {
		t.Errorf("%d fetches; want none", p.Calls.Load())
	}
	if md, err := c.GetRequestMetadata(transport.WithIdentity(context.Background(), "plain")); err != nil || md["authorization"] != "Bearer tok-1" {
		t.Errorf("bearer identity: %v, %v; want its token", md, err)
	}
}
