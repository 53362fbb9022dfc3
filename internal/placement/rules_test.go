package placement

import (
	"strings"
	"testing"
)

func ruled(name string, mem int64, r *Rules) Request {
	q := NewRequest(name, mem, nil)
	q.Rules = r
	return q
}

func TestHardApart(t *testing.T) {
	snap := &Snapshot{Nodes: nodes(Node{Name: "a", Memory: 8 * G}, Node{Name: "b", Memory: 8 * G, Used: 6 * G}), Where: whereOf(map[string][]int{"r2": {0}})}
	got := Plan(snap, []Request{ruled("r1", G, &Rules{Apart: []string{"r2"}})})
	if got[0].Node != 1 {
		t.Fatalf("r1 on %d, want 1 (the fuller node without r2)", got[0].Node)
	}
	// Two replicas placed in one plan see each other.
	snap = &Snapshot{Nodes: nodes(Node{Name: "a", Memory: 8 * G}, Node{Name: "b", Memory: 8 * G, Used: 7 * G})}
	got = Plan(snap, []Request{ruled("r1", G, &Rules{Apart: []string{"r2"}}), ruled("r2", G, &Rules{Apart: []string{"r1"}})})
	if got[0].Node != 0 || got[1].Node != 1 {
		t.Fatalf("got %+v", got)
	}
	// No node without a peer: it waits, and Why names the peer.
	snap = &Snapshot{Nodes: nodes(Node{Name: "a", Memory: 8 * G}), Where: whereOf(map[string][]int{"r2": {0}})}
	r := ruled("r1", G, &Rules{Apart: []string{"r2"}})
	if got = Plan(snap, []Request{r}); got[0].Node != -1 {
		t.Fatalf("placed beside its peer: %+v", got)
	}
	if why, rule := Why(snap, &r); !rule || !strings.Contains(why, "apart from (r2)") {
		t.Fatalf("why %q %v", why, rule)
	}
	// Prefer is not taken when it breaks the rule.
	r.Prefer = 0
	if a := NewPlanner(snap).Place(&r); a.Node != -1 {
		t.Fatalf("preferred node with the peer taken")
	}
}

func TestHardTogetherUnit(t *testing.T) {
	grp := func(me string, with ...string) *Rules { return &Rules{Group: "a", With: with} }
	// Both need a node: the unit needs 6GiB, only b has it.
	snap := &Snapshot{Nodes: nodes(Node{Name: "a", Memory: 8 * G, Used: 3 * G}, Node{Name: "b", Memory: 8 * G, Used: 2 * G})}
	got := Plan(snap, []Request{ruled("x", 3*G, grp("x", "y")), ruled("y", 3*G, grp("y", "x"))})
	if got[0].Node != 1 || got[1].Node != 1 {
		t.Fatalf("unit split or misplaced: %+v", got)
	}
	// A member that runs pins the other to its node, even a fuller one.
	snap = &Snapshot{Nodes: nodes(Node{Name: "a", Memory: 8 * G}, Node{Name: "b", Memory: 8 * G, Used: 6 * G}), Where: whereOf(map[string][]int{"y": {1}})}
	if got = Plan(snap, []Request{ruled("x", G, grp("x", "y"))}); got[0].Node != 1 {
		t.Fatalf("x on %d, want 1 with y", got[0].Node)
	}
	// No room beside it: waits.
	if got = Plan(snap, []Request{ruled("x", 3*G, grp("x", "y"))}); got[0].Node != -1 {
		t.Fatalf("x placed away from y: %+v", got)
	}
	// No node fits the whole unit: none is placed.
	snap = &Snapshot{Nodes: nodes(Node{Name: "a", Memory: 4 * G}, Node{Name: "b", Memory: 4 * G})}
	if got = Plan(snap, []Request{ruled("x", 3*G, grp("x", "y")), ruled("y", 3*G, grp("y", "x"))}); got[0].Node != -1 || got[1].Node != -1 {
		t.Fatalf("unit split: %+v", got)
	}
}

// A running member whose move (here a failback) cannot be made does not
// keep the member that needs a node from going beside it (random test seed
// 3161: the waiting member was left without a node for good).
func TestHardTogetherOptionalMove(t *testing.T) {
	grp := func(with ...string) *Rules { return &Rules{Group: "a", With: with} }
	snap := &Snapshot{Nodes: nodes(Node{Name: "a", Memory: 8 * G}, Node{Name: "b", Memory: 8 * G, Used: 3 * G}), Where: whereOf(map[string][]int{"y": {1}})}
	// y runs on b and would fail back to a, which its host rule forbids.
	y := ruled("y", 3*G, grp("x"))
	y.Tiers, y.MaxTier, y.Unfit, y.Optional, y.Priority = [][]int{{0}, {1}}, 1, []int{0}, true, 10
	x := ruled("x", G, grp("y"))
	got := Plan(snap, []Request{y, x})
	if got[0].Node != -1 || got[1].Node != 1 {
		t.Fatalf("got %+v: want y to stay (-1) and x beside it on b (1)", got)
	}
	// The same group with y not marked Optional moves as one or not at all.
	y.Optional = false
	if got = Plan(snap, []Request{y, x}); got[0].Node != -1 || got[1].Node != -1 {
		t.Fatalf("got %+v: want the unit unplaced", got)
	}
}

func TestSoftRules(t *testing.T) {
	snap := &Snapshot{Nodes: nodes(Node{Name: "a", Memory: 8 * G}, Node{Name: "b", Memory: 8 * G, Used: 6 * G}), Where: whereOf(map[string][]int{"p": {0}})}
	if got := Plan(snap, []Request{ruled("x", G, &Rules{SoftApart: []string{"p"}})}); got[0].Node != 1 {
		t.Fatalf("soft apart: %+v", got)
	}
	snap.Nodes[1].Used = 8 * G
	if got := Plan(snap, []Request{ruled("x", G, &Rules{SoftApart: []string{"p"}})}); got[0].Node != 0 {
		t.Fatalf("soft apart must give way: %+v", got)
	}
	snap.Nodes[1].Used = 0
	if got := Plan(snap, []Request{ruled("x", G, &Rules{SoftOn: []int{1}})}); got[0].Node != 1 {
		t.Fatalf("soft on: %+v", got)
	}
	if got := Plan(snap, []Request{ruled("x", G, &Rules{SoftOff: []int{1}, SoftTogether: []string{"p"}})}); got[0].Node != 0 {
		t.Fatalf("soft off/together: %+v", got)
	}
	// Tiers come first: a soft rule never pulls a guest out of its most
	// preferred tier with room.
	q := ruled("x", G, &Rules{SoftOn: []int{1}})
	q.Tiers = [][]int{{0}, {1}}
	if got := Plan(snap, []Request{q}); got[0].Node != 0 {
		t.Fatalf("soft rule beat the tier: %+v", got)
	}
}

func whereOf(m map[string][]int) func(string) []int {
	return func(g string) []int { return m[g] }
}
