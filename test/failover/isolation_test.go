package failover

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store"
)

// setQuorumLoss sets the cluster policy quorum_loss.
func (c *testCluster) setQuorumLoss(p model.QuorumLossPolicy) {
	c.t.Helper()
	c.api(func(ctx context.Context, cl *client.Client) error {
		_, err := cl.SetPolicy(ctx, map[string]any{"quorum_loss": p})
		return err
	})
}

// spread starts g1 on h1, g2 on h2 and g3 on h3 and waits until they run
// and write their disks; it returns where each runs.
func (c *testCluster) spread() map[string]string {
	c.t.Helper()
	c.guest("g1", "", "h1")
	c.guest("g2", "", "h2")
	c.guest("g3", "", "h3")
	where := c.waitRunning(120*time.Second, nil)
	start := time.Now()
	for _, g := range c.guests {
		c.waitStamp(g, start, 60*time.Second)
	}
	return where
}

// A switch outage under quorum_loss freeze: every host is cut off from
// every other for longer than the lease TTL. No side is quorate, so nothing
// is fenced and no guest stops; when the network heals, every host is
// online again with its guests, in the same boot.
func TestSwitchOutageUnderFreeze(t *testing.T) { eachHypervisor(t, switchOutageUnderFreeze) }

func switchOutageUnderFreeze(t *testing.T, hv string) {
	c := newCluster(t, options{hypervisor: hv})
	c.setQuorumLoss(model.QuorumLossFreeze)
	where := c.spread()
	t0 := time.Now()
	if err := c.bed.Partition(c.ctx, []string{"h1"}, []string{"h2"}, []string{"h3"}); err != nil {
		t.Fatal(err)
	}
	// Past every lease and self-fence deadline.
	<-time.After(store.DefaultLeaseTTL + 4*time.Second)
	for _, g := range c.guests {
		c.waitStamp(g, time.Now(), 30*time.Second)
	}
	if err := c.bed.Heal(c.ctx); err != nil {
		t.Fatal(err)
	}
	c.waitHosts(60*time.Second, c.names()...)
	c.waitRunning(60*time.Second, func(g, n string) bool { return where[g] == n })
	for _, g := range c.guests {
		if segs := c.segments(g); len(segs) != 1 {
			t.Errorf("%s booted %d times across the outage, want once", g, len(segs))
		}
	}
	for _, n := range c.names() {
		if got := c.fencedCount(n, t0); got != 0 {
			t.Errorf("%s fenced %d times in a switch outage", n, got)
		}
		if log := c.logOf(c.node(n)); strings.Contains(log, "self-fencing: killing every guest here") {
			t.Errorf("%s self-fenced under freeze", n)
		}
	}
	for _, e := range c.events() {
		if e.At.After(t0) && (strings.Contains(e.Msg, "will restart") || strings.HasPrefix(e.Msg, "start ")) {
			t.Errorf("guest restarted after a switch outage: %s", e.Msg)
		}
	}
	c.noDoubleRun()
}

// A 2/1 partition under quorum_loss freeze: the cut-off host keeps its
// guest (no self-fence), the majority fences it with its device and starts
// the guest; never twice.
func TestPartitionUnderFreeze(t *testing.T) { eachHypervisor(t, partitionUnderFreeze) }

func partitionUnderFreeze(t *testing.T, hv string) {
	c := newCluster(t, options{hypervisor: hv})
	c.setQuorumLoss(model.QuorumLossFreeze)
	c.spread()
	t0 := time.Now()
	if err := c.bed.Partition(c.ctx, []string{"h1"}, []string{"h2", "h3"}); err != nil {
		t.Fatal(err)
	}
	on := c.waitRunning(recoverWithin, func(g, n string) bool { return n != "h1" }, "g1")
	t.Logf("g1 runs again on %s %v after the partition", on["g1"], time.Since(t0).Round(100*time.Millisecond))
	c.noDoubleRun()
	if got := c.fencedCount("h1", t0); got != 1 {
		t.Errorf("h1 fenced %d times, want 1", got)
	}
	if log := c.logOf(c.node("h1")); strings.Contains(log, "self-fencing: killing every guest here") {
		t.Error("h1 self-fenced under freeze")
	}
	// h1 still wrote its storage heartbeat: the event log says it was
	// isolated, not dead.
	isolated := false
	for _, e := range c.events() {
		if e.At.After(t0) && strings.HasPrefix(e.Msg, "h1 is cut off from the cluster network but alive") {
			isolated = true
			t.Logf("event: %s", e.Msg)
		}
	}
	if !isolated {
		t.Error("h1 was not reported isolated (alive on the shared storage)")
	}
	if err := c.bed.Heal(c.ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.bed.PowerOn(c.ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	c.waitHosts(90*time.Second, "h1")
	c.noDoubleRun()
}

// Two hosts and a witness: losing either host leaves a quorate side of two,
// whose manager fences it and runs its guests on the other host. The
// witness never runs a guest and is never fenced.
func TestTwoHostsAndWitness(t *testing.T) { eachHypervisor(t, twoHostsAndWitness) }

func twoHostsAndWitness(t *testing.T, hv string) {
	c := newCluster(t, options{hypervisor: hv, witness: "h3"})
	c.guest("g1", "", "h1")
	c.guest("g2", "", "h2")
	c.waitRunning(120*time.Second, nil)
	t0 := time.Now()
	for _, lost := range []string{"h1", "h2"} {
		other := map[string]string{"h1": "h2", "h2": "h1"}[lost]
		tf := time.Now()
		if err := c.bed.PowerOff(c.ctx, lost); err != nil {
			t.Fatal(err)
		}
		c.waitRunning(recoverWithin, func(g, n string) bool { return n == other })
		t.Logf("%s lost: both guests run on %s %v later", lost, other, time.Since(tf).Round(100*time.Millisecond))
		c.noDoubleRun()
		if got := c.fencedCount(lost, tf); got != 1 {
			t.Errorf("%s fenced %d times, want 1", lost, got)
		}
		if err := c.bed.PowerOn(c.ctx, lost); err != nil {
			t.Fatal(err)
		}
		c.waitHosts(90*time.Second, lost)
	}
	if got := c.fencedCount("h3", t0); got != 0 {
		t.Errorf("the witness was fenced %d times", got)
	}
	for _, e := range c.events() {
		if strings.HasPrefix(e.Msg, "start ") && strings.Contains(e.Msg, " on h3") {
			t.Errorf("a guest was placed on the witness: %s", e.Msg)
		}
	}
	if q := c.qemuHosts(c.guests); strings.Contains(q["g1"]+q["g2"], "h3") {
		t.Errorf("QEMU on the witness: %v", q)
	}
}
