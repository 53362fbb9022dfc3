package cli

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
)

// TestWaitForOutcome: --wait waits past the manager's acceptance for the
// outcome: the guest running on the target, or the failure and its
// reason. A scripted stand-in for the manager accepts each command, then
// after a while saves the state the real manager would reach (running on
// the target, or a failed migration with its log entry).
func TestWaitForOutcome(t *testing.T) {
	ag, ctx := startAgent(t)
	if err := ag.RegisterNode(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := cliRun(ctx, ag, "admin", "", "pool", "add", "images", "--path", "/var/lib/images", "--shared"); code != 0 {
		t.Fatal(errs)
	}
	if code, _, errs := cliRun(ctx, ag, "admin", "", "guest", "create", "w1", "--state", "stopped", "--kernel", "/var/lib/images/vmlinuz"); code != 0 {
		t.Fatal(errs)
	}
	st := manager.New(manager.Config{})
	for _, n := range []string{"n1", "n2"} {
		if err := st.AddNode(n, 8*model.GiB, 4); err != nil {
			t.Fatal(err)
		}
		st.Node(n).Status = manager.NodeOnline
	}
	spec := model.DefaultGuestSpec("w1")
	spec.State = model.DesiredStopped
	if err := st.AddGuest(spec, false); err != nil {
		t.Fatal(err)
	}
	g := st.Guest("w1")
	g.State = manager.GuestStopped
	var mu sync.Mutex
	save := func(f func(g *manager.Guest)) {
		mu.Lock()
		defer mu.Unlock()
		f(st.Guest("w1"))
		if err := ag.SaveState(ctx, st); err != nil {
			t.Error(err)
		}
	}
	save(func(*manager.Guest) {})
	var failNext atomic.Bool
	later := func(f func(g *manager.Guest)) {
		time.AfterFunc(700*time.Millisecond, func() { save(f) })
	}
	mctx, mcancel := context.WithCancel(ctx)
	wait := ag.PlayManager(mctx, func(c cluster.Command) error {
		switch c.Command.Kind {
		case manager.CmdStart:
			save(func(g *manager.Guest) { g.Op = &manager.Op{ID: 1, Kind: manager.OpStart, Node: "n1"} })
			later(func(g *manager.Guest) { g.Op, g.State, g.Node, g.Running = nil, manager.GuestStarted, "n1", true })
		case manager.CmdMigrate:
			save(func(g *manager.Guest) {
				g.Op = &manager.Op{ID: 2, Kind: manager.OpMigrate, Node: "n1", Target: c.Command.Node}
			})
			if failNext.Load() {
				later(func(g *manager.Guest) { g.Op = nil })
				time.AfterFunc(600*time.Millisecond, func() {
					ag.Cluster.AddEvent(ctx, cluster.Event{Kind: "manager", Guest: "w1", Msg: "migration of w1 to n2 failed (target out of memory); it keeps running on n2"})
				})
			} else {
				later(func(g *manager.Guest) { g.Op, g.Node = nil, c.Command.Node })
			}
		}
		return nil
	})
	defer func() {
		mcancel()
		if err := wait(); err != nil {
			t.Error(err)
		}
	}()

	start := time.Now()
	code, out, errs := cliRun(ctx, ag, "operator", "", "guest", "start", "w1", "--wait", "30s")
	if code != 0 || !strings.Contains(out, "start w1: done in") || !strings.Contains(out, "w1 is running on n1") {
		t.Fatalf("start --wait: exit %d, %q %q", code, out, errs)
	}
	if took := time.Since(start); took < 700*time.Millisecond {
		t.Errorf("start --wait returned after %v, before the guest ran", took)
	}
	t.Logf("start took %v", time.Since(start))
	code, out, errs = cliRun(ctx, ag, "operator", "", "guest", "migrate", "w1", "n2", "--wait", "30s")
	t.Logf("migrate: %s", out)
	if code != 0 || !strings.Contains(out, "w1 is running on n2") {
		t.Fatalf("migrate --wait: exit %d, %q %q", code, out, errs)
	}
	failNext.Store(true)
	start = time.Now()
	code, out, errs = cliRun(ctx, ag, "operator", "", "guest", "migrate", "w1", "n1", "--wait", "30s")
	t.Logf("failing migrate: %s", errs)
	if code != 1 || !strings.Contains(errs, "migrate w1 n1 failed after") || !strings.Contains(errs, "target out of memory") {
		t.Fatalf("failing migrate --wait: exit %d, %q %q", code, out, errs)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the failed migration was reported after %v", took)
	}
}
