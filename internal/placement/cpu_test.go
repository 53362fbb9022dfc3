package placement

import (
	"slices"
	"strings"
	"testing"
)

func TestCPUFit(t *testing.T) {
	// a has the most free memory but only 1.5 vCPUs free: a 2-vCPU guest
	// goes to b; a guest that does not count vCPUs may still take a.
	snap := &Snapshot{Nodes: nodes(
		Node{Name: "a", Memory: 16 * G, CPUs: 8000, CPUUsed: 6500},
		Node{Name: "b", Memory: 8 * G, Used: 4 * G, CPUs: 8000},
	)}
	r := NewRequest("g", G, nil)
	r.CPUs = 2000
	if a := Plan(snap, []Request{r}); a[0].Node != 1 {
		t.Fatalf("2 vCPUs placed on %d, want b", a[0].Node)
	}
	if a := Plan(snap, []Request{NewRequest("g", G, nil)}); a[0].Node != 0 {
		t.Fatalf("uncounted guest placed on %d, want a", a[0].Node)
	}
	// Two guests in one plan see each other's vCPUs: b has 8, so the
	// second 5-vCPU guest waits.
	r1, r2 := NewRequest("g1", G, nil), NewRequest("g2", G, nil)
	r1.CPUs, r2.CPUs = 5000, 5000
	got := Plan(snap, []Request{r1, r2})
	if got[0].Node != 1 || got[1].Node != -1 {
		t.Fatalf("plan %+v, want g1 on b and g2 waiting", got)
	}
	// Why reads the snapshot (before the plan): a lacks vCPUs.
	why, ruled := Why(snap, &r2)
	if !strings.Contains(why, "1 without free vCPUs") || ruled {
		t.Errorf("why %q (ruled %v)", why, ruled)
	}
}

func TestCPUModelWhy(t *testing.T) {
	snap := &Snapshot{Nodes: nodes(Node{Name: "a", Memory: 8 * G}, Node{Name: "b", Memory: 8 * G})}
	r := NewRequest("g", G, nil)
	r.Unfit, r.NoModel, r.CPUModel = []int{0, 1}, []int{0, 1}, "x86-64-v3"
	if a := Plan(snap, []Request{r}); a[0].Node != -1 {
		t.Fatalf("placed on %d a node without its model", a[0].Node)
	}
	why, ruled := Why(snap, &r)
	if why != "no node can take it: 2 cannot offer its CPU model x86-64-v3" || !ruled {
		t.Errorf("why %q (ruled %v)", why, ruled)
	}
}

func TestPreemptFreesCPUs(t *testing.T) {
	// n1 has memory to spare but no vCPUs: preemption stops the
	// low-priority guests until the vCPUs fit, lowest priority first.
	snap := Snapshot{Nodes: []Node{{Name: "n1", Memory: 32 * G, Used: 3 * G, Guests: 3, Eligible: true, CPUs: 4000, CPUUsed: 4000}}}
	victims := [][]Victim{{{"a", G, 1000, 5}, {"b", G, 2000, 1}, {"c", G, 1000, 9}}}
	r := NewRequest("g", G, nil)
	r.CPUs, r.Priority = 2500, 10
	p := NewPlanner(&snap)
	if a := p.Place(&r); a.Node >= 0 {
		t.Fatalf("placed without vCPUs on %d", a.Node)
	}
	pr := p.Preempt(&r, victims, map[string]bool{})
	// b (priority 1, 2 vCPUs) then a (priority 5) free 3 vCPUs.
	if pr.Node != 0 || !slices.Equal(pr.Victims, []int{1, 0}) {
		t.Fatalf("preempt %+v, want b then a on n1", pr)
	}
	if n := p.Nodes()[0]; n.CPUUsed != 6500 {
		t.Errorf("n1 counts %d thousandths, want 6500 (g counted, victims until they stop)", n.CPUUsed)
	}
}
