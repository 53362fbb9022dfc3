package scenario

import (
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/model"
)

const rulesBase = "name: x\ncluster:\n  nodes: [{name: n1}, {name: n2}, {name: n3}]\n"

func TestPolicyKeys(t *testing.T) {
	src := rulesBase[:len("name: x\ncluster:\n")] + "  reserve: hosts 1\n" + rulesBase[len("name: x\ncluster:\n"):] + `guests:
  - {name: db}
  - {name: app, after: [db]}
  - {name: r1, node: n1}
  - {name: r2, node: n2}
affinity:
  - {name: rep, kind: apart, guests: [r1, r2]}
  - {name: st, kind: together, guests: [db, app], strength: soft}
  - {name: lic, kind: on, guests: [r1], hosts: [n1, n3]}
`
	sc, err := Parse("f.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if sc.Reserve != (model.Reserve{Hosts: 1}) {
		t.Errorf("reserve %+v", sc.Reserve)
	}
	if got := sc.Guests[1].Spec.After; len(got) != 1 || got[0] != "db" {
		t.Errorf("after %v", got)
	}
	want := []model.Rule{
		{Name: "rep", Kind: model.AffinityApart, Guests: []string{"r1", "r2"}},
		{Name: "st", Kind: model.AffinityTogether, Guests: []string{"db", "app"}, Soft: true},
		{Name: "lic", Kind: model.AffinityOn, Guests: []string{"r1"}, Hosts: []string{"n1", "n3"}},
	}
	if len(sc.Rules) != len(want) {
		t.Fatalf("rules %+v", sc.Rules)
	}
	for i := range want {
		if sc.Rules[i].Name != want[i].Name || sc.Rules[i].Kind != want[i].Kind || sc.Rules[i].Soft != want[i].Soft ||
			strings.Join(sc.Rules[i].Guests, ",") != strings.Join(want[i].Guests, ",") || strings.Join(sc.Rules[i].Hosts, ",") != strings.Join(want[i].Hosts, ",") {
			t.Errorf("rule %d: %+v, want %+v", i, sc.Rules[i], want[i])
		}
	}
	p, err := Parse("f.yaml", []byte(strings.Replace(src, "hosts 1", "percent 25", 1)))
	if err != nil || p.Reserve != (model.Reserve{Percent: 25}) {
		t.Fatalf("percent: %+v %v", p, err)
	}
}

func TestPolicyLoadErrors(t *testing.T) {
	withReserve := func(v string) string {
		return "name: x\ncluster:\n  reserve: " + v + "\n  nodes: [{name: n1}]\n"
	}
	cases := []struct{ name, src, want string }{
		{"reserve words", withReserve("some"), "f.yaml:3: cluster.reserve: \"some\" is not off"},
		{"reserve zero hosts", withReserve("hosts 0"), "cluster.reserve"},
		{"reserve percent over 100", withReserve("percent 101"), "cluster.reserve"},
		{"after unknown", rulesBase + "guests:\n  - {name: a, after: [zz]}\n", `f.yaml:5: guests.after: guest "a": unknown guest "zz"`},
		{"after itself", rulesBase + "guests:\n  - {name: a, after: [a]}\n", "cannot start after itself"},
		{"after cycle", rulesBase + "guests:\n  - {name: a, after: [c]}\n  - {name: b, after: [a]}\n  - {name: c, after: [b]}\n", "f.yaml:5: guests.after: start order has a cycle: a -> c -> b -> a"},
		{"after twice", rulesBase + "guests:\n  - {name: a}\n  - {name: b, after: [a, a]}\n", `"a" is listed twice`},
		{"rule unknown guest", rulesBase + "guests: [{name: a}]\naffinity:\n  - {name: r, kind: apart, guests: [a, zz]}\n", `f.yaml:6: affinity.guests: unknown guest "zz"`},
		{"rule unknown host", rulesBase + "guests: [{name: a}]\naffinity:\n  - {name: r, kind: on, guests: [a], hosts: [n9]}\n", `affinity.hosts: unknown node "n9"`},
		{"rule bad kind", rulesBase + "guests: [{name: a}, {name: b}]\naffinity:\n  - {name: r, kind: near, guests: [a, b]}\n", `affinity.kind: "near" is not together`},
		{"rule bad strength", rulesBase + "guests: [{name: a}, {name: b}]\naffinity:\n  - {name: r, kind: apart, guests: [a, b], strength: maybe}\n", `affinity.strength`},
		{"rule one guest", rulesBase + "guests: [{name: a}]\naffinity:\n  - {name: r, kind: apart, guests: [a]}\n", "at least 2 guests"},
		{"rule hosts on apart", rulesBase + "guests: [{name: a}, {name: b}]\naffinity:\n  - {name: r, kind: apart, guests: [a, b], hosts: [n1]}\n", "take no hosts"},
		{"rule on without hosts", rulesBase + "guests: [{name: a}]\naffinity:\n  - {name: r, kind: on, guests: [a]}\n", "affinity.hosts: required"},
		{"rule dup", rulesBase + "guests: [{name: a}, {name: b}]\naffinity:\n  - {name: r, kind: apart, guests: [a, b]}\n  - {name: r, kind: together, guests: [a, b], strength: soft}\n", `duplicate rule "r"`},
		{"rule contradiction", rulesBase + "guests: [{name: a}, {name: b}, {name: c}]\naffinity:\n  - {name: t1, kind: together, guests: [a, b]}\n  - {name: t2, kind: together, guests: [b, c]}\n  - {name: x, kind: apart, guests: [c, a]}\n", "hard together rules keep them on one host"},
		{"rule unknown key", rulesBase + "guests: [{name: a}, {name: b}]\naffinity:\n  - {name: r, kind: apart, guests: [a, b], weight: 3}\n", "affinity.weight: unknown key"},
		{"apart at t0", rulesBase + "guests: [{name: a, node: n1}, {name: b, node: n1}]\naffinity:\n  - {name: r, kind: apart, guests: [a, b]}\n", "both start on n1 at t=0"},
		{"together at t0", rulesBase + "guests: [{name: a, node: n1}, {name: b, node: n2}]\naffinity:\n  - {name: r, kind: together, guests: [a, b]}\n", "hard together rules keep it with a on n1"},
		{"on at t0", rulesBase + "guests: [{name: a, node: n1}]\naffinity:\n  - {name: r, kind: on, guests: [a], hosts: [n2]}\n", "a starts on n1 at t=0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(c.src))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}
