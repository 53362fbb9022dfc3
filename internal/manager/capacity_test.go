package manager

import (
	"errors"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/model"
)

// cpuState: n1 (4 CPUs, levels v1..v3), n2 (2 CPUs, v1..v2), with 2 vCPUs
// per CPU, 1 reserved (n1: 7 vCPUs, n2: 3), 1 GiB of 8 reserved for the
// host and 512 MiB of overhead per guest.
func cpuState(t *testing.T, c model.Capacity) *State {
	t.Helper()
	s := New(Config{Capacity: c})
	for _, n := range []string{"n1", "n2"} {
		if err := s.AddNode(n, 8*model.GiB, 4); err != nil {
			t.Fatal(err)
		}
	}
	s.Step(t0, Sync{Nodes: []NodeReport{
		{Name: "n1", BootID: "1", CPUs: 4, CPUModels: []string{"x86-64-v1", "x86-64-v2", "x86-64-v3"}},
		{Name: "n2", BootID: "1", CPUs: 2, CPUModels: []string{"x86-64-v1", "x86-64-v2"}},
	}})
	return s
}

func addGuest(t *testing.T, s *State, name string, mem int64, cpus int, cpuModel string) []Action {
	t.Helper()
	spec := model.DefaultGuestSpec(name)
	spec.Memory, spec.CPUs, spec.CPUModel = mem, cpus, cpuModel
	if err := s.AddGuest(spec, true); err != nil {
		t.Fatal(err)
	}
	return s.Step(t0, Tick{})
}

func startedOn(acts []Action, guest string) string {
	for _, a := range acts {
		if a.Kind == ActStart && a.Guest == guest {
			return a.Node
		}
	}
	return ""
}

func TestCPUCountedAndModel(t *testing.T) {
	c := model.Capacity{CPUOvercommit: 2, CPUReserve: 1, MemoryReserve: model.GiB, GuestOverhead: 512 * model.MiB}
	s := cpuState(t, c)
	if m := s.ClusterCPUModel(); m != "x86-64-v2" {
		t.Fatalf("cluster model %q, want the newest common level x86-64-v2", m)
	}
	// 6 vCPUs fit only n1 (7); it runs with the cluster's model.
	acts := addGuest(t, s, "big", model.GiB, 6, "")
	if startedOn(acts, "big") != "n1" {
		t.Fatalf("big: %v", acts)
	}
	for _, a := range acts {
		if a.Kind == ActStart && a.CPUModel != "x86-64-v2" {
			t.Fatalf("start with model %q", a.CPUModel)
		}
	}
	// 2 vCPUs: n1 has 1 left, so n2.
	if acts := addGuest(t, s, "two", model.GiB, 2, ""); startedOn(acts, "two") != "n2" {
		t.Fatalf("two: %v", acts)
	}
	// Memory: 7 GiB usable per host, each guest 1.5 GiB with overhead:
	// a 5 GiB guest (5.5 counted) fits either by memory, a 6 GiB one
	// neither; with 2 vCPUs neither has them (1 left on each).
	addGuest(t, s, "mem", 5*model.GiB, 2, "")
	g := s.Guest("mem")
	if g.State != GuestRecovering || g.Wait != "no node can take it: 2 without free vCPUs" {
		t.Fatalf("mem: %s, wait %q", g.State, g.Wait)
	}
	addGuest(t, s, "mem6", 6*model.GiB, 1, "")
	if g := s.Guest("mem6"); g.Wait != "no node can take it: 2 without room" {
		t.Fatalf("mem6: %s, wait %q", g.State, g.Wait)
	}
	// A guest asking for x86-64-v3 can only go to n1.
	addGuest(t, s, "v3", 256*model.MiB, 1, "x86-64-v3")
	if g := s.Guest("v3"); g.Node != "n1" || g.CPUModel != "x86-64-v3" {
		t.Fatalf("v3 on %q with %q", g.Node, g.CPUModel)
	}
	for _, name := range []string{"big", "v3"} {
		g := s.Guest(name)
		s.Step(t0, GuestResult{Guest: name, Node: g.Node, Op: g.Op.ID, Result: ResultStarted})
	}
	if err := s.Validate(Command{Kind: CmdMigrate, Guest: "v3", Node: "n2"}); !errors.Is(err, ErrCPUModel) {
		t.Fatalf("migrate v3 to n2: %v", err)
	}
	if err := s.Validate(Command{Kind: CmdMigrate, Guest: "big", Node: "n2"}); !errors.Is(err, ErrNoRoom) && !errors.Is(err, ErrNoCPU) {
		t.Fatalf("migrate big to n2: %v", err)
	}
	used, capa := s.CPUUsage()
	if used["n1"] != 7000 || capa["n1"] != 7000 || used["n2"] != 2000 || capa["n2"] != 3000 {
		t.Fatalf("cpu usage %v of %v", used, capa)
	}
	// n1 fails: a v3 guest has nowhere to go; the reason names the model.
	s.Step(t0, NodeDown{Node: "n1"})
	s.Step(t0, FenceResult{Node: "n1", Attempt: s.Node("n1").Fence.Attempt, OK: true})
	if g := s.Guest("v3"); g.State != GuestRecovering || !strings.Contains(g.Wait, "1 cannot offer its CPU model x86-64-v3") {
		t.Fatalf("v3 after n1 failed: %s, wait %q", g.State, g.Wait)
	}
}

func TestCapacityOffByDefault(t *testing.T) {
	s := cpuState(t, model.Capacity{})
	for i := 0; i < 3; i++ {
		addGuest(t, s, string(rune('a'+i)), 2*model.GiB, 16, "")
	}
	for _, name := range []string{"a", "b", "c"} {
		if g := s.Guest(name); g.State != GuestStarted {
			t.Fatalf("%s: %s (%s)", name, g.State, g.Wait)
		}
	}
	if used, _ := s.CPUUsage(); used != nil {
		t.Fatalf("vCPUs counted while off: %v", used)
	}
}

func TestAdmissionCountsCPUs(t *testing.T) {
	c := model.Capacity{CPUOvercommit: 2, CPUReserve: 1}
	s := cpuState(t, c)
	s.Config.Reserve = model.Reserve{Hosts: 1}
	addGuest(t, s, "a", model.GiB, 3, "")
	// 10 vCPUs in all, the largest host (7) reserved: 3 protected, 1 more
	// would break the promise although memory is plenty.
	spec := model.DefaultGuestSpec("b")
	err := s.Admit(spec)
	if !errors.Is(err, ErrAdmission) || !strings.Contains(err.Error(), "3 vCPUs protected + 1 > 10 vCPU capacity - 7 reserved") {
		t.Fatalf("admit b: %v", err)
	}
}

// A stop whose result was lost (no manager when it completed) is a stop
// when the next manager's Sync no longer finds the guest, not a crash: a
// crash would keep its place on the node for a restart (found by the
// random test: a preemption victim's restart took the room it freed).
func TestLostStopResultIsAStop(t *testing.T) {
	s := cpuState(t, model.Capacity{})
	addGuest(t, s, "a", model.GiB, 1, "")
	g := s.Guest("a")
	s.Step(t0, GuestResult{Guest: "a", Node: g.Node, Op: g.Op.ID, Result: ResultStarted})
	s.Step(t0, Command{Kind: CmdStop, Guest: "a"})
	if g.Op == nil || g.Op.Kind != OpStop {
		t.Fatalf("no stop in flight: %+v", g.Op)
	}
	acts := s.Step(t0, Sync{Nodes: []NodeReport{{Name: "n1", BootID: "1"}, {Name: "n2", BootID: "1"}}})
	if !hasLog(acts, "a is no longer running on "+g.Node+": its stop completed") || g.State != GuestStopped || g.Running || g.Restarts != 0 {
		t.Fatalf("a: %s running %v restarts %d; %v", g.State, g.Running, g.Restarts, acts)
	}
}
