package failover

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/testbed"
)

var stressFor = flag.Duration("failover.stress", 0, "TestNoFalseAlarmSaturated: saturate every CPU (spinning processes on every bed host and the root) for this long, 10m for the full check; 0 skips it")

// TestNoFalseAlarm plays the events that must never fail a host: a 1 s
// total network outage, a store leader change, an agent kill -9 followed by
// a restart within 5 s and an agent upgrade (SIGTERM, then the new binary);
// TestNoFalseAlarmSaturated has saturated CPUs. After each, no host was
// declared dead or failed, none was fenced and every guest runs where it
// ran, in the same boot. It runs with the first driver of
// -failover.hypervisors only (the faults are the agents', not the
// driver's).
func TestNoFalseAlarm(t *testing.T) {
	c, check := falseAlarmBed(t)
	// A 1 s outage of the whole cluster network: every host's port goes
	// down in one command and comes back in one.
	t0 := time.Now()
	var names []string
	for _, n := range c.nodes {
		names = append(names, n.name)
	}
	took, err := c.bed.NetworkOutage(c.ctx, time.Second, names...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("network outage: %v at most", took.Round(time.Millisecond))
	check(fmt.Sprintf("1 s network outage (%v at most, measured)", took.Round(time.Millisecond)), t0)

	// The store leader hands over to another member.
	t0 = time.Now()
	from, to := c.moveStoreLeader()
	t.Logf("store leader moved from %s to %s", from, to)
	check("store leader change", t0)

	// The manager's agent is killed and back within 5 s; then another's.
	for _, name := range []string{c.manager(), "h2"} {
		t0 = time.Now()
		n := c.node(name)
		stopped := c.stopAgent(n, syscall.SIGKILL)
		// Down for 4 s: well past the heartbeat threshold, with the host
		// answering its probes (the kernel refuses the API port).
		<-time.After(4 * time.Second)
		if err := c.startAgent(n, nil); err != nil {
			t.Fatal(err)
		}
		c.waitReady(n, 60*time.Second)
		if took := time.Since(t0); took > 5*time.Second {
			t.Logf("agent %s back %v after kill -9 (slow machine): more than 5 s", name, took.Round(10*time.Millisecond))
		}
		t.Logf("agent %s killed (%v) and ready again %v after kill -9", name, stopped.Round(10*time.Millisecond), time.Since(t0).Round(10*time.Millisecond))
		mgr := c.manager()
		t.Logf("manager %s acting %v after the kill -9", mgr, time.Since(t0).Round(10*time.Millisecond))
		check("agent kill -9 and restart on "+name, t0)
	}

	// An upgrade: SIGTERM, then the new binary.
	t0 = time.Now()
	stopped, ready := c.restartAgent(c.node("h3"), syscall.SIGTERM)
	t.Logf("agent h3 upgraded: stopped %v, ready %v after SIGTERM", stopped.Round(10*time.Millisecond), ready.Round(10*time.Millisecond))
	check("agent upgrade on h3", t0)

}

// TestNoFalseAlarmSaturated (with -failover.stress=D): every CPU spins
// for D (processes on every bed host and the root); nothing fails, as in
// TestNoFalseAlarm. Apart from it, so that it runs whatever the other
// faults did.
func TestNoFalseAlarmSaturated(t *testing.T) {
	if *stressFor == 0 {
		t.Skip("-failover.stress not set")
	}
	c, check := falseAlarmBed(t)
	t0 := time.Now()
	stop := c.saturate()
	deadline := time.Now().Add(*stressFor)
	for time.Now().Before(deadline) {
		c.waitStamp("g1", time.Now(), 60*time.Second)
		<-time.After(10 * time.Second)
	}
	stop()
	check(fmt.Sprintf("%v of saturated CPUs", *stressFor), t0)
}

// falseAlarmBed is a cluster with g1, g2 and g3 running on h1, h2 and h3
// (first driver of -failover.hypervisors), and the check that nothing
// failed since t0: no host declared dead or failed, no fence, no restart,
// every guest where it ran, in the same boot.
func falseAlarmBed(t *testing.T) (*testCluster, func(what string, t0 time.Time)) {
	hv := strings.Split(*hypervisors, ",")[0]
	c := newCluster(t, options{hypervisor: hv})
	where := c.spread()
	check := func(what string, t0 time.Time) {
		t.Helper()
		// Past the detection threshold and then some: a false alarm
		// would have shown by now.
		c.waitStamp("g1", time.Now().Add(3*time.Second), 60*time.Second)
		for _, e := range c.events() {
			if !e.At.After(t0) {
				continue
			}
			if strings.Contains(e.Msg, " is dead:") || strings.Contains(e.Msg, " is cut off from the cluster network") || (e.Kind == "manager" && strings.Contains(e.Msg, " failed") && strings.HasPrefix(e.Msg, "node ")) || e.Kind == "fence" ||
				strings.Contains(e.Msg, "will restart") || strings.Contains(e.Msg, "crashed") {
				t.Errorf("%s: false alarm: %s %s", what, e.At.Format("15:04:05.000"), e.Msg)
			}
		}
		c.waitRunning(30*time.Second, func(g, n string) bool { return where[g] == n })
		for _, g := range c.guests {
			if segs := c.segments(g); len(segs) != 1 {
				t.Errorf("%s: %s booted %d times, want once", what, g, len(segs))
			}
		}
		c.noDoubleRun()
		t.Logf("%s: no false alarm", what)
	}

	return c, check
}

// moveStoreLeader asks the store leader to hand over to another voting
// member, and returns both names once the store has the new leader.
func (c *testCluster) moveStoreLeader() (from, to string) {
	c.t.Helper()
	// The manager's agent moves the store's leadership off its own host
	// by itself: when it does so between the read of the leader and the
	// move, the member asked is no longer the leader. Ask the new one.
	for try := 1; ; try++ {
		var err error
		from, to, err = c.tryMoveStoreLeader()
		if err == nil {
			break
		}
		if try == 5 || !strings.Contains(err.Error(), "not leader") {
			c.t.Fatalf("move the store leader from %s to %s: %v", from, to, err)
		}
		c.t.Logf("move the store leader from %s to %s: %v; again", from, to, err)
	}
	c.poll("store leader "+to, 20*time.Second, func() bool { return c.storeLeader() == to })
	return from, to
}

// tryMoveStoreLeader asks the store leader it finds to hand its leadership
// to a member on neither its host nor the manager's.
func (c *testCluster) tryMoveStoreLeader() (from, to string, err error) {
	c.t.Helper()
	from = c.storeLeader()
	n := c.node(from)
	read := func(f string) []byte {
		b, _ := os.ReadFile(filepath.Join(n.dir, "pki", f))
		return b
	}
	tlsCfg, err := pki.ClientTLS(read("ca.crt"), read("node.crt"), read("node.key"))
	if err != nil {
		c.t.Fatal(err)
	}
	ep := "https://" + n.h.Addr.String() + ":7402"
	ctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
	defer cancel()
	// Moving the leader is the store's root's (the store enforces its
	// roles): a root credential as an agent makes one, from the CA key the
	// host's keyring entry opens.
	st, err := store.Connect(ctx, store.ClientConfig{Endpoints: []string{ep}, TLS: tlsCfg}, nil, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	st.SetIdentity(from, read("node.crt"), read("node.key"))
	caPEM, caKey, err := st.CA(ctx)
	st.Close()
	if err != nil {
		c.t.Fatal(err)
	}
	ca, err := pki.LoadCA(caPEM, caKey)
	if err != nil {
		c.t.Fatal(err)
	}
	root, err := ca.IssueClient(store.RootUser, time.Minute, time.Now())
	if err != nil {
		c.t.Fatal(err)
	}
	tlsCfg.Certificates = []tls.Certificate{root}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, TLS: tlsCfg, DialTimeout: 5 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	defer cli.Close()
	ms, err := cli.MemberList(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	// Not to the manager's host: its agent moves the store's leadership
	// away again (the two roles live on different hosts).
	mgr := c.manager()
	var target uint64
	for _, m := range ms.Members {
		if m.Name != from && m.Name != mgr && !m.IsLearner {
			target, to = m.ID, m.Name
			break
		}
	}
	_, err = cli.MoveLeader(ctx, target)
	return from, to, err
}

// saturate keeps every CPU busy: two spinning shells on every bed host and
// two in the root namespace. stop kills them (by PID).
func (c *testCluster) saturate() (stop func()) {
	c.t.Helper()
	var procs []*exec.Cmd
	var bedProcs []*testbed.Process
	for range 2 {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		if err := cmd.Start(); err != nil {
			c.t.Fatal(err)
		}
		procs = append(procs, cmd)
		for _, n := range c.nodes {
			p, err := n.h.Start(c.ctx, testbed.Spec{Path: "/bin/sh", Args: []string{"-c", "while :; do :; done"}})
			if err != nil {
				c.t.Fatal(err)
			}
			bedProcs = append(bedProcs, p)
		}
	}
	return func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
		for _, p := range bedProcs {
			_ = p.Signal(syscall.SIGKILL)
			<-p.Done()
		}
	}
}
