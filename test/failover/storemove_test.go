package failover

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/testbed"
)

// TestStoreMoveToExternalAndBack moves a running cluster from its embedded
// store to an external three-member etcd cluster and back, as
// docs/operations.md ("Moving the store") tells an operator to: put the
// cluster on hold, back up the store, restore the backup into the new
// store's members, restart the agents on it, end the hold. No guest
// restarts, nothing is fenced, and the manager acts on the new store (a
// live migration). The external etcd runs inside the bed's hosts with the
// hosts' own Haven certificates; QEMU driver only (the store does not
// depend on the driver).
func TestStoreMoveToExternalAndBack(t *testing.T) {
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd is not installed (scripts/deps.sh installs etcd-server): %v", err)
	}
	c := newCluster(t, options{})
	home := map[string]string{}
	var guests []string
	for i, n := range c.names() {
		g := fmt.Sprintf("g%d", i+1)
		c.guest(g, "", n)
		home[g], guests = n, append(guests, g)
	}
	start := time.Now()
	c.waitRunning(120*time.Second, func(g, n string) bool { return n == home[g] }, guests...)
	for _, g := range guests {
		c.waitStamp(g, start, 60*time.Second)
	}
	boots := map[string]int{}
	for _, g := range guests {
		boots[g] = len(c.segments(g))
	}
	t0 := time.Now()
	dir := t.TempDir()

	// Forward: embedded -> external.
	c.hold(true)
	backup := c.backupStore(filepath.Join(dir, "to-external.snap"))
	var initial []string
	for i, n := range c.nodes {
		initial = append(initial, fmt.Sprintf("e%d=https://%s:2380", i+1, n.h.Addr))
	}
	var eps []string
	for i, n := range c.nodes {
		name := fmt.Sprintf("e%d", i+1)
		data := filepath.Join(n.h.Dir, "etcd")
		c.haven("store", "restore", backup, "--to", data, "--name", name,
			"--peer-url", fmt.Sprintf("https://%s:2380", n.h.Addr), "--initial-cluster", strings.Join(initial, ","))
		ca, cert, key := n.tlsFiles()
		cu := fmt.Sprintf("https://%s:2379", n.h.Addr)
		eps = append(eps, cu)
		log, err := os.Create(filepath.Join(n.h.Dir, "etcd.log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			log.Close()
			if t.Failed() {
				b, _ := os.ReadFile(log.Name())
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				t.Logf("---- %s (last lines) ----\n%s", log.Name(), strings.Join(lines[max(0, len(lines)-40):], "\n"))
			}
		})
		p, err := n.h.Start(c.ctx, testbed.Spec{Path: etcdBin, Role: "etcd", Stdout: log, Stderr: log, Args: []string{
			"--name", name, "--data-dir", data,
			"--listen-client-urls", cu, "--advertise-client-urls", cu,
			"--listen-peer-urls", fmt.Sprintf("https://%s:2380", n.h.Addr), "--initial-advertise-peer-urls", fmt.Sprintf("https://%s:2380", n.h.Addr),
			"--initial-cluster", strings.Join(initial, ","),
			"--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth",
			"--peer-cert-file", cert, "--peer-key-file", key, "--peer-trusted-ca-file", ca, "--peer-client-cert-auth",
			"--heartbeat-interval", "100", "--election-timeout", "1000"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			p.Signal(syscall.SIGTERM)
			select {
			case <-p.Done():
			case <-time.After(10 * time.Second):
				p.Signal(syscall.SIGKILL)
			}
		})
	}
	// One host after the other, while the others still run on the
	// embedded store.
	for _, n := range c.nodes {
		ca, cert, key := n.tlsFiles()
		c.stopAgent(n, syscall.SIGTERM)
		if err := c.startAgent(n, []string{"--store-endpoints", strings.Join(eps, ","), "--store-ca", ca, "--store-cert", cert, "--store-key", key}); err != nil {
			t.Fatal(err)
		}
		c.waitReady(n, 60*time.Second)
	}
	c.hold(false)
	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	if !st.Store.External {
		t.Fatalf("after the move the store is %+v, want external", st.Store)
	}
	c.checkUntouched(t0, home, boots)
	c.migrateLive("g1", c.names()[1])
	home["g1"] = c.names()[1]

	// And back: external -> embedded. An embedded store starts only with
	// a majority of its members: the agents restart together.
	c.hold(true)
	backup = c.backupStore(filepath.Join(dir, "to-embedded.snap"))
	var embedded []string
	for _, n := range c.nodes {
		embedded = append(embedded, fmt.Sprintf("%s=https://%s:%s", n.name, n.h.Addr, peerPort))
	}
	for _, n := range c.nodes {
		c.stopAgent(n, syscall.SIGTERM)
	}
	for _, n := range c.nodes {
		c.haven("store", "restore", backup, "--to", filepath.Join(n.dir, "store"), "--name", n.name,
			"--peer-url", fmt.Sprintf("https://%s:%s", n.h.Addr, peerPort), "--initial-cluster", strings.Join(embedded, ","))
	}
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		if err := c.startAgent(n, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.waitReady(n, 90*time.Second)
		}()
	}
	wg.Wait()
	c.hold(false)
	if st, err := c.status(); err != nil || st.Store.External {
		t.Fatalf("after the way back: store %+v (%v), want embedded", st.Store, err)
	}
	c.checkUntouched(t0, home, boots)
	c.migrateLive("g1", c.names()[0])
}

// tlsFiles are n's Haven certificate files (the cluster CA, its host
// certificate and key).
func (n *node) tlsFiles() (ca, cert, key string) {
	pki := filepath.Join(n.dir, "pki")
	return filepath.Join(pki, "ca.crt"), filepath.Join(pki, "node.crt"), filepath.Join(pki, "node.key")
}

// hold puts the cluster on hold or ends it, and waits until every running
// agent's host side has read it (it then logs the policy).
func (c *testCluster) hold(on bool) {
	c.t.Helper()
	c.api(func(ctx context.Context, cl *client.Client) error {
		_, err := cl.SetPolicy(ctx, map[string]any{"hold": on})
		return err
	})
	if !on {
		return
	}
	for _, n := range c.nodes {
		c.poll(n.name+" knows the cluster is on hold", 20*time.Second, func() bool {
			return strings.Contains(c.logOf(n), "hold=true")
		})
	}
}

// backupStore takes a store backup through the API into path.
func (c *testCluster) backupStore(path string) string {
	c.t.Helper()
	c.api(func(ctx context.Context, cl *client.Client) error {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = cl.StoreSnapshot(ctx, f)
		return err
	})
	c.haven("store", "verify", path)
	return path
}

// checkUntouched: every guest runs where home says, never restarted since
// the test began (same boots), never twice, and no host was fenced since
// t0.
func (c *testCluster) checkUntouched(t0 time.Time, home map[string]string, boots map[string]int) {
	c.t.Helper()
	var guests []string
	for g := range home {
		guests = append(guests, g)
	}
	c.waitRunning(60*time.Second, func(g, n string) bool { return n == home[g] }, guests...)
	t1 := time.Now()
	for _, g := range guests {
		c.waitStamp(g, t1, 30*time.Second)
		if got := len(c.segments(g)); got != boots[g] {
			c.t.Errorf("%s restarted: %d boots, want %d", g, got, boots[g])
		}
	}
	for _, n := range c.names() {
		if got := c.fencedCount(n, t0); got != 0 {
			c.t.Errorf("%s fenced %d times", n, got)
		}
	}
	c.noDoubleRun()
}

// migrateLive live-migrates guest to node through the manager and waits
// until it runs there, still the same boot.
func (c *testCluster) migrateLive(guest, node string) {
	c.t.Helper()
	before := len(c.segments(guest))
	// One request, given time: a retried migrate finds the first one in
	// flight (409).
	n := c.nodes[0]
	cl := client.New(n.apiURL(), c.admin, c.tls)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(c.ctx, 60*time.Second)
	defer cancel()
	if _, err := cl.GuestCommand(ctx, guest, "migrate", node); err != nil {
		c.t.Fatalf("migrate %s to %s: %v", guest, node, err)
	}
	c.waitRunning(60*time.Second, func(g, n string) bool { return n == node }, guest)
	c.waitStamp(guest, time.Now(), 30*time.Second)
	if got := len(c.segments(guest)); got != before {
		c.t.Errorf("%s restarted by its live migration: %d boots, want %d", guest, got, before)
	}
}
