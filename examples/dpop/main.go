// Command dpop shows DPoP (RFC 9449) at work, on 127.0.0.1 only.
//
// It starts a small authorization server that issues DPoP-bound tokens
// and requires a nonce in every proof, and an API that checks each
// request's proof (signature, htm, htu, ath, the key the token is bound
// to) and requires a nonce of its own. The client, a
// transport.RoundTripper with Settings.DPoP, gets its token through the
// server's nonce request, calls the API twice (the first call through the
// API's nonce request), and then shows that the token alone, without its
// key, is refused. It exits on its own.
//
//	go run ./examples/dpop
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-tokenmanager/tokenmanager"
	"github.com/go-tokenmanager/tokenmanager/providers"
	"github.com/go-tokenmanager/tokenmanager/transport"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "dpop:", err)
		os.Exit(1)
	}
}

func run(w io.Writer) error {
	as := newServer("as-nonce")
	defer as.Close()
	api := newServer("api-nonce")
	api.bound = as.bound // the API knows which key each token is bound to
	defer api.Close()

	key, err := tokenmanager.NewDPoP(nil) // a P-256 key in memory; any crypto.Signer will do
	if err != nil {
		return err
	}
	rt, err := transport.New(tokenmanager.Settings{
		DPoP: key,
		GetCredentials: providers.ClientCredentialsGrant(providers.GrantConfig{
			TokenURL: as.URL + "/token",
			Auth:     providers.ClientSecret("example-client", "example-secret", providers.AuthStyleInHeader),
		}),
	})
	if err != nil {
		return err
	}
	defer rt.Close()
	fmt.Fprintf(w, "client key: %v\n", key)
	for range 2 {
		resp, err := rt.Client().Get(api.URL + "/orders?page=1")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Fprintf(w, "GET /orders: %d %s (API nonce requests so far: %d)\n", resp.StatusCode, body, api.challenges.Load())
	}
	fmt.Fprintf(w, "token endpoint nonce requests: %d; tokens issued: %d\n", as.challenges.Load(), len(as.tokens()))

	// A stolen token: the same token without a proof of its key.
	tok, err := rt.Token(context.Background())
	if err != nil {
		return err
	}
	req, _ := http.NewRequest(http.MethodGet, api.URL+"/orders", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	fmt.Fprintf(w, "the token without its key: %d\n", resp.StatusCode)
	return nil
}

// server is the authorization server (path /token) or the API: both
// check DPoP proofs and require their own nonce.
type server struct {
	*httptest.Server
	nonce      string
	challenges atomic.Int64
	bound      *sync.Map // token -> thumbprint of the key it is bound to
	seen       sync.Map  // jti of accepted proofs: a replay is refused
	issued     atomic.Int64
}

func newServer(nonce string) *server {
	s := &server{nonce: nonce, bound: new(sync.Map)}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

func (s *server) tokens() []string {
	var out []string
	s.bound.Range(func(k, _ any) bool { out = append(out, k.(string)); return true })
	return out
}

func (s *server) serve(w http.ResponseWriter, r *http.Request) {
	htu := "http://" + r.Host + r.URL.Path
	if r.URL.Path == "/token" { // the authorization server
		p, err := s.check(r.Header.Get("DPoP"), r.Method, htu, "")
		if err != nil {
			s.deny(w, http.StatusBadRequest, err, `{"error":"%s"}`)
			return
		}
		tok := fmt.Sprintf("token-%d", s.issued.Add(1))
		s.bound.Store(tok, p.jkt)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"DPoP","expires_in":3600}`, tok)
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "DPoP ")
	jkt, known := s.bound.Load(tok)
	if !ok || !known {
		s.deny(w, http.StatusUnauthorized, errors.New("invalid_token"), "")
		return
	}
	p, err := s.check(r.Header.Get("DPoP"), r.Method, htu, tok)
	if err == nil && p.jkt != jkt {
		err = errors.New("invalid_token")
	}
	if err != nil {
		s.deny(w, http.StatusUnauthorized, err, "")
		return
	}
	io.WriteString(w, "ok")
}

// deny answers an error; a missing nonce comes with the nonce.
func (s *server) deny(w http.ResponseWriter, status int, err error, body string) {
	if err.Error() == "use_dpop_nonce" {
		s.challenges.Add(1)
		w.Header().Set("DPoP-Nonce", s.nonce)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`DPoP error=%q`, err.Error()))
	}
	w.WriteHeader(status)
	if body != "" {
		fmt.Fprintf(w, body, err.Error())
	}
}

type proof struct{ jkt string }

// check verifies an ES256 proof as RFC 9449 §4.3 says (a server would
// also bound iat): its signature by the key in its header, htm, htu, ath
// for token, a jti not seen before, and this server's nonce.
func (s *server) check(jwt, method, htu, token string) (proof, error) {
	bad := errors.New("invalid_dpop_proof")
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return proof{}, bad
	}
	var h struct {
		Typ, Alg string
		JWK      struct{ Kty, Crv, X, Y string }
	}
	var c struct{ JTI, HTM, HTU, ATH, Nonce string }
	if decode(parts[0], &h) != nil || decode(parts[1], &c) != nil || h.Typ != "dpop+jwt" || h.Alg != "ES256" || h.JWK.Crv != "P-256" {
		return proof{}, bad
	}
	sig := b64(parts[2])
	key, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, b64(h.JWK.X)...), b64(h.JWK.Y)...))
	if err != nil {
		return proof{}, bad
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if len(sig) != 64 || !ecdsa.Verify(key, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return proof{}, bad
	}
	ath := ""
	if token != "" {
		a := sha256.Sum256([]byte(token))
		ath = base64.RawURLEncoding.EncodeToString(a[:])
	}
	if c.HTM != method || c.HTU != htu || c.ATH != ath || c.JTI == "" {
		return proof{}, bad
	}
	if c.Nonce != s.nonce {
		return proof{}, errors.New("use_dpop_nonce")
	}
	if _, replay := s.seen.LoadOrStore(c.JTI, true); replay {
		return proof{}, bad
	}
	t := sha256.Sum256([]byte(fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":%q,"y":%q}`, h.JWK.X, h.JWK.Y)))
	return proof{jkt: base64.RawURLEncoding.EncodeToString(t[:])}, nil
}

func b64(s string) []byte {
	b, _ := base64.RawURLEncoding.DecodeString(s)
	return b
}

func decode(part string, v any) error { return json.Unmarshal(b64(part), v) }
