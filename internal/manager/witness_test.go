package manager

import (
	"errors"
	"testing"

	"github.com/haven-ha/haven/internal/model"
)

// A node that reports itself a witness (NodeReport.Witness, from its
// agent's facts) is never a target, never placed onto and never fenced; a
// later report without the mark makes it an ordinary node again.
func TestWitnessFromReports(t *testing.T) {
	s := small(t)
	if s.Node("n3").Witness {
		t.Fatal("n3 is a witness before any report says so")
	}
	s.Step(t0, NodeUp{NodeReport{Name: "n3", BootID: "c", Memory: 64 * model.GiB, Witness: true}})
	if got := s.Witnesses(); len(got) != 1 || got[0] != "n3" {
		t.Fatalf("witnesses %v, want [n3]", got)
	}
	if err := s.Validate(Command{Kind: CmdMigrate, Guest: "web", Node: "n3"}); !errors.Is(err, ErrWitness) {
		t.Errorf("migrate to a witness: %v, want ErrWitness", err)
	}
	if err := s.Validate(Command{Kind: CmdRelocate, Guest: "off", Node: "n3"}); !errors.Is(err, ErrWitness) {
		t.Errorf("relocate to a witness: %v, want ErrWitness", err)
	}
	// A new guest with no room anywhere else waits rather than go to the
	// witness's 64 GiB.
	spec := model.DefaultGuestSpec("huge")
	spec.Memory = 9 * model.GiB
	if err := s.AddGuest(spec, false); err != nil {
		t.Fatal(err)
	}
	for _, a := range s.Step(t0, Tick{}) {
		if a.Kind == ActStart && a.Node == "n3" {
			t.Fatalf("started %s on the witness", a.Guest)
		}
	}
	if g := s.Guest("huge"); g.State != GuestRecovering {
		t.Fatalf("huge is %s, want recovering", g.State)
	}
	// Its failure fences nothing.
	for _, a := range s.Step(t0, NodeDown{Node: "n3"}) {
		if a.Kind == ActFence {
			t.Fatalf("fenced the witness: %v", a)
		}
	}
	if n := s.Node("n3"); n.Status != NodeOffline || n.Fence != nil {
		t.Fatalf("witness after its failure: %s fence %+v", n.Status, n.Fence)
	}
	// Back without the mark: an ordinary node that takes the guest.
	acts := s.Step(t0, NodeUp{NodeReport{Name: "n3", BootID: "d", Memory: 64 * model.GiB}})
	started := false
	for _, a := range acts {
		started = started || (a.Kind == ActStart && a.Guest == "huge" && a.Node == "n3")
	}
	if s.Node("n3").Witness || !started {
		t.Fatalf("n3 witness %v, huge started there %v", s.Node("n3").Witness, started)
	}
}
