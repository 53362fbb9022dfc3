package control

import (
	"testing"

	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
)

// The source of a live migration loses the guest while it sends (its
// host self-fenced in a switch outage, killing it): the send fails and the
// source reports the guest stopped. The guest must not be taken for
// running on the source, as a failed migration leaves it (it would stay
// down for good, reported running: a test-bed run found it so), nor be
// restarted before the target's copy is killed (the migration may have
// completed there). Once the target reports its copy killed, the guest is
// recovered as a crash on its source.
func TestSourceLostDuringMigrationIsRecovered(t *testing.T) {
	st := vm1OnN1(t, manager.Config{Timings: manager.DefaultTimings()}, "n1", "n2")
	w := newMemWriter()
	sh := New(Config{State: st, Writer: w, Fencer: noFence{}, Defs: defs{}})
	in := runShell(t, sh, "n1", "n2")
	wait := func(what string, cond func() bool) { t.Helper(); w.wait(t, what, cond) }
	startVM1(t, w, in)
	mig := migrateVM1ToN2(t, w, in, "tcp:10.0.0.2:49152")

	// n1 self-fences: the guest is killed, then the send fails.
	in <- Input{Report: &NodeReport{Node: "n1", Report: hostctl.Report{Guest: "vm1", State: hostctl.Stopped, Reason: hostctl.ReasonSelfFence}}}
	in <- Input{Report: &NodeReport{Node: "n1", Report: hostctl.Report{Guest: "vm1", State: hostctl.Stopped, OrderID: mig.ID, Op: hostctl.OpMigrate, Result: hostctl.ResultFailed, Error: "domain 'vm1' is not running"}}}
	wait("kill of the target's copy on n2", func() bool { return w.order("n2", "vm1").Op == hostctl.OpKill })
	reap := w.order("n2", "vm1")
	in <- Input{Config: &Change{}}
	if op, _ := parseOrderID(mig.ID); st.Guest("vm1").Op == nil || st.Guest("vm1").Op.ID != op {
		t.Fatalf("the guest's migration ended before the target's copy was killed: %+v", st.Guest("vm1").Op)
	}
	if o := w.order("n1", "vm1"); o.Op == hostctl.OpStart {
		t.Fatalf("restarted on n1 before the target's copy was killed: %+v", o)
	}

	in <- Input{Report: &NodeReport{Node: "n2", Report: hostctl.Report{Guest: "vm1", State: hostctl.Stopped, OrderID: reap.ID, Op: hostctl.OpKill, Result: hostctl.ResultOK}}}
	in <- Input{Config: &Change{}}
	g := st.Guest("vm1")
	if g.Running && g.Op == nil {
		t.Fatalf("after the target's copy was killed: vm1 taken for running on %s", g.Node)
	}
	t.Logf("vm1 after the reap: state %s node %s running %v op %+v", g.State, g.Node, g.Running, g.Op)
}
