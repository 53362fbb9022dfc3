package manager

import (
	"errors"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/model"
)

func TestReconfigure(t *testing.T) {
	s := New(Config{})
	for _, n := range []string{"a", "b"} {
		if err := s.AddNode(n, 8*model.GiB, 4); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Unix(0, 0)
	s.Step(now, Sync{Nodes: []NodeReport{{Name: "a"}, {Name: "b"}}})
	spec := model.DefaultGuestSpec("vm")
	spec.Node = "a"
	if err := s.AddGuest(spec, true); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveGuest("vm"); !errors.Is(err, ErrGuestActive) {
		t.Fatalf("RemoveGuest of a running guest = %v, want ErrGuestActive", err)
	}
	if err := s.PutDomain(model.Domain{Name: "pref-b", Members: []model.DomainMember{{Node: "b"}}}); err != nil {
		t.Fatal(err)
	}
	spec.Domain = "pref-b"
	spec.State = model.DesiredStopped // ignored: desired state changes by command only
	if err := s.UpdateGuestSpec(spec); err != nil {
		t.Fatal(err)
	}
	if g := s.Guest("vm"); g.Spec.State != model.DesiredStarted || g.Spec.Domain != "pref-b" {
		t.Fatalf("after update: %+v", g.Spec)
	}
	// The new domain prefers b: the manager fails the guest back there.
	acts := s.Step(now, Tick{})
	var migrated bool
	for _, a := range acts {
		if a.Kind == ActMigrate && a.Guest == "vm" && a.Target == "b" {
			migrated = true
		}
	}
	if !migrated {
		t.Fatalf("after moving vm to a domain preferring b, actions %v lack a migration to b", acts)
	}
	if err := s.RemoveDomain("pref-b"); err == nil {
		t.Fatal("RemoveDomain of a domain in use succeeded")
	}
	if err := s.PutDomain(model.Domain{Name: "x", Members: []model.DomainMember{{Node: "zz"}}}); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("PutDomain with an unknown member = %v", err)
	}
}

func TestPoolsLimitPlacement(t *testing.T) {
	s := New(Config{})
	for _, n := range []string{"a", "b"} {
		if err := s.AddNode(n, 8*model.GiB, 4); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Unix(0, 0)
	s.Step(now, Sync{Nodes: []NodeReport{{Name: "a"}, {Name: "b"}}})
	// Pool "nfs" is not usable on a: the guest on it can only go to b,
	// although a is the tie-break winner by name.
	if err := s.SetNodePools("a", []string{"nfs"}); err != nil {
		t.Fatal(err)
	}
	spec := model.DefaultGuestSpec("db")
	spec.Pools = []string{"nfs"}
	if err := s.AddGuest(spec, false); err != nil {
		t.Fatal(err)
	}
	acts := s.Step(now, Tick{})
	var started string
	for _, a := range acts {
		if a.Kind == ActStart && a.Guest == "db" {
			started = a.Node
		}
	}
	if started != "b" {
		t.Fatalf("db started on %q, want b (a lacks its pool); actions %v", started, acts)
	}
	var op uint64
	for _, a := range acts {
		if a.Kind == ActStart {
			op = a.Op
		}
	}
	s.Step(now, GuestResult{Guest: "db", Node: "b", Op: op, Result: ResultStarted})
	if err := s.Validate(Command{Kind: CmdRelocate, Guest: "db", Node: "a"}); !errors.Is(err, ErrPoolMissing) {
		t.Fatalf("relocate to a node without the pool = %v, want ErrPoolMissing", err)
	}
	if err := s.SetNodePools("zz", nil); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("SetNodePools on an unknown node = %v", err)
	}
}

// A guest whose disks only its node sees never moves: not by failback, not
// after its node fails, not by an operator; it waits for its node.
func TestPinnedGuestStaysHome(t *testing.T) {
	s := New(Config{})
	for _, n := range []string{"a", "b"} {
		if err := s.AddNode(n, 8*model.GiB, 4); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Unix(0, 0)
	s.Step(now, Sync{Nodes: []NodeReport{{Name: "a", Running: []string{"local"}}, {Name: "b"}}})
	spec := model.DefaultGuestSpec("local")
	spec.Node, spec.Pinned = "a", true
	if err := s.AddGuest(spec, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(Command{Kind: CmdMigrate, Guest: "local", Node: "b"}); !errors.Is(err, ErrPinned) {
		t.Fatalf("migrate of a pinned guest = %v, want ErrPinned", err)
	}
	// Its node fails and is fenced: the guest is not started on b.
	var attempt uint64
	for _, a := range append(s.Step(now, NodeDown{Node: "a"}), s.Step(now, Tick{})...) {
		if a.Kind == ActFence {
			attempt = a.Op
		}
	}
	for _, a := range s.Step(now.Add(time.Second), FenceResult{Node: "a", Attempt: attempt, OK: true}) {
		if a.Kind == ActStart && a.Guest == "local" {
			t.Fatalf("pinned guest started on %s after its node failed", a.Node)
		}
	}
	if g := s.Guest("local"); g.State != GuestRecovering || g.Node != "a" {
		t.Fatalf("pinned guest after its node failed: %s on %q, want recovering on a", g.State, g.Node)
	}
	// Its node comes back: it starts there.
	var started string
	for _, a := range s.Step(now.Add(time.Minute), NodeUp{NodeReport{Name: "a"}}) {
		if a.Kind == ActStart && a.Guest == "local" {
			started = a.Node
		}
	}
	if started != "a" {
		t.Fatalf("pinned guest started on %q when its node came back, want a", started)
	}
}
