package tokengrain_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-tokenmanager/tokenmanager/tokengrain/internal/clusterdemo"
)

// startEtcd starts an etcd server (Debian's etcd-server package) on
// 127.0.0.1 with a data directory of the test's, stopped when the test
// ends, and returns its client endpoint. Without etcd it skips the test,
// except under CI=true, where it fails it: CI installs etcd (.ci/run).
func startEtcd(t *testing.T) string {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("etcd is not installed (apt-get install -y etcd-server); CI must run this test")
		}
		t.Skip("etcd is not installed (apt-get install -y etcd-server): skipped outside CI")
	}
	ports, err := clusterdemo.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	cmd := exec.Command(bin,
		"--name", "test",
		"--data-dir", t.TempDir(),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "test="+peer,
		"--log-level", "error",
	)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	// Wait for it to serve: its health endpoint says so.
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(client + "/health")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), `"health":"true"`) {
				return client
			}
		}
		select {
		case <-exited:
			t.Fatalf("etcd exited: %s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd not healthy after 20s: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The rollover scenario of TestCluster with protoactor's etcd provider
// on a real etcd: one fetch per rollover, one per revocation, no failed
// request when the member hosting the grain is killed.
func TestCluster_etcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and member processes: skipped with -short")
	}
	endpoint := startEtcd(t)
	r := rollovers(t, clusterdemo.Config{Etcd: []string{endpoint}, EtcdKey: "/tokenmanager-test-etcd"})
	t.Logf("etcd: steady fetches=%d; after the kill: fetches=%d (rollovers ~%d)", r.steadyFetches, r.afterKill, r.killRollovers)
}
