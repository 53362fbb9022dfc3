package control

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
)

// A migration target that never reports ready (its agent restarted after
// starting the receiving QEMU, before reporting) must not hold the guest's
// operation forever: after ReceiveTimeout the migration fails, the target's
// copy is killed and the guest stays started on the source.
func TestMigrationGivesUpOnASilentTarget(t *testing.T) {
	st := vm1OnN1(t, manager.Config{}, "n1", "n2")
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var offset atomic.Int64
	now := func() time.Time { return base.Add(time.Duration(offset.Load())) }
	w := newMemWriter()
	sh := New(Config{State: st, Writer: w, Fencer: noFence{}, Defs: defs{}, Now: now})
	in := runShell(t, sh, "n1", "n2")
	wait := func(what string, cond func() bool) { t.Helper(); w.wait(t, what, cond) }
	startVM1(t, w, in)
	in <- Input{Command: &manager.Command{Kind: manager.CmdMigrate, Guest: "vm1", Node: "n2"}, CommandID: "c1"}
	wait("receive order on n2", func() bool { return w.order("n2", "vm1").Op == hostctl.OpReceive })

	offset.Store(int64(ReceiveTimeout - time.Second))
	in <- Input{Config: &Change{}}
	if o := w.order("n2", "vm1"); o.Op != hostctl.OpReceive {
		t.Fatalf("migration given up before ReceiveTimeout: n2's order %+v", o)
	}
	offset.Store(int64(ReceiveTimeout + time.Second))
	in <- Input{Config: &Change{}}
	wait("kill of the target's copy on n2", func() bool { return w.order("n2", "vm1").Op == hostctl.OpKill })
	in <- Input{Config: &Change{}}
	g := st.Guest("vm1")
	if g.Node != "n1" || g.State != manager.GuestStarted || !g.Running || g.Op != nil {
		t.Fatalf("after the silent target: node %q state %q running %v op %+v, want started on n1 with no operation", g.Node, g.State, g.Running, g.Op)
	}
}

// The source of a live migration fails: the core gives the migration up
// (the guest is now fenced and recovered by placement) and the target's
// copy is killed at once, before any recovery start.
func TestSourceFailureKillsTheTargetCopy(t *testing.T) {
	st := vm1OnN1(t, manager.Config{Timings: manager.DefaultTimings()}, "n1", "n2", "n3")
	w := newMemWriter()
	sh := New(Config{State: st, Writer: w, Fencer: noFence{}, Defs: defs{}})
	in := runShell(t, sh, "n1", "n2", "n3")
	wait := func(what string, cond func() bool) { t.Helper(); w.wait(t, what, cond) }
	startVM1(t, w, in)
	in <- Input{Command: &manager.Command{Kind: manager.CmdMigrate, Guest: "vm1", Node: "n2"}, CommandID: "c1"}
	wait("receive order on n2", func() bool { return w.order("n2", "vm1").Op == hostctl.OpReceive })
	in <- Input{NodeDown: "n1"}
	wait("kill of the target's copy on n2", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, l := range w.log {
			if strings.HasPrefix(l, "n2 kill vm1 ") {
				return true
			}
		}
		return false
	})
}

// The source of a live migration comes back with a new boot before it was
// fenced: in one step the core gives the migration up and starts the guest
// again, on the migration's target. That start replaces the receive order
// (and the agent's start replaces the waiting copy): no kill of the
// target's copy may follow it, or it would kill the new start. (Found by
// the simulator's random test once it ran this shell: seed 238.)
func TestAbandonedMigrationDoesNotKillANewStartOnTheTarget(t *testing.T) {
	st := manager.New(manager.Config{Timings: manager.DefaultTimings()})
	for _, n := range []struct {
		name string
		mem  int64
	}{{"n1", 8 * model.GiB}, {"n2", 16 * model.GiB}, {"n3", 8 * model.GiB}} {
		if err := st.AddNode(n.name, n.mem, 4); err != nil {
			t.Fatal(err)
		}
	}
	spec := model.DefaultGuestSpec("vm1")
	spec.Node = "n1"
	if err := st.AddGuest(spec, true); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := newMemWriter()
	sh := New(Config{State: st, Writer: w, Fencer: noFence{}, Defs: defs{}, Now: func() time.Time { return now }})
	ctx := context.Background()
	sync := manager.Sync{Nodes: []manager.NodeReport{
		{Name: "n1", BootID: "1", Running: []string{"vm1"}}, {Name: "n2", BootID: "1"}, {Name: "n3", BootID: "1"},
	}}
	if err := sh.Start(ctx, now, sync); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	if err := sh.Handle(ctx, now, Input{Command: &manager.Command{Kind: manager.CmdMigrate, Guest: "vm1", Node: "n2"}}); err != nil {
		t.Fatal(err)
	}
	if o := w.order("n2", "vm1"); o.Op != hostctl.OpReceive {
		t.Fatalf("n2's order after the migrate command: %+v, want receive", o)
	}
	now = now.Add(time.Second)
	if err := sh.Handle(ctx, now, Input{NodeUp: &manager.NodeReport{Name: "n1", BootID: "2"}}); err != nil {
		t.Fatal(err)
	}
	if o := w.order("n2", "vm1"); o.Op != hostctl.OpStart {
		t.Fatalf("n2's last order: %+v, want the new start of vm1 (orders: %v)", o, w.log)
	}
	if g := st.Guest("vm1"); g.Op == nil || g.Op.Kind != manager.OpStart || g.Op.Node != "n2" {
		t.Fatalf("vm1's operation: %+v, want a start on n2", g.Op)
	}
}

// An evacuation whose migration failed is tried again when its backoff
// ends (1 s after the first failure): the shell's NextTimer is that moment,
// not its next tick, and no step before it sends the target an order.
func TestFailedEvacuationRetriedWhenItsBackoffEnds(t *testing.T) {
	st := vm1OnN1(t, manager.Config{}, "n1", "n2")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := newMemWriter()
	sh := New(Config{State: st, Writer: w, Fencer: noFence{}, Defs: defs{}, Now: func() time.Time { return now }})
	ctx := context.Background()
	step := func(d time.Duration) {
		t.Helper()
		now = now.Add(d)
		if err := sh.HandleTick(ctx, now); err != nil {
			t.Fatal(err)
		}
	}
	sync := manager.Sync{Nodes: []manager.NodeReport{{Name: "n1", BootID: "1", Running: []string{"vm1"}}, {Name: "n2", BootID: "1"}}}
	if err := sh.Start(ctx, now, sync); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	if err := sh.Handle(ctx, now, Input{Command: &manager.Command{Kind: manager.CmdMaintenanceOn, Node: "n1"}}); err != nil {
		t.Fatal(err)
	}
	if o := w.order("n2", "vm1"); o.Op != hostctl.OpReceive {
		t.Fatalf("n2's order after maintenance on n1: %+v, want receive", o)
	}
	// The target never gets ready: the migration fails at ReceiveTimeout.
	step(ReceiveTimeout + time.Millisecond)
	if o := w.order("n2", "vm1"); o.Op != hostctl.OpKill {
		t.Fatalf("n2's order after its receive timed out: %+v, want kill", o)
	}
	retry := now.Add(time.Second)
	if at, ok := sh.NextTimer(); !ok || !at.Equal(retry) {
		t.Fatalf("shell's next timer %v %v, want the end of the backoff %v", at, ok, retry)
	}
	for range 9 {
		step(100 * time.Millisecond)
		if o := w.order("n2", "vm1"); o.Op != hostctl.OpKill {
			t.Fatalf("n2's order %v after the failure: %+v, want no new one before %v", now.Sub(retry.Add(-time.Second)), o, retry)
		}
	}
	step(retry.Sub(now))
	if o := w.order("n2", "vm1"); o.Op != hostctl.OpReceive {
		t.Fatalf("n2's order when the backoff ended: %+v, want receive", o)
	}
}
