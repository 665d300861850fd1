package tokengrain

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager/tokengrain/internal/testcerts"
)

// handshake runs a TLS handshake between a client and a server
// configuration over loopback TCP, then one byte from the client: it
// returns the client's error, or the server's.
func handshake(t *testing.T, client, server *tls.Config) error {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		s := tls.Server(conn, server)
		if err = s.Handshake(); err == nil {
			_, err = s.Read(make([]byte, 1))
		}
		done <- err
	}()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	c := tls.Client(conn, client)
	if err = c.Handshake(); err == nil {
		_, err = c.Write([]byte{1})
	}
	if err != nil {
		conn.Close()
		<-done
		return err
	}
	serr := <-done
	conn.Close()
	return serr
}

func credsIn(t *testing.T) (string, TLSFiles) {
	dir := t.TempDir()
	if err := testcerts.Write(dir); err != nil {
		t.Fatal(err)
	}
	return dir, TLSFiles{
		CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"),
		CAFile: filepath.Join(dir, "ca.crt"), ServerName: testcerts.ServerName,
	}
}

func configOf(t *testing.T, f TLSFiles) *tls.Config {
	t.Helper()
	cfg, err := f.Config()
	if err != nil {
		t.Fatal(err)
	}
	c, err := mutualTLSConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTLSFiles_membersOfOneCAOnly(t *testing.T) {
	_, files := credsIn(t)
	_, stranger := credsIn(t) // another CA
	member, other := configOf(t, files), configOf(t, stranger)
	if err := handshake(t, member, configOf(t, files)); err != nil {
		t.Fatalf("two members: %v", err)
	}
	if err := handshake(t, other, member); err == nil {
		t.Error("a client with another CA's certificate was accepted")
	}
	if err := handshake(t, member, other); err == nil {
		t.Error("a server with another CA's certificate was accepted")
	}
	noCert := &tls.Config{ServerName: testcerts.ServerName, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	if err := handshake(t, noCert, member); err == nil {
		t.Error("a client without a certificate was accepted")
	}
	files2 := files
	files2.ServerName = "other.example"
	if err := handshake(t, configOf(t, files2), member); err == nil {
		t.Error("a server certificate without the expected name was accepted")
	}
}

// A renewed certificate and CA, written over the files, are used from
// the next handshake on: a member still holding the old ones is refused.
func TestTLSFiles_rotation(t *testing.T) {
	dir, files := credsIn(t)
	now := time.Now()
	cfg, err := files.configWith(&reloader{files: files, now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	oldPeer := configOf(t, files) // a member that read the old files
	rotating, err := mutualTLSConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, oldPeer, rotating); err != nil {
		t.Fatalf("before the rotation: %v", err)
	}
	// cert-manager writes the renewed secret (here, with a new CA too).
	newDir := t.TempDir()
	if err := testcerts.Write(newDir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ca.crt", "tls.crt", "tls.key"} {
		b, err := os.ReadFile(filepath.Join(newDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(2 * time.Second) // past the reloader's once-a-second check
	if err := handshake(t, oldPeer, rotating); err == nil {
		t.Error("after the rotation, a member with the old CA's certificate was still accepted")
	}
	if err := handshake(t, configOf(t, files), rotating); err != nil {
		t.Errorf("after the rotation, a member with the new files was refused: %v", err)
	}
}
