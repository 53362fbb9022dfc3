package manager

import (
	"testing"
	"time"
)

// A new term after a switch outage (no side was quorate, so the hosts'
// leases held and no host was failed): a host's inventory lacks guests its
// self-fence killed. They died with the node, as the contract's self-fence
// (a power-off) says: recovered as after a node failure, no restart or
// move counted. A guest missing without a self-fence is a crash.
func TestSelfFencedGuestsAreNotCrashes(t *testing.T) {
	for _, fenced := range []bool{true, false} {
		s := small(t)
		r := NodeReport{Name: "n1", BootID: "a", Running: []string{"legacy", "pinned"}}
		if fenced {
			r.SelfFenced = []string{"web"}
		}
		acts := s.Step(t0.Add(time.Minute), Sync{Nodes: []NodeReport{r, {Name: "n2", BootID: "b", Running: []string{"big"}}}})
		g := s.Guest("web")
		if !fenced {
			if g.Restarts != 1 || g.State != GuestRecovering {
				t.Errorf("web gone without a self-fence: %s, restarts %d; want recovering after a crash, restart 1", g.State, g.Restarts)
			}
			continue
		}
		if !hasKind(acts, ActStart) || g.Op == nil {
			t.Fatalf("self-fenced web not started again at once: %v", acts)
		}
		if g.Restarts != 0 || g.Moves != 0 || len(g.Tried) != 0 {
			t.Errorf("self-fenced web counted as trouble: restarts %d, moves %d, tried %v", g.Restarts, g.Moves, g.Tried)
		}
	}
}
