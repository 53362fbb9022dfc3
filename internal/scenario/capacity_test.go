package scenario

import (
	"slices"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/model"
)

func TestCapacityKeys(t *testing.T) {
	src := `name: x
cluster:
  cpu_overcommit: 1.5
  cpu_reserve: 2
  memory_reserve: 1GiB
  guest_overhead: 64MiB
  cpu_model: x86-64-v2
  nodes:
    - {name: n1, cpus: 8, cpu_models: [x86-64-v1, x86-64-v2]}
    - {name: n2}
guests:
  - {name: a, node: n1, cpus: 4, cpu_model: host}
  - {name: b, cpu_model: x86-64-v1}
`
	sc, err := Parse("f.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := model.Capacity{CPUOvercommit: 1.5, CPUReserve: 2, MemoryReserve: model.GiB, GuestOverhead: 64 * model.MiB, CPUModel: "x86-64-v2"}
	if sc.Capacity != want {
		t.Errorf("capacity %+v, want %+v", sc.Capacity, want)
	}
	if !slices.Equal(sc.Nodes[0].CPUModels, []string{"x86-64-v1", "x86-64-v2"}) || sc.Nodes[1].CPUModels != nil {
		t.Errorf("node models %v %v", sc.Nodes[0].CPUModels, sc.Nodes[1].CPUModels)
	}
	if sc.Guests[0].Spec.CPUModel != "host" || sc.Guests[1].Spec.CPUModel != "x86-64-v1" {
		t.Errorf("guest models %q %q", sc.Guests[0].Spec.CPUModel, sc.Guests[1].Spec.CPUModel)
	}
	// Off by default: nothing counted, auto model.
	sc, err = Parse("f.yaml", []byte("name: x\ncluster:\n  nodes: [{name: n1, cpus: 1}]\nguests: [{name: a, node: n1, cpus: 64, memory: 64GiB}]\n"))
	if err != nil || sc.Capacity != (model.Capacity{}) {
		t.Fatalf("default: %+v %v", sc, err)
	}
	if sc, err := Parse("f.yaml", []byte("name: x\ncluster:\n  cpu_model: auto\n  cpu_overcommit: off\n  nodes: [{name: n1}]\n")); err != nil || sc.Capacity != (model.Capacity{}) {
		t.Fatalf("auto, off: %+v %v", sc, err)
	}
}

func TestCapacityLoadErrors(t *testing.T) {
	cl := func(keys string) string {
		return "name: x\ncluster:\n" + keys + "  nodes: [{name: n1, cpus: 4, memory: 8GiB, cpu_models: [x86-64-v1, x86-64-v2]}, {name: n2, cpus: 2, memory: 8GiB}]\n"
	}
	cases := []struct{ name, src, want string }{
		{"overcommit word", cl("  cpu_overcommit: lots\n"), "f.yaml:3: cluster.cpu_overcommit: must be off or a number"},
		{"overcommit zero", cl("  cpu_overcommit: 0\n"), "cluster.cpu_overcommit: 0 is not a ratio more than 0"},
		{"overcommit negative", cl("  cpu_overcommit: -2\n"), "is not a ratio more than 0"},
		{"overcommit decimals", cl("  cpu_overcommit: 1.2345\n"), "cluster.cpu_overcommit: 1.2345 has more than three decimals"},
		{"reserve without overcommit", cl("  cpu_reserve: 1\n"), "f.yaml:3: cluster.cpu_reserve: needs cpu_overcommit"},
		{"reserve negative", cl("  cpu_overcommit: 2\n  cpu_reserve: -1\n"), "cluster.cpu_reserve"},
		{"memory reserve", cl("  memory_reserve: lots\n"), "cluster.memory_reserve"},
		{"overhead zero", cl("  guest_overhead: 0\n"), "f.yaml:3: cluster.guest_overhead: size \"0\""},
		{"model name", cl("  cpu_model: \"x86 64\"\n"), `f.yaml:3: cluster.cpu_model: "x86 64" is not a CPU model name`},
		{"node model host", "name: x\ncluster:\n  nodes: [{name: n1, cpu_models: [host]}]\n", "cluster.nodes.cpu_models: host is not a model a node offers"},
		{"node models empty", "name: x\ncluster:\n  nodes: [{name: n1, cpu_models: []}]\n", "cluster.nodes.cpu_models: must list at least one model"},
		{"guest model auto", cl("") + "guests: [{name: a, cpu_model: auto}]\n", "f.yaml:4: guests.cpu_model: auto is the cluster's choice"},
		{"guest cpus too many", cl("  cpu_overcommit: 2\n  cpu_reserve: 1\n") + "guests: [{name: a, cpus: 8}]\n", `guests.cpus: guest "a" needs 8 vCPUs, more than any node's capacity (cpus × cpu_overcommit - cpu_reserve: at most 7)`},
		{"cpus at t0", cl("  cpu_overcommit: 1\n") + "guests: [{name: a, node: n2, cpus: 2}, {name: b, node: n2, cpus: 1}]\n", `guests.node: guest "b" does not fit on node "n2" at t=0: the started guests there need 3 vCPUs, its capacity is 2`},
		{"memory reserve at t0", cl("  memory_reserve: 2GiB\n") + "guests: [{name: a, node: n1, memory: 7GiB}]\n", `guest "a" needs 7516192768 bytes, more than any node has after memory_reserve`},
		{"overhead at t0", cl("  guest_overhead: 1GiB\n") + "guests: [{name: a, node: n1, memory: 4GiB}, {name: b, node: n1, memory: 3GiB}]\n", `guest "b" does not fit on node "n1" at t=0: the started guests there need 9663676416 bytes, it has 8589934592`},
		{"model at t0", cl("  cpu_model: x86-64-v3\n") + "guests: [{name: a, node: n1}]\n", `guests.node: guest "a" is started on node "n1" at t=0, which does not offer its CPU model x86-64-v3 (cpu_models: x86-64-v1, x86-64-v2)`},
		{"guest model at t0", cl("") + "guests: [{name: a, node: n1, cpu_model: x86-64-v4}]\n", "does not offer its CPU model x86-64-v4"},
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
