package tokengrain_test

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager/tokengrain/internal/clusterdemo"
)

// wiretap is a loopback TCP proxy in front of a member's remote: the
// member advertises the proxy's address, so everything other processes
// send it crosses the proxy, which records it.
type wiretap struct {
	l  net.Listener
	wg sync.WaitGroup

	mu    sync.Mutex
	seen  bytes.Buffer
	conns []net.Conn
}

func newWiretap(t *testing.T, target string) *wiretap {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wiretap{l: l}
	w.wg.Go(func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			w.mu.Lock()
			w.conns = append(w.conns, in, out)
			w.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				io.Copy(io.MultiWriter(dst, w), src)
				dst.Close()
				src.Close()
			}
			w.wg.Go(func() { pipe(out, in) })
			w.wg.Go(func() { pipe(in, out) })
		}
	})
	t.Cleanup(w.close)
	return w
}

func (w *wiretap) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen.Write(p)
}

func (w *wiretap) addr() string { return w.l.Addr().String() }

func (w *wiretap) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.seen.Bytes())
}

func (w *wiretap) close() {
	w.l.Close()
	w.mu.Lock()
	for _, c := range w.conns {
		c.Close()
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// A cluster on mutual TLS serves its members, refuses strangers (a
// cluster client without a certificate, or with one from another CA),
// and puts no token on the wire; the same cluster on plaintext, the
// control, hands a stranger tokens and shows them to the wiretap.
func TestCluster_mutualTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts member processes: skipped with -short")
	}
	for _, secure := range []bool{false, true} {
		name := "plaintext"
		if secure {
			name = "mutual TLS"
		}
		t.Run(name, func(t *testing.T) {
			a := newAuthority(t, 2*time.Second)
			var dir, otherCA string
			if secure {
				dir, otherCA = t.TempDir(), t.TempDir()
				if err := clusterdemo.WriteCredentials(dir); err != nil {
					t.Fatal(err)
				}
				if err := clusterdemo.WriteCredentials(otherCA); err != nil {
					t.Fatal(err)
				}
			}
			ports, err := clusterdemo.FreePorts(2)
			if err != nil {
				t.Fatal(err)
			}
			var taps []*wiretap
			var advertise []string
			for _, p := range ports {
				w := newWiretap(t, "127.0.0.1:"+strconv.Itoa(p))
				taps = append(taps, w)
				advertise = append(advertise, w.addr())
			}
			start := time.Now().Add(5 * time.Second)
			const run = 3 * time.Second
			members, err := clusterdemo.Start(a, clusterdemo.Config{
				Members: 2, Mode: clusterdemo.Cluster, StartAt: start, Run: run, Workers: 4,
				TLSDir: dir, Ports: ports, Advertise: advertise, Args: []string{"-test.run=^$"},
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range members {
				t.Cleanup(m.Stop)
			}
			strangerCreds := []string{""} // no certificate at all
			if secure {
				strangerCreds = append(strangerCreds, otherCA)
			}
			var strangers []*clusterdemo.Member
			for _, creds := range strangerCreds {
				s, err := clusterdemo.Start(a, clusterdemo.Config{
					Members: 1, Mode: clusterdemo.Stranger, StartAt: start, Run: run,
					TLSDir: creds, Hosts: members[0].Hosts(), Args: []string{"-test.run=^$"},
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(s[0].Stop)
				strangers = append(strangers, s[0])
			}
			for i, st := range wait(t, members, run+30*time.Second) {
				if st == nil {
					t.Fatalf("member %d printed no stats: %q", i, members[i].Lines())
				}
				t.Logf("member %d: requests=%d failed=%d fallbacks=%d readiness=%q", i, st.Requests, st.Failed, st.Fallbacks, members[i].Readiness())
				if members[i].Readiness() != "ok" {
					t.Errorf("member %d: readiness %q; want ok", i, members[i].Readiness())
				}
				if st.Failed != 0 || st.Requests == 0 {
					t.Errorf("member %d: %d of %d requests failed (%s); want members with credentials served", i, st.Failed, st.Requests, st.FirstErr)
				}
				if secure && st.Fallbacks != 0 {
					t.Errorf("member %d fetched on its own %d times; want every token from the grain", i, st.Fallbacks)
				}
			}
			for i, st := range wait(t, strangers, 30*time.Second) {
				if st == nil {
					t.Fatalf("stranger %d printed no stats: %q", i, strangers[i].Lines())
				}
				t.Logf("stranger %d (credentials %q): asks=%d failed=%d tokens=%d, first error: %s", i, strangerCreds[i], st.Requests, st.Failed, st.Tokens, st.FirstErr)
				if secure && (st.Tokens != 0 || st.Requests == 0) {
					t.Errorf("stranger %d got %d tokens in %d asks; want none", i, st.Tokens, st.Requests)
				}
				if !secure && st.Tokens == 0 {
					t.Errorf("plaintext: the stranger got no token (%s); the control should show the hole", st.FirstErr)
				}
			}
			var wire []byte
			for _, w := range taps {
				wire = append(wire, w.bytes()...)
			}
			var onWire []string
			for _, tok := range a.Tokens() {
				if bytes.Contains(wire, []byte(tok)) {
					onWire = append(onWire, tok)
				}
			}
			t.Logf("wiretap: %d bytes, %d of %d tokens seen in clear", len(wire), len(onWire), len(a.Tokens()))
			if len(wire) == 0 {
				t.Fatal("nothing crossed the wiretap")
			}
			if secure && len(onWire) != 0 {
				t.Errorf("tokens in clear on the wire: %v", onWire)
			}
			if !secure && len(onWire) == 0 {
				t.Error("plaintext: no token seen on the wire; the control should show them")
			}
		})
	}
}
