package hostctl

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
)

type watchLog struct {
	mu  sync.Mutex
	log []string
}

func (w *watchLog) Watch(def guestdef.Definition) { w.add("watch " + def.Name) }
func (w *watchLog) Unwatch(name string)           { w.add("unwatch " + name) }
func (w *watchLog) add(s string) {
	w.mu.Lock()
	w.log = append(w.log, s)
	w.mu.Unlock()
}
func (w *watchLog) get() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.log)
}

// A guest's health checks run while it runs here; a health failure kills it
// and reports it crashed with the reason and no order, as a crash.
func TestHealthFailureIsACrash(t *testing.T) {
	drv, rec, wl := newFake(), &recorder{}, &watchLog{}
	c := New(Config{Driver: drv, Publisher: rec, Health: wl})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	def := guestdef.Definition{Name: "vm1", Health: []guestdef.Check{{TCP: 80}}}
	c.Submit(ctx, Order{ID: "o1", Guest: "vm1", Op: OpStart, Def: def})
	waitFor(t, "vm1 running and watched", func() bool { return rec.get("vm1").State == Running && len(wl.get()) == 1 })
	c.Fail(ctx, "vm1", `health check "tcp" (tcp) failed 3 times in a row: connection refused`)
	waitFor(t, "vm1 crashed", func() bool { return rec.get("vm1").State == Crashed })
	r := rec.get("vm1")
	if r.OrderID != "" || r.Reason != `health check "tcp" (tcp) failed 3 times in a row: connection refused` {
		t.Errorf("crash report = %+v, want the reason and no order (the manager's crash)", r)
	}
	drv.mu.Lock()
	running := drv.running["vm1"]
	drv.mu.Unlock()
	if running {
		t.Error("the failed guest still runs")
	}
	if got := wl.get(); !slices.Equal(got, []string{"watch vm1", "unwatch vm1"}) {
		t.Errorf("watcher calls = %q", got)
	}
	// The kill's own stop event is not a second report.
	n := len(rec.all)
	c.Submit(ctx, Order{ID: "o2", Guest: "vm1", Op: OpStart, Def: def})
	waitFor(t, "vm1 restarted", func() bool { return rec.get("vm1").State == Running && rec.get("vm1").OrderID == "o2" })
	if got := wl.get(); !slices.Equal(got, []string{"watch vm1", "unwatch vm1", "watch vm1"}) {
		t.Errorf("watcher calls after the restart = %q", got)
	}
	for _, x := range rec.all[n:] {
		if x.State == Stopped {
			t.Errorf("a stopped report after the health kill: %+v", x)
		}
	}

	// A failure that arrives after the guest stopped does nothing.
	c.Submit(ctx, Order{ID: "o3", Guest: "vm1", Op: OpStop})
	waitFor(t, "vm1 stopped", func() bool { return rec.get("vm1").OrderID == "o3" && rec.get("vm1").State == Stopped })
	c.Fail(ctx, "vm1", "late")
	c.Submit(ctx, Order{ID: "o4", Guest: "vm1", Op: OpStop})
	waitFor(t, "o4 done", func() bool { return rec.get("vm1").OrderID == "o4" && rec.get("vm1").Result == ResultOK })
	if r := rec.get("vm1"); r.State != Stopped {
		t.Errorf("late failure changed the report: %+v", r)
	}
}

// Adopted guests get their checks once their definition is known.
func TestAdoptedGuestWatched(t *testing.T) {
	drv, rec, wl := newFake(), &recorder{}, &watchLog{}
	drv.listResult = []hypervisor.Status{{Name: "vm2", State: hypervisor.Running}}
	c := New(Config{Driver: drv, Publisher: rec, Health: wl})
	if _, err := c.Adopt(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(wl.get()) != 0 {
		t.Fatal("watched without a definition")
	}
	c.SetDefinition(guestdef.Definition{Name: "vm2", GuestAgent: true})
	if got := wl.get(); !slices.Equal(got, []string{"watch vm2"}) {
		t.Errorf("watcher calls = %q", got)
	}
}
