package control

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/metrics"
	"github.com/haven-ha/haven/internal/model"
)

// histogram reads the count and sum of one labelled histogram.
func histogram(t *testing.T, kind, phase string) (uint64, float64) {
	t.Helper()
	var m dto.Metric
	if err := metrics.Recovery.WithLabelValues(kind, phase).(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// A crash seen at t, the restart order at t+RestartDelay, the guest running
// 3 s later: haven_recovery_seconds{kind=restart} records both phases.
func TestRecoveryLatencyMetrics(t *testing.T) {
	v := newVM1Running(t)
	st, w, sh, advance := v.st, v.w, v.sh, v.advance
	ctx := context.Background()
	n0, s0 := histogram(t, "restart", "order")
	r0, rs0 := histogram(t, "restart", "running")
	if err := sh.report(ctx, "n1", hostctl.Report{Guest: "vm1", State: hostctl.Crashed, Reason: "qemu exited"}); err != nil {
		t.Fatal(err)
	}
	delay := st.Config.Timings.RestartDelay
	advance(delay)
	if err := sh.step(ctx, manager.Tick{}); err != nil {
		t.Fatal(err)
	}
	o := w.order("n1", "vm1")
	if o.Op != hostctl.OpStart {
		t.Fatalf("no restart order: %v", w.log)
	}
	if n, s := histogram(t, "restart", "order"); n != n0+1 || !nearly(s-s0, delay.Seconds()) {
		t.Fatalf("order phase: count %d (was %d), sum +%v, want 1 more and +%v", n, n0, s-s0, delay.Seconds())
	}
	advance(3 * time.Second)
	if err := sh.report(ctx, "n1", hostctl.Report{Guest: "vm1", State: hostctl.Running, OrderID: o.ID, Op: hostctl.OpStart, Result: hostctl.ResultOK}); err != nil {
		t.Fatal(err)
	}
	if n, s := histogram(t, "restart", "running"); n != r0+1 || !nearly(s-rs0, (delay+3*time.Second).Seconds()) {
		t.Fatalf("running phase: count %d (was %d), sum +%v, want 1 more and +%v", n, r0, s-rs0, (delay + 3*time.Second).Seconds())
	}
}

// n1's lease expires while vm1 runs there: once n1 is fenced, vm1 is
// started on n2 and haven_recovery_seconds{kind=failover} records both
// phases.
func TestFailoverLatencyMetrics(t *testing.T) {
	st := vm1OnN1(t, manager.Config{Timings: manager.DefaultTimings()}, "n1", "n2")
	w := newMemWriter()
	sh := New(Config{State: st, Writer: w, Fencer: noFence{}, Defs: defs{}})
	in := runShell(t, sh, "n1", "n2")
	startVM1(t, w, in)
	o0, _ := histogram(t, "failover", "order")
	r0, _ := histogram(t, "failover", "running")
	in <- Input{NodeDown: "n1"}
	w.wait(t, "start order on n2", func() bool { return w.order("n2", "vm1").Op == hostctl.OpStart })
	start := w.order("n2", "vm1")
	in <- Input{Report: &NodeReport{Node: "n2", Report: hostctl.Report{Guest: "vm1", State: hostctl.Running, OrderID: start.ID, Op: hostctl.OpStart, Result: hostctl.ResultOK}}}
	waitHistogram(t, "failover", o0+1, r0+1)
}

// The manager dies with the host it ran on: the new manager's first step
// (a Sync without n1) starts the failover clock of n1's guests.
func TestFailoverLatencyAfterManagerLoss(t *testing.T) {
	st := manager.New(manager.Config{Timings: manager.DefaultTimings()})
	for _, n := range []string{"n1", "n2"} {
		if err := st.AddNode(n, 8*model.GiB, 4); err != nil {
			t.Fatal(err)
		}
	}
	spec := model.DefaultGuestSpec("vm1")
	spec.Node = "n1"
	if err := st.AddGuest(spec, true); err != nil {
		t.Fatal(err)
	}
	w := newMemWriter()
	sh := New(Config{State: st, Writer: w, Fencer: noFence{}, Defs: defs{}})
	ctx := context.Background()
	if err := sh.step(ctx, manager.Sync{Nodes: []manager.NodeReport{{Name: "n1", Running: []string{"vm1"}}, {Name: "n2"}}}); err != nil {
		t.Fatal(err)
	}
	if g := st.Guest("vm1"); !g.Running || g.Node != "n1" {
		t.Fatalf("vm1 not running on n1 after the first sync: %+v", g)
	}
	// A new manager (a new shell on the stored state) without n1.
	sh = New(Config{State: st, Writer: w, Fencer: noFence{}, Defs: defs{}})
	o0, _ := histogram(t, "failover", "order")
	r0, _ := histogram(t, "failover", "running")
	in := runShell(t, sh, "n2")
	w.wait(t, "start order on n2", func() bool { return w.order("n2", "vm1").Op == hostctl.OpStart })
	start := w.order("n2", "vm1")
	in <- Input{Report: &NodeReport{Node: "n2", Report: hostctl.Report{Guest: "vm1", State: hostctl.Running, OrderID: start.ID, Op: hostctl.OpStart, Result: hostctl.ResultOK}}}
	waitHistogram(t, "failover", o0+1, r0+1)
}

// waitHistogram polls the failover histogram's counts until they reach
// order and running; it fails the test after 5 s.
func waitHistogram(t *testing.T, kind string, order, running uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		o, _ := histogram(t, kind, "order")
		r, _ := histogram(t, kind, "running")
		if o == order && r == running {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s histogram: order count %d, running count %d, want %d and %d", kind, o, r, order, running)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nearly compares histogram sums, which other tests of the package add to
// first (floating-point sums drift in the last bits).
func nearly(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
