package placement

import (
	"slices"
	"testing"
)

func TestOrderPriorityThenName(t *testing.T) {
	reqs := []Request{
		NewRequest("b", 1, nil), NewRequest("a", 1, nil), NewRequest("z", 1, nil), NewRequest("c", 1, nil),
	}
	reqs[2].Priority = 900
	reqs[3].Priority = 10
	var got []string
	for _, i := range Order(reqs) {
		got = append(got, reqs[i].Guest)
	}
	if want := []string{"z", "c", "a", "b"}; !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}

func TestPreempt(t *testing.T) {
	const G = 1 << 30
	snap := Snapshot{Nodes: []Node{
		{Name: "n1", Memory: 8 * G, Used: 8 * G, Guests: 3, Eligible: true},
		{Name: "n2", Memory: 10 * G, Used: 10 * G, Guests: 2, Eligible: true},
		{Name: "n3", Memory: 8 * G, Eligible: false},
	}}
	victims := [][]Victim{
		{{"a1", 3 * G, 0, 0}, {"a2", 3 * G, 0, 0}, {"a3", 2 * G, 0, 0}},
		{{"b1", 8 * G, 0, 1}, {"b2", 2 * G, 0, 50}},
		nil,
	}
	r := NewRequest("g", 6*G, nil)
	r.Priority = 100
	p := NewPlanner(&snap)
	if a := p.Place(&r); a.Node >= 0 {
		t.Fatalf("placed without room on %d", a.Node)
	}
	taken := map[string]bool{}
	pr := p.Preempt(&r, victims, taken)
	// n1 needs two stops (a1, a2), n2 one (b1, the lowest priority).
	if pr.Node != 1 || !slices.Equal(pr.Victims, []int{0}) || !taken["b1"] {
		t.Fatalf("preempt = %+v, taken %v; want b1 on n2", pr, taken)
	}
	// The victim still counts until it stops: no room for anyone else yet.
	if n := p.Nodes()[1]; n.Used != 16*G {
		t.Errorf("n2 used %d, want the victim and g counted (16GiB)", n.Used)
	}
	// A second guest of the same priority finds b1 taken: on n2 only b2
	// (priority 50) remains, which does not make room; n1 needs two stops.
	r2 := NewRequest("h", 6*G, nil)
	r2.Priority = 100
	pr = p.Preempt(&r2, victims, taken)
	if pr.Node != 0 || !slices.Equal(pr.Victims, []int{0, 1}) {
		t.Fatalf("second preempt = %+v; want a1, a2 on n1", pr)
	}
	// Equal priority is never preempted.
	r3 := NewRequest("e", 2*G, nil)
	r3.Priority = 0
	if pr = p.Preempt(&r3, victims, taken); pr.Node >= 0 {
		t.Fatalf("preempted for a guest of priority 0: %+v", pr)
	}
	// A guest of higher priority than b1 fits in the room b1's stop frees on
	// n2 (10GiB - b2 - g = 2GiB): it waits for that, stopping nothing more,
	// rather than stopping a guest on n1.
	r5 := NewRequest("f", 2*G, nil)
	r5.Priority = 100
	if pr = p.Preempt(&r5, victims, taken); pr.Node != 1 || len(pr.Victims) != 0 {
		t.Fatalf("preempt into freed room = %+v; want n2 with no stop", pr)
	}
	// Tiers first: in a domain preferring n1, n1 wins although it needs
	// more stops.
	p = NewPlanner(&snap)
	r4 := NewRequest("t", 6*G, [][]int{{0}, {1}})
	r4.Priority = 100
	if pr = p.Preempt(&r4, victims, map[string]bool{}); pr.Node != 0 {
		t.Fatalf("tiered preempt = %+v; want n1", pr)
	}
}
