package providers

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/internal/dpopctx"
)

// A grant's token request carries a DPoP proof (RFC 9449 §5) when the
// identity it fetches for has a DPoP key (tokenmanager.Settings.DPoP):
// the token actor hands the key to the grant with the fetch's context.
// The proof has htm POST and htu the token endpoint, no ath; a redirect's
// request gets a proof of its own. A DPoP-Nonce in the answer is kept
// for the endpoint's origin, and a 400 use_dpop_nonce with a DPoP-Nonce
// is answered by sending the request once more with the nonce.

// withProof adds a proof of d to req, and returns c with a redirect
// policy that gives each redirect's request a proof of its own.
func withProof(c *http.Client, d *tokenmanager.DPoP, req *http.Request) (*http.Client, error) {
	proof, err := d.ProofFor(req.Method, req.URL, "")
	if err != nil {
		return nil, err
	}
	req.Header.Set("DPoP", proof)
	cp := *c
	next := c.CheckRedirect
	cp.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if next != nil {
			if err := next(r, via); err != nil {
				return err
			}
		} else if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		p, err := d.ProofFor(r.Method, r.URL, "")
		if err != nil {
			return fmt.Errorf("providers: DPoP proof for a redirect: %w", err)
		}
		r.Header.Set("DPoP", p)
		return nil
	}
	return &cp, nil
}

// nonceRequested reports whether err is the token endpoint's request for
// a DPoP nonce (error use_dpop_nonce) that gave one (a DPoP-Nonce header),
// in a fetch that sends proofs. Without the header a second request
// would carry no nonce either: it is not sent.
func nonceRequested(ctx context.Context, err error) bool {
	var re *RetrieveError
	return err != nil && errors.As(err, &re) && re.ErrorCode == "use_dpop_nonce" && re.nonce && dpopctx.From(ctx) != nil
}
