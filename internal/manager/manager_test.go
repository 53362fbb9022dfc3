package manager

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/model"
)

// small: n1, n2 (8 GiB each, online), n3 (offline); domain r restricted to
// n1; guests: web on n1 (2 GiB), legacy on n1 (not migratable), big on n2
// (7 GiB), off (stopped, on n1), pinned on n1 in domain r.
func small(t *testing.T) *State {
	t.Helper()
	s := New(Config{})
	for _, n := range []string{"n1", "n2", "n3"} {
		if err := s.AddNode(n, 8*model.GiB, 4); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddDomain(model.Domain{Name: "r", Members: []model.DomainMember{{Node: "n1"}}, Restricted: true}); err != nil {
		t.Fatal(err)
	}
	add := func(name, node string, mem int64, running bool, f func(*model.GuestSpec)) {
		spec := model.DefaultGuestSpec(name)
		spec.Node, spec.Memory = node, mem
		if f != nil {
			f(&spec)
		}
		if err := s.AddGuest(spec, running); err != nil {
			t.Fatal(err)
		}
	}
	add("web", "n1", 2*model.GiB, true, nil)
	add("legacy", "n1", model.GiB, true, func(g *model.GuestSpec) { g.Migratable = false })
	add("big", "n2", 7*model.GiB, true, nil)
	add("off", "n1", model.GiB, false, func(g *model.GuestSpec) { g.State = model.DesiredStopped })
	add("pinned", "n1", model.GiB, true, func(g *model.GuestSpec) { g.Domain = "r" })
	s.Step(t0, Sync{Nodes: []NodeReport{{Name: "n1", BootID: "a", Running: []string{"web", "legacy", "pinned"}}, {Name: "n2", BootID: "b", Running: []string{"big"}}}})
	return s
}

func TestValidate(t *testing.T) {
	s := small(t)
	s.Node("n2").Maintenance = false
	cases := []struct {
		c    Command
		want error
	}{
		{Command{Kind: CmdStart, Guest: "nope"}, ErrUnknownGuest},
		{Command{Kind: CmdStart, Guest: "off"}, nil},
		{Command{Kind: CmdMigrate, Guest: "web", Node: "n9"}, ErrUnknownNode},
		{Command{Kind: CmdMigrate, Guest: "legacy", Node: "n2"}, ErrNotMigratable},
		{Command{Kind: CmdMigrate, Guest: "off", Node: "n2"}, ErrNotRunning},
		{Command{Kind: CmdMigrate, Guest: "web", Node: "n1"}, ErrSameNode},
		{Command{Kind: CmdMigrate, Guest: "web", Node: "n3"}, ErrNodeOffline},
		{Command{Kind: CmdMigrate, Guest: "web", Node: "n2"}, ErrNoRoom},
		{Command{Kind: CmdMigrate, Guest: "pinned", Node: "n2"}, ErrOutsideDomain},
		{Command{Kind: CmdRelocate, Guest: "legacy", Node: "n3"}, ErrNodeOffline},
		{Command{Kind: CmdRelocate, Guest: "web", Node: "n2"}, ErrNoRoom},
		{Command{Kind: CmdRelocate, Guest: "off", Node: "n2"}, nil},
		{Command{Kind: CmdMaintenanceOff, Node: "n1"}, ErrNotInMaintenance},
		{Command{Kind: CmdMaintenanceOn, Node: "n1"}, nil},
		{Command{Kind: "reboot", Node: "n1"}, ErrUnknownCommand},
	}
	for _, c := range cases {
		err := Validate(s, c.c)
		if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("%s: got %v, want %v", c.c, err, c.want)
		}
	}
	// Step applies the same check: a rejected command changes nothing.
	before, _ := json.Marshal(s)
	acts := s.Step(t0.Add(time.Second), Command{Kind: CmdMigrate, Guest: "web", Node: "n2"})
	after, _ := json.Marshal(s)
	if string(before) != string(after) || acts[0].Kind != ActReject || !errors.Is(acts[0].Err, ErrNoRoom) {
		t.Fatalf("rejected command changed state or was not rejected: %+v", acts)
	}
	s.Step(t0.Add(time.Second), Command{Kind: CmdMaintenanceOn, Node: "n2"})
	if err := Validate(s, Command{Kind: CmdRelocate, Guest: "off", Node: "n2"}); !errors.Is(err, ErrNodeMaintenance) {
		t.Errorf("relocate to maintenance: %v", err)
	}
}

func TestRestoreRoundTrip(t *testing.T) {
	s := small(t)
	s.Step(t0.Add(time.Second), Command{Kind: CmdMaintenanceOn, Node: "n1"})
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Restore(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Guests, r.Guests) || !reflect.DeepEqual(s.Nodes, r.Nodes) || s.NextID != r.NextID {
		t.Fatal("restored state differs")
	}
	// Both continue identically.
	ev := Tick{}
	a1 := s.Step(t0.Add(2*time.Second), ev)
	a2 := r.Step(t0.Add(2*time.Second), ev)
	if !reflect.DeepEqual(a1, a2) {
		t.Fatalf("restored manager acts differently:\n%v\n%v", a1, a2)
	}
	if _, err := Restore([]byte(`{"nodes":[{"name":"a"},{"name":"a"}]}`)); err == nil {
		t.Error("duplicate nodes restored")
	}
	if _, err := Restore([]byte(`{`)); err == nil {
		t.Error("bad json restored")
	}
}

func TestNodeFailureFencing(t *testing.T) {
	s := small(t)
	acts := s.Step(t0.Add(10*time.Second), NodeDown{Node: "n1"})
	var fence *Action
	for i := range acts {
		if acts[i].Kind == ActFence {
			fence = &acts[i]
		}
	}
	if fence == nil || s.Guest("web").State != GuestFencing || s.Node("n1").Status != NodeFailed {
		t.Fatalf("no fence: %v", acts)
	}
	// A failed attempt is retried after FenceRetry, not before.
	s.Step(t0.Add(12*time.Second), FenceResult{Node: "n1", Attempt: fence.Op, OK: false, Err: "boom"})
	if a := s.Step(t0.Add(13*time.Second), Tick{}); hasKind(a, ActFence) {
		t.Fatal("retried too early")
	}
	at, ok := s.NextTimer()
	if !ok || !at.Equal(t0.Add(17*time.Second)) {
		t.Fatalf("next timer %v %v", at, ok)
	}
	a := s.Step(at, Tick{})
	if !hasKind(a, ActFence) {
		t.Fatal("not retried")
	}
	var id uint64
	for _, x := range a {
		if x.Kind == ActFence {
			id = x.Op
		}
	}
	// A stale result is ignored; the current one recovers the guests.
	s.Step(at.Add(time.Second), FenceResult{Node: "n1", Attempt: fence.Op, OK: true})
	if s.Node("n1").Status != NodeFailed {
		t.Fatal("stale fence result accepted")
	}
	a = s.Step(at.Add(2*time.Second), FenceResult{Node: "n1", Attempt: id, OK: true})
	// pinned may only run on n1; web (2 GiB) does not fit on n2; legacy does.
	if s.Node("n1").Fences != 1 || s.Guest("pinned").State != GuestRecovering || s.Guest("web").State != GuestRecovering ||
		s.Guest("legacy").State != GuestStarted || s.Guest("legacy").Node != "n2" || !hasKind(a, ActStart) {
		t.Fatalf("after fence: %+v %+v %v", s.Guest("pinned"), s.Guest("web"), a)
	}
}

func TestWatchdogDeadline(t *testing.T) {
	s := small(t)
	s.Config.Fencing = model.FencingWatchdog
	acts := s.Step(t0.Add(10*time.Second), NodeDown{Node: "n2"})
	if hasKind(acts, ActFence) {
		t.Fatal("watchdog mode drove a fence device")
	}
	tm := DefaultTimings()
	if a := s.Step(t0.Add(10*time.Second+tm.WatchdogWait()-time.Millisecond), Tick{}); s.Node("n2").Fences != 0 || hasKind(a, ActStart) {
		t.Fatal("fenced before the deadline")
	}
	s.Step(t0.Add(10*time.Second+tm.WatchdogWait()), Tick{})
	if s.Node("n2").Fences != 1 {
		t.Fatal("not fenced at the deadline")
	}
}

func TestUnknownEventPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	New(Config{}).Step(t0, nil)
}

func TestDefaultTimings(t *testing.T) {
	tm := DefaultTimings()
	// The lease must outlive a 5 s agent restart; a dead node's guests must
	// be able to run again well within 15 s with a fence device (lease +
	// fence 2 s + start 2 s) and 90 s with the watchdog.
	if tm.LeaseTTL <= 5*time.Second || tm.LeaseTTL+4*time.Second >= 15*time.Second {
		t.Errorf("lease TTL %v", tm.LeaseTTL)
	}
	if tm.LeaseTTL+tm.WatchdogTimeout+tm.WatchdogMargin+2*time.Second >= 90*time.Second || tm.FenceRetry > 10*time.Second || tm.Tick > 10*time.Second {
		t.Errorf("timings %+v", tm)
	}
}

func hasKind(acts []Action, k ActionKind) bool {
	for _, a := range acts {
		if a.Kind == k {
			return true
		}
	}
	return false
}
