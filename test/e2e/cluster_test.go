// Package e2e runs real haven agent processes on 127.0.0.x addresses with
// real etcd (embedded, or Debian's etcd-server for the external store) and
// checks the cluster through the CLI, as an operator would.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

// failoverSlack is what a dead host may take beyond its lease TTL to show
// offline: a store leader election (about 1 s) plus etcd's lease extension
// on leader change, plus polling.
const failoverSlack = 6 * time.Second

// managerFailover kills the manager of a running cluster, waits for another
// manager and the old host offline, restarts it and waits for it online.
func managerFailover(t *testing.T, c *testCluster, ttl time.Duration, names []string) {
	first := c.nodes[0]
	st := c.waitStatus(first, "a manager", 20*time.Second, func(st *api.Status) bool { return st.Manager != "" })
	old := c.byName(st.Manager)
	var via *agentProc
	for _, n := range c.nodes {
		if n != old {
			via = n
			break
		}
	}
	killed := time.Now()
	c.kill9(old)
	st = c.waitStatus(via, "new manager and old host offline", ttl+failoverSlack, func(st *api.Status) bool {
		return st.Manager != "" && st.Manager != old.name && hostState(st, old.name) == api.HostOffline
	})
	t.Logf("manager %s killed; %s took over and %s marked offline after %v", old.name, st.Manager, old.name, time.Since(killed).Round(100*time.Millisecond))
	if !st.Quorum.OK {
		t.Errorf("quorum lost after one host died: %+v", st.Quorum)
	}
	c.restart(old)
	st = c.waitStatus(via, "restarted host online", 30*time.Second, allOnline(names...))
	if st.Manager == old.name {
		t.Errorf("restarted host %s took the office back from %s", old.name, st.Manager)
	}
}

func TestThreeHostsElectAndFailOver(t *testing.T) {
	c := newCluster(t, 10)
	c.initNode("h1")
	c.joinNode("h2")
	c.joinNode("h3")
	st := c.waitStatus(c.nodes[0], "three hosts online", 20*time.Second, allOnline("h1", "h2", "h3"))
	if st.Cluster != "haven" || st.Manager == "" {
		t.Fatalf("status: cluster %q manager %q", st.Cluster, st.Manager)
	}
	if st.Quorum.Voters != 3 || !st.Quorum.OK {
		t.Fatalf("quorum %+v, want 3 voters ok", st.Quorum)
	}
	for _, h := range st.Hosts {
		if !h.StoreMember || h.StoreRole != "voter" {
			t.Errorf("host %s: store member %v role %q, want voter", h.Name, h.StoreMember, h.StoreRole)
		}
		if h.Facts == nil || h.Facts.CPUs == 0 || h.Facts.Memory == 0 || h.Facts.BootID == "" {
			t.Errorf("host %s: facts %+v", h.Name, h.Facts)
		}
	}
	// The table output names the manager too.
	out, err := c.haven(c.nodes[1], "status")
	if err != nil || !strings.Contains(out, "Manager: "+st.Manager) {
		t.Fatalf("status table: %v\n%s", err, out)
	}
	managerFailover(t, c, store.DefaultLeaseTTL, []string{"h1", "h2", "h3"})
}

func TestFourthHostIsStoreClient(t *testing.T) {
	c := newCluster(t, 20, "--lease-ttl", "3s", "--keepalive", "500ms")
	c.initNode("h1")
	c.joinNode("h2")
	c.joinNode("h3")
	c.joinNode("h4")
	names := []string{"h1", "h2", "h3", "h4"}
	st := c.waitStatus(c.nodes[3], "four hosts online", 20*time.Second, allOnline(names...))
	if st.Quorum.Voters != 3 || len(st.Store.Members) != 3 {
		t.Fatalf("store: %d voters, %d members; want 3", st.Quorum.Voters, len(st.Store.Members))
	}
	if h := host(st, "h4"); h.StoreMember {
		t.Fatalf("h4 is a store member (%q); the 4th host must be a store client", h.StoreRole)
	}
	out, err := c.haven(c.nodes[0], "node", "list", "-o", "json")
	if err != nil || strings.Count(out, `"online": true`) != 4 {
		t.Fatalf("node list: %v\n%s", err, out)
	}
	managerFailover(t, c, 3*time.Second, names)
	// A store client host dies too: it goes offline, quorum stays.
	h4 := c.byName("h4")
	c.kill9(h4)
	c.waitStatus(c.nodes[0], "h4 offline", 3*time.Second+failoverSlack, func(st *api.Status) bool {
		return hostState(st, "h4") == api.HostOffline && st.Quorum.OK
	})
	c.restart(h4)
	c.waitStatus(c.nodes[0], "h4 back", 30*time.Second, allOnline(names...))
}

func TestFiveStoreMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("five hosts")
	}
	c := newCluster(t, 30, "--lease-ttl", "3s", "--keepalive", "500ms")
	c.initNode("h1", "--store-members", "5")
	// h7 joins through h6, a store client: joins work through any agent.
	for i := 2; i <= 7; i++ {
		c.joinNode(fmt.Sprintf("h%d", i))
	}
	st := c.waitStatus(c.nodes[0], "seven hosts online", 30*time.Second, allOnline("h1", "h2", "h3", "h4", "h5", "h6", "h7"))
	if st.Quorum.Voters != 5 || st.Quorum.Needed != 3 {
		t.Fatalf("quorum %+v; want 5 voters, 3 needed", st.Quorum)
	}
	if host(st, "h6").StoreMember || host(st, "h7").StoreMember {
		t.Fatalf("h6 or h7 is a store member; want clients")
	}
}

// TestExternalEtcd runs agents on Debian's etcd-server, over plain HTTP
// and over mutual TLS with --store-ca/--store-cert/--store-key.
func TestExternalEtcd(t *testing.T) {
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		etcdBin = "/usr/bin/etcd"
	}
	if _, err := os.Stat(etcdBin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("etcd not installed (apt-get install etcd-server): %v", err)
		}
		t.Skipf("etcd not installed (apt-get install etcd-server): %v", err)
	}
	for i, withTLS := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "mutual TLS"}[withTLS]
		t.Run(name, func(t *testing.T) { externalEtcd(t, etcdBin, 40+20*i, withTLS) })
	}
}

func externalEtcd(t *testing.T, etcdBin string, ipBase int, withTLS bool) {
	dir := t.TempDir()
	clientAddr, peerAddr := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
	scheme := "http"
	var tlsArgs, agentTLS []string
	if withTLS {
		scheme = "https"
		now := time.Now()
		ca, err := pki.NewCA("external-etcd", now)
		if err != nil {
			t.Fatal(err)
		}
		srvCert, srvKey, _ := ca.IssueNode("etcd", []string{"127.0.0.1"}, now)
		cliCert, cliKey, _ := ca.IssueNode("haven", nil, now)
		files := map[string][]byte{"ca.pem": ca.CertPEM, "server.pem": srvCert, "server-key.pem": srvKey, "client.pem": cliCert, "client-key.pem": cliKey}
		for f, b := range files {
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		tlsArgs = []string{"--cert-file", filepath.Join(dir, "server.pem"), "--key-file", filepath.Join(dir, "server-key.pem"),
			"--client-cert-auth", "--trusted-ca-file", filepath.Join(dir, "ca.pem")}
		agentTLS = []string{"--store-ca", filepath.Join(dir, "ca.pem"), "--store-cert", filepath.Join(dir, "client.pem"), "--store-key", filepath.Join(dir, "client-key.pem")}
	}
	ep := scheme + "://" + clientAddr
	etcd := exec.Command(etcdBin, append([]string{"--name", "ext", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", ep, "--advertise-client-urls", ep,
		"--listen-peer-urls", "http://" + peerAddr, "--initial-advertise-peer-urls", "http://" + peerAddr,
		"--initial-cluster", "ext=http://" + peerAddr, "--heartbeat-interval", "100", "--election-timeout", "1000"}, tlsArgs...)...)
	var elog syncBuffer
	etcd.Stdout, etcd.Stderr = &elog, &elog
	if err := etcd.Start(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(func() {
		etcd.Process.Kill()
		etcd.Wait()
	})

	c := newCluster(t, ipBase, append([]string{"--lease-ttl", "3s", "--keepalive", "500ms"}, agentTLS...)...)
	c.storeEP = ep
	c.waitFor("etcd serving", 20*time.Second, func() bool { return strings.Contains(elog.String(), "ready to serve client requests") })
	c.initNode("x1")
	c.joinNode("x2")
	st := c.waitStatus(c.nodes[1], "two hosts online", 20*time.Second, allOnline("x1", "x2"))
	if !st.Store.External || st.Quorum.Voters != 1 || !st.Quorum.OK {
		t.Fatalf("store %+v quorum %+v; want external, 1 voter, ok", st.Store, st.Quorum)
	}
	if host(st, "x1").StoreMember || host(st, "x2").StoreMember {
		t.Fatalf("hosts on an external store must not be store members")
	}
	managerFailover(t, c, 3*time.Second, []string{"x1", "x2"})

	// A second --init on the same store is refused, with nothing left behind.
	n := c.addNode("x3")
	n.args = []string{"--init"}
	err := c.start(n)
	if err == nil || !strings.Contains(err.Error(), "already holds cluster") {
		t.Fatalf("second init on the same store: %v", err)
	}
	if _, err := os.Stat(n.dir); !os.IsNotExist(err) {
		t.Fatalf("failed init left %s behind (%v)", n.dir, err)
	}
	if withTLS {
		// Without the client certificate the store refuses the agent.
		c.flags = []string{"--lease-ttl", "3s", "--keepalive", "500ms"}
		n := c.addNode("x4")
		n.args = []string{"--join", c.api, "--token", c.join}
		if err := c.start(n); err == nil {
			t.Fatal("joined an mTLS store without its certificates")
		}
		if _, err := os.Stat(n.dir); !os.IsNotExist(err) {
			t.Fatalf("failed join left %s behind (%v)", n.dir, err)
		}
	}
	if st, err := c.status(c.nodes[0]); err != nil || len(st.Hosts) != 2 {
		t.Fatalf("failed init/join left hosts in the store: %v %+v", err, st)
	}
}

// TestQuorumLoss: with two of three store members dead, the survivor still
// answers `haven status`, saying the quorum is lost; when one comes back,
// the quorum returns and the still-dead host is offline.
func TestQuorumLoss(t *testing.T) {
	c := newCluster(t, 120, "--lease-ttl", "3s", "--keepalive", "500ms")
	q1 := c.initNode("q1")
	q2 := c.joinNode("q2")
	q3 := c.joinNode("q3")
	c.waitStatus(q1, "three online", 20*time.Second, allOnline("q1", "q2", "q3"))
	c.kill9(q2)
	c.kill9(q3)
	st := c.waitStatus(q1, "quorum lost", 20*time.Second, func(st *api.Status) bool { return !st.Quorum.OK })
	if !st.Stale || hostState(st, "q1") != api.HostOnline || hostState(st, "q2") != api.HostUnknown {
		t.Fatalf("status without quorum: stale %v, q1 %s, q2 %s", st.Stale, hostState(st, "q1"), hostState(st, "q2"))
	}
	out, err := c.haven(q1, "status")
	if err != nil || !strings.Contains(out, "LOST") || !strings.Contains(out, "no quorum") {
		t.Fatalf("status table without quorum: %v\n%s", err, out)
	}
	c.restart(q2)
	c.waitStatus(q1, "quorum back, q3 offline", 30*time.Second, func(st *api.Status) bool {
		return st.Quorum.OK && !st.Stale && st.Manager != "" && hostState(st, "q3") == api.HostOffline && hostState(st, "q2") == api.HostOnline
	})
}

// TestPausedManagerIsDeposed: a manager frozen (SIGSTOP) past its lease
// loses the office; when it resumes it notices and does not claim it back.
// Its host was the store leader too, and a store leader that resumes
// revokes the leases it saw no renewal of (etcd): the other hosts' leases
// and election keys, often. So the office may move again then, but no
// manager takes the two hosts that stayed up for failed: they beat
// throughout, and register again at once.
func TestPausedManagerIsDeposed(t *testing.T) {
	c := newCluster(t, 140, "--lease-ttl", "3s", "--keepalive", "500ms")
	c.initNode("p1")
	c.joinNode("p2")
	c.joinNode("p3")
	st := c.waitStatus(c.nodes[0], "three online with a manager", 20*time.Second, func(st *api.Status) bool {
		return allOnline("p1", "p2", "p3")(st) && st.Manager != ""
	})
	old := c.byName(st.Manager)
	var via *agentProc
	for _, n := range c.nodes {
		if n != old {
			via = n
		}
	}
	if err := old.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	st = c.waitStatus(via, "new manager while the old one is frozen", 3*time.Second+failoverSlack, func(st *api.Status) bool {
		return st.Manager != "" && st.Manager != old.name
	})
	newMgr := st.Manager
	t.Logf("manager %s frozen; %s took over after %v", old.name, newMgr, time.Since(stopped).Round(100*time.Millisecond))
	if err := old.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	c.waitFor("the old manager sees it lost the office", 10*time.Second, func() bool {
		return strings.Contains(old.errb.String(), "lost the manager office")
	})
	st = c.waitStatus(via, "all online again with a manager", 20*time.Second, func(st *api.Status) bool {
		return allOnline("p1", "p2", "p3")(st) && st.Manager != ""
	})
	if st.Manager != newMgr {
		t.Logf("manager %s after the old one resumed (%s before): the resumed store leader revoked its lease", st.Manager, newMgr)
	}
	for _, n := range c.nodes {
		for _, up := range c.nodes {
			if up == old {
				continue
			}
			for _, failed := range []string{"node " + up.name + " is offline", "node " + up.name + " failed"} {
				if strings.Contains(n.errb.String(), failed) {
					t.Errorf("%s's log says %q: a host that stayed up was taken for failed", n.name, failed)
				}
			}
		}
	}
}
