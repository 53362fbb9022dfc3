package placement

import (
	"testing"

	"github.com/haven-ha/haven/internal/model"
)

const G = model.GiB

func nodes(spec ...Node) []Node {
	for i := range spec {
		spec[i].Eligible = spec[i].Eligible || spec[i].Memory > 0
	}
	return spec
}

func TestChoose(t *testing.T) {
	cases := []struct {
		name  string
		nodes []Node
		req   Request
		want  int
		clear bool
	}{
		{"lowest fraction", nodes(Node{Name: "a", Memory: 8 * G, Used: 4 * G}, Node{Name: "b", Memory: 16 * G, Used: 4 * G}), NewRequest("g", G, nil), 1, false},
		{"exact fraction tie then fewest guests", nodes(Node{Name: "a", Memory: 4 * G, Used: G, Guests: 3}, Node{Name: "b", Memory: 8 * G, Used: 3 * G, Guests: 1}), NewRequest("g", G, nil), 1, false},
		{"full tie then name", nodes(Node{Name: "a", Memory: 4 * G}, Node{Name: "b", Memory: 4 * G}), NewRequest("g", G, nil), 0, false},
		{"no fit", nodes(Node{Name: "a", Memory: 4 * G, Used: 4 * G}), NewRequest("g", G, nil), -1, false},
		{"ineligible", []Node{{Name: "a", Memory: 4 * G}}, NewRequest("g", G, nil), -1, false},
		{"preferred tier wins over emptier node", nodes(Node{Name: "a", Memory: 4 * G, Used: 3 * G}, Node{Name: "b", Memory: 4 * G}), NewRequest("g", G, [][]int{{0}, {1}}), 0, false},
		{"next tier when first full", nodes(Node{Name: "a", Memory: 4 * G, Used: 4 * G}, Node{Name: "b", Memory: 4 * G}), NewRequest("g", G, [][]int{{0}, {1}}), 1, false},
		{"restricted: no tier has room", nodes(Node{Name: "a", Memory: 4 * G, Used: 4 * G}, Node{Name: "b", Memory: 4 * G}), NewRequest("g", G, [][]int{{0}}), -1, false},
		{"max tier limits failback", nodes(Node{Name: "a", Memory: 4 * G, Used: 4 * G}, Node{Name: "b", Memory: 4 * G}), Request{Guest: "g", Memory: G, Tiers: [][]int{{0}, {1}, {2}}, MaxTier: 1, LastFailed: -1, Prefer: -1}, -1, false},
		{"tried skipped", nodes(Node{Name: "a", Memory: 4 * G}, Node{Name: "b", Memory: 4 * G, Used: G}), Request{Guest: "g", Memory: G, Tried: []int{0}, LastFailed: -1, Prefer: -1}, 1, false},
		{"all tried: cleared except last failed", nodes(Node{Name: "a", Memory: 4 * G}, Node{Name: "b", Memory: 4 * G, Used: G}), Request{Guest: "g", Memory: G, Tried: []int{0, 1}, LastFailed: 1, Prefer: -1}, 0, true},
		{"only last failed left", nodes(Node{Name: "a", Memory: 4 * G}), Request{Guest: "g", Memory: G, Tried: []int{0}, LastFailed: 0, Prefer: -1}, -1, false},
		{"prefer", nodes(Node{Name: "a", Memory: 4 * G}, Node{Name: "b", Memory: 4 * G, Used: 3 * G}), Request{Guest: "g", Memory: G, Prefer: 1, LastFailed: -1}, 1, false},
		{"prefer only, no room", nodes(Node{Name: "a", Memory: 4 * G}, Node{Name: "b", Memory: 4 * G, Used: 4 * G}), Request{Guest: "g", Memory: G, Prefer: 1, PreferOnly: true, LastFailed: -1}, -1, false},
		{"prefer with its own reservation", nodes(Node{Name: "a", Memory: 4 * G, Used: 4 * G}), Request{Guest: "g", Memory: G, Prefer: 0, PreferOnly: true, Reserved: G, LastFailed: -1}, 0, false},
		{"huge sizes compare exactly", nodes(Node{Name: "a", Memory: 4096 * model.TiB, Used: 4096*model.TiB - 2*G}, Node{Name: "b", Memory: 4096*model.TiB - 1, Used: 4096*model.TiB - 2*G - 1}), NewRequest("g", G, nil), 1, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := Choose(c.nodes, &c.req)
			if a.Node != c.want || a.ClearedTried != c.clear {
				t.Fatalf("got node %d cleared %v, want %d %v", a.Node, a.ClearedTried, c.want, c.clear)
			}
		})
	}
}

func TestPlanNameOrderSeesEarlier(t *testing.T) {
	snap := &Snapshot{Nodes: nodes(Node{Name: "a", Memory: 4 * G}, Node{Name: "b", Memory: 4 * G})}
	reqs := []Request{NewRequest("zz", 3*G, nil), NewRequest("aa", 3*G, nil), NewRequest("mm", 3*G, nil)}
	got := Plan(snap, reqs)
	if got[1].Node != 0 || got[0].Node != -1 || got[2].Node != 1 {
		t.Fatalf("plan %+v", got)
	}
	if snap.Nodes[0].Used != 0 {
		t.Fatal("Plan changed the snapshot")
	}
}

func TestTiers(t *testing.T) {
	idx := func(n string) int { return map[string]int{"a": 0, "b": 1, "c": 2, "d": 3}[n] }
	m := func(ns ...string) (out []model.DomainMember) {
		for _, n := range ns {
			out = append(out, model.DomainMember{Node: n})
		}
		return out
	}
	cases := []struct {
		name string
		d    model.Domain
		want string
	}{
		{"unordered", model.Domain{Members: m("c", "a")}, "[[0 2] [1 3]]"},
		{"unordered restricted", model.Domain{Members: m("c", "a"), Restricted: true}, "[[0 2]]"},
		{"ordered", model.Domain{Members: m("c", "a"), Ordered: true}, "[[2] [0] [1 3]]"},
		{"priorities", model.Domain{Members: []model.DomainMember{{Node: "a", Priority: 1}, {Node: "b", Priority: 5}, {Node: "c", Priority: 5}}, Restricted: true}, "[[1 2] [0]]"},
		{"priorities with zero", model.Domain{Members: []model.DomainMember{{Node: "a", Priority: 0}, {Node: "b", Priority: 3}}}, "[[1] [0] [2 3]]"},
	}
	for _, c := range cases {
		got := Tiers(c.d, idx, 4)
		if s := fmtTiers(got); s != c.want {
			t.Errorf("%s: %s, want %s", c.name, s, c.want)
		}
	}
}

func fmtTiers(t [][]int) string {
	s := "["
	for i, tier := range t {
		if i > 0 {
			s += " "
		}
		s += "["
		for j, n := range tier {
			if j > 0 {
				s += " "
			}
			s += string(rune('0' + n))
		}
		s += "]"
	}
	return s + "]"
}

func TestCompareFractions(t *testing.T) {
	if CompareFractions(1, 3, 2, 6) != 0 || CompareFractions(1, 3, 1, 2) != -1 || CompareFractions(^uint64(0), 2, ^uint64(0)-1, 2) != 1 {
		t.Fatal("CompareFractions")
	}
}
