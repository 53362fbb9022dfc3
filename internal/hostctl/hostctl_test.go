package hostctl

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
)

// fakeDriver is an in-memory hypervisor for the controller's own tests.
type fakeDriver struct {
	mu         sync.Mutex
	running    map[string]bool
	starts     map[string]int
	failStart  error
	failMig    error
	events     chan hypervisor.Event
	listResult []hypervisor.Status
	// onStart, when set, runs inside Start once the guest runs (as a real
	// driver's "started" event can arrive before Start returns).
	onStart func(name string)
	// onMigrate, when set, runs inside Migrate with its progress callback.
	onMigrate func(progress func(hypervisor.Progress))
}

func newFake() *fakeDriver {
	return &fakeDriver{running: map[string]bool{}, starts: map[string]int{}, events: make(chan hypervisor.Event, 16)}
}

func (f *fakeDriver) Name() string { return "fake" }
func (f *fakeDriver) Start(ctx context.Context, def guestdef.Definition) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failStart != nil {
		return f.failStart
	}
	if f.running[def.Name] {
		return hypervisor.ErrAlreadyRunning
	}
	f.running[def.Name] = true
	f.starts[def.Name]++
	if f.onStart != nil {
		f.mu.Unlock()
		f.onStart(def.Name)
		f.mu.Lock()
	}
	return nil
}
func (f *fakeDriver) Stop(ctx context.Context, name string, timeout time.Duration) error {
	return f.Kill(ctx, name)
}
func (f *fakeDriver) Kill(ctx context.Context, name string) error {
	f.mu.Lock()
	was := f.running[name]
	delete(f.running, name)
	f.mu.Unlock()
	if !was {
		return hypervisor.ErrNotFound
	}
	f.events <- hypervisor.Event{Guest: name, Kind: hypervisor.EventStopped}
	return nil
}
func (f *fakeDriver) Status(ctx context.Context, name string) (hypervisor.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running[name] {
		return hypervisor.Status{Name: name, State: hypervisor.Running}, nil
	}
	return hypervisor.Status{}, hypervisor.ErrNotFound
}
func (f *fakeDriver) List(ctx context.Context) ([]hypervisor.Status, error) {
	return f.listResult, nil
}
func (f *fakeDriver) Events() <-chan hypervisor.Event { return f.events }
func (f *fakeDriver) PrepareIncoming(ctx context.Context, def guestdef.Definition, _ hypervisor.IncomingOptions) (hypervisor.MigrationTarget, error) {
	return hypervisor.MigrationTarget{URI: "tcp:127.0.0.1:4444"}, nil
}
func (f *fakeDriver) Migrate(ctx context.Context, name string, t hypervisor.MigrationTarget, p func(hypervisor.Progress)) error {
	if f.failMig != nil {
		return f.failMig
	}
	if f.onMigrate != nil {
		f.onMigrate(p)
	}
	f.mu.Lock()
	delete(f.running, name)
	f.mu.Unlock()
	return nil
}
func (f *fakeDriver) Close() error { return nil }

type recorder struct {
	mu   sync.Mutex
	last map[string]Report
	all  []Report
}

func (r *recorder) Publish(rep Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last = map[string]Report{}
	}
	r.last[rep.Guest] = rep
	r.all = append(r.all, rep)
}
func (r *recorder) Remove(string) {}

func (r *recorder) get(g string) Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last[g]
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling interval, not a wait for an event
	}
}

func setup(t *testing.T) (*fakeDriver, *recorder, *Controller, context.Context) {
	t.Helper()
	drv, rec := newFake(), &recorder{}
	c := New(Config{Driver: drv, Publisher: rec})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return drv, rec, c, ctx
}

func TestStartOrderRunsOnce(t *testing.T) {
	drv, rec, c, ctx := setup(t)
	o := Order{ID: "o1", Guest: "vm1", Op: OpStart, Def: guestdef.Definition{Name: "vm1"}}
	c.Submit(ctx, o)
	c.Submit(ctx, o) // a replayed order
	waitFor(t, "vm1 running", func() bool { r := rec.get("vm1"); return r.State == Running && r.Result == ResultOK })
	c.Submit(ctx, Order{ID: "o2", Guest: "vm1", Op: OpStop})
	waitFor(t, "vm1 stopped", func() bool { return rec.get("vm1").OrderID == "o2" && rec.get("vm1").Result == ResultOK })
	if n := drv.starts["vm1"]; n != 1 {
		t.Fatalf("vm1 started %d times, want 1", n)
	}
	if got := rec.get("vm1").State; got != Stopped {
		t.Fatalf("after stop order: state %q, want stopped (a stop we ordered is no crash)", got)
	}
}

func TestCrashIsReported(t *testing.T) {
	drv, rec, c, ctx := setup(t)
	c.Submit(ctx, Order{ID: "o1", Guest: "vm1", Op: OpStart, Def: guestdef.Definition{Name: "vm1"}})
	waitFor(t, "vm1 running", func() bool { return rec.get("vm1").State == Running })
	drv.events <- hypervisor.Event{Guest: "vm1", Kind: hypervisor.EventCrashed, Reason: "qemu exited"}
	waitFor(t, "vm1 crashed", func() bool { return rec.get("vm1").State == Crashed })
}

func TestFailedStartAndMigration(t *testing.T) {
	drv, rec, c, ctx := setup(t)
	drv.failStart = errors.New("no such disk")
	c.Submit(ctx, Order{ID: "o1", Guest: "vm1", Op: OpStart, Def: guestdef.Definition{Name: "vm1"}})
	waitFor(t, "start result", func() bool { return rec.get("vm1").Result == ResultFailed })
	if r := rec.get("vm1"); r.State != Stopped || r.Error == "" {
		t.Fatalf("failed start report = %+v", r)
	}
	drv.mu.Lock()
	drv.failStart = nil
	drv.failMig = errors.New("connection refused")
	drv.mu.Unlock()
	c.Submit(ctx, Order{ID: "o2", Guest: "vm1", Op: OpStart, Def: guestdef.Definition{Name: "vm1"}})
	waitFor(t, "started", func() bool { return rec.get("vm1").OrderID == "o2" && rec.get("vm1").Result == ResultOK })
	c.Submit(ctx, Order{ID: "o3", Guest: "vm1", Op: OpMigrate, Target: hypervisor.MigrationTarget{Node: "n2"}})
	waitFor(t, "migrate result", func() bool { return rec.get("vm1").OrderID == "o3" && rec.get("vm1").Result == ResultFailed })
	if st := rec.get("vm1").State; st != Running {
		t.Fatalf("after a failed migration the guest is %q, want running on the source", st)
	}
}

func TestAdoptAndKillAll(t *testing.T) {
	drv, rec, c, ctx := setup(t)
	drv.running["old"] = true
	drv.listResult = []hypervisor.Status{{Name: "old", State: hypervisor.Running}}
	reps, err := c.Adopt(ctx)
	if err != nil || len(reps) != 1 || reps[0].State != Running {
		t.Fatalf("Adopt = %v, %v", reps, err)
	}
	if err := c.KillAll(ctx); err != nil {
		t.Fatal(err)
	}
	if st := rec.get("old").State; st != Stopped {
		t.Fatalf("after KillAll: %q", st)
	}
	if drv.running["old"] {
		t.Fatal("guest still running after KillAll")
	}
}

// A guest's "started" event that the controller handles while the start
// order is still pending (the driver's call has not returned yet) must not
// be published: that report names no order, and published after the
// order's result it replaced it in the store, so the manager waited for the
// start's result for good (seen on the test bed).
func TestStartedEventDuringStartOrderIsNotPublished(t *testing.T) {
	drv, rec, c, ctx := setup(t)
	noOrder := func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, r := range rec.all {
			if r.Guest == "vm1" && r.OrderID == "" {
				return true
			}
		}
		return false
	}
	drv.onStart = func(name string) {
		drv.events <- hypervisor.Event{Guest: name, Kind: hypervisor.EventStarted}
		// Give the controller the time to handle it while the order is
		// pending: until it publishes it (the bug), or half a second.
		for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline) && !noOrder(); {
			time.Sleep(time.Millisecond) // polling interval
		}
	}
	c.Submit(ctx, Order{ID: "o1", Guest: "vm1", Op: OpStart, Def: guestdef.Definition{Name: "vm1"}})
	waitFor(t, "vm1's start result", func() bool { r := rec.get("vm1"); return r.OrderID == "o1" && r.Result == ResultOK })
	if noOrder() {
		t.Fatalf("a report without an order was published while the start order was pending: %+v", rec.all)
	}
}

// An outgoing migration's progress is published at most once per
// ProgressEvery (each publication is a store write), however often the
// driver reports it; its result at once.
func TestMigrationProgressThrottled(t *testing.T) {
	drv, rec := newFake(), &recorder{}
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c := New(Config{Driver: drv, Publisher: rec, Now: clock})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	// 25 readings 100 ms apart (2.5 s), the last one the end.
	drv.onMigrate = func(progress func(hypervisor.Progress)) {
		for i := 1; i <= 25; i++ {
			mu.Lock()
			now = now.Add(100 * time.Millisecond)
			mu.Unlock()
			p := hypervisor.Progress{Total: 1000, Remaining: int64(1000 - 40*i)}
			if i == 25 {
				p.Downtime = 30 * time.Millisecond
			}
			progress(p)
		}
	}
	c.Submit(ctx, Order{ID: "o1", Guest: "vm1", Op: OpStart, Def: guestdef.Definition{Name: "vm1"}})
	waitFor(t, "started", func() bool { return rec.get("vm1").Result == ResultOK })
	c.Submit(ctx, Order{ID: "o2", Guest: "vm1", Op: OpMigrate, Target: hypervisor.MigrationTarget{Node: "n2"}})
	waitFor(t, "migrated", func() bool { return rec.get("vm1").OrderID == "o2" && rec.get("vm1").Result == ResultOK })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var remaining []int64
	for _, r := range rec.all {
		if r.OrderID == "o2" && r.State == Leaving && r.Total > 0 {
			remaining = append(remaining, r.Remaining)
		}
	}
	// Published at 1.0 s and 2.0 s after the Leaving report: readings 10 and 20.
	if want := []int64{600, 200}; !slices.Equal(remaining, want) {
		t.Errorf("progress published with remaining %v, want %v (one a second)", remaining, want)
	}
	last := rec.all[len(rec.all)-1]
	if last.OrderID != "o2" || last.State != Stopped || last.Result != ResultOK || last.Downtime != 30*time.Millisecond {
		t.Errorf("last report %+v, want the migration's result with its downtime (30ms)", last)
	}
}
