package scenario

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/model"
)

const good = `name: ok
cluster:
  fencing: watchdog
  shutdown_policy: freeze
  settle: 2m
  nodes:
    - {name: n1, memory: 8GiB, cpus: 4}
    - {name: n2, power: off}
domains:
  - {name: d, members: [n1, n2], ordered: true, restricted: true}
  - name: p
    members: [{node: n2, priority: 2}, {node: n1, priority: 1}]
guests:
  - {name: a, node: n1, memory: 1.5GiB, domain: d, recovery: relocate, max_restarts: 2, restart_window: 90s, max_relocations: 0, migratable: false}
  - {name: b, state: stopped, node: n2, faults: {start_failures: 2, migrate_failures: 1, stop_fails: true}}
events:
  - {at: 10s, do: power on n2}
  - at: 5s
    do: partition n1 / n2
  - {at: 10s, do: migrate a n2}
expect:
  - {at: end, guest: a, state: started, node: n1}
  - {by: 30s, node: n2, state: online}
  - {fenced: n1, times: 0}
  - {not_fenced: n2}
`

func TestParseGood(t *testing.T) {
	sc, err := Parse("good.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if sc.Fencing != model.FencingWatchdog || sc.Shutdown != model.ShutdownFreeze || sc.Settle != 2*time.Minute {
		t.Errorf("cluster: %+v", sc)
	}
	if sc.Nodes[0].Memory != 8*model.GiB || sc.Nodes[0].CPUs != 4 || sc.Nodes[1].PowerOn || sc.Nodes[1].Memory != 64*model.GiB {
		t.Errorf("nodes: %+v", sc.Nodes)
	}
	a := sc.Guests[0].Spec
	if a.Memory != 3*model.GiB/2 || a.Recovery != model.RecoveryRelocate || a.MaxRestarts != 2 || a.RestartWindow != 90*time.Second || a.MaxRelocations != 0 || a.Migratable {
		t.Errorf("guest a: %+v", a)
	}
	if f := sc.Guests[1].Faults; f.StartFailures != 2 || f.MigrateFailures != 1 || !f.StopFails {
		t.Errorf("faults: %+v", f)
	}
	if sc.Events[0].Kind != Partition || sc.Events[1].Kind != PowerOn || sc.Events[2].Kind != Migrate {
		t.Errorf("events not sorted by time in file order: %+v", sc.Events)
	}
	if got := sc.End(); got != 10*time.Second+2*time.Minute {
		t.Errorf("end %v", got)
	}
	if !sc.Expects[0].AtEnd || sc.Expects[0].At != sc.End() || !sc.Expects[1].By || sc.Expects[2].Times != 0 {
		t.Errorf("expects: %+v", sc.Expects)
	}
	if sc.Domains[1].Members[0].Priority != 2 {
		t.Errorf("priorities: %+v", sc.Domains[1])
	}
}

func TestParseErrors(t *testing.T) {
	base := "name: x\ncluster:\n  nodes: [{name: n1}, {name: n2, power: off}]\n"
	cases := []struct {
		name, src, want string
	}{
		{"unknown top key", base + "bogus: 1\n", "4: bogus: unknown key"},
		{"no name", "cluster:\n  nodes: [{name: n1}]\n", "name: required"},
		{"no nodes", "name: x\ncluster: {fencing: agent}\n", "cluster.nodes: required"},
		{"bad fencing", "name: x\ncluster:\n  fencing: stonith\n  nodes: [{name: n1}]\n", `cluster.fencing: "stonith"`},
		{"dup node", "name: x\ncluster:\n  nodes: [{name: n1}, {name: n1}]\n", `duplicate node "n1"`},
		{"bad size", "name: x\ncluster:\n  nodes: [{name: n1, memory: 64GB}]\n", "cluster.nodes.memory: size"},
		{"zero size", "name: x\ncluster:\n  nodes: [{name: n1, memory: 0GiB}]\n", "more than 0"},
		{"fraction of a byte", "name: x\ncluster:\n  nodes: [{name: n1, memory: 0.0001KiB}]\n", "whole number"},
		{"bad cpus", "name: x\ncluster:\n  nodes: [{name: n1, cpus: many}]\n", "must be an integer"},
		{"unknown node key", "name: x\ncluster:\n  nodes: [{name: n1, ram: 1GiB}]\n", "cluster.nodes.ram: unknown key"},
		{"guest on off node", base + "guests: [{name: g, node: n2}]\n", "powered off at t=0"},
		{"guest does not fit", base + "guests: [{name: g, node: n1, memory: 40GiB}, {name: h, node: n1, memory: 40GiB}]\n", "does not fit"},
		{"guest too big", base + "guests: [{name: g, memory: 100GiB}]\n", "more than any node"},
		{"dup guest", base + "guests: [{name: g}, {name: g}]\n", `duplicate guest "g"`},
		{"unknown guest node", base + "guests: [{name: g, node: n9}]\n", `unknown node "n9"`},
		{"unknown domain", base + "guests: [{name: g, domain: d}]\n", `unknown domain "d"`},
		{"outside restricted", base + "domains: [{name: d, members: [n2], restricted: true}]\nguests: [{name: g, node: n1, domain: d}]\n", "outside guest"},
		{"mixed members", base + "domains: [{name: d, members: [n1, {node: n2, priority: 1}]}]\n", "mixes plain node names"},
		{"ordered priorities", base + "domains: [{name: d, ordered: true, members: [{node: n2, priority: 1}]}]\n", "ordered cannot be combined"},
		{"unknown member", base + "domains: [{name: d, members: [n7]}]\n", `unknown node "n7"`},
		{"bad state", base + "guests: [{name: g, state: running}]\n", `"running" is not started`},
		{"bad recovery", base + "guests: [{name: g, recovery: reboot}]\n", "guests.recovery"},
		{"negative restarts", base + "guests: [{name: g, max_restarts: -1}]\n", "at least 0"},
		{"bad duration", base + "guests: [{name: g, restart_window: 10}]\n", "needs a unit"},
		{"ns duration", base + "guests: [{name: g, restart_window: 10ns}]\n", "use the units"},
		{"unknown fault", base + "guests: [{name: g, faults: {crash: 1}}]\n", "guests.faults.crash: unknown key"},
		{"bad event", base + "events: [{at: 1s, do: explode n1}]\n", "cannot understand"},
		{"health unknown key", base + "guests: [{name: g, health: [{ping: true}]}]\n", "guests.health.ping: unknown key"},
		{"health two kinds", base + "guests: [{name: g, health: [{tcp: 22, agent: true}]}]\n", "guests.health[0]: give exactly one of agent, tcp, http and exec"},
		{"health bad url", base + "guests: [{name: g, health: [{http: \"ftp://x\"}]}]\n", "guests.health[0].http"},
		{"health timeout", base + "guests: [{name: g, health: [{tcp: 1, interval: 1s, timeout: 2s}]}]\n", "longer than the interval"},
		{"service verb", base + "guests: [{name: g}]\nevents: [{at: 1s, do: service g explodes}]\n", "cannot understand"},
		{"hang unknown guest", base + "events: [{at: 1s, do: hang g}]\n", `unknown guest "g"`},
		{"event unknown node", base + "events: [{at: 1s, do: power off n3}]\n", `unknown node "n3"`},
		{"event unknown guest", base + "events: [{at: 1s, do: crash g}]\n", `unknown guest "g"`},
		{"event no at", base + "events: [{do: heal}]\n", "events.at: required"},
		{"event negative at", base + "events: [{at: -1s, do: heal}]\n", "negative"},
		{"partition twice", base + "events:\n  - at: 1s\n    do: partition n1 / n1\n", "two groups"},
		{"expect unknown guest", base + "expect: [{at: end, guest: g, state: started}]\n", `unknown guest "g"`},
		{"expect no time", base + "guests: [{name: g}]\nexpect: [{guest: g, state: started}]\n", "expect.at: required"},
		{"expect both", base + "guests: [{name: g}]\nexpect: [{at: 1s, by: 2s, guest: g, state: started}]\n", "not both"},
		{"expect bad state", base + "guests: [{name: g}]\nexpect: [{at: 1s, guest: g, state: online}]\n", "not a guest state"},
		{"expect bad node state", base + "expect: [{at: 1s, node: n1, state: fenced}]\n", "not a node state"},
		{"expect after end", base + "guests: [{name: g}]\nexpect: [{at: 900s, guest: g, state: started}]\n", "after the end"},
		{"fenced with at", base + "expect: [{fenced: n1, at: 1s}]\n", "not allowed with fenced"},
		{"times without fenced", base + "guests: [{name: g}]\nexpect: [{at: 1s, guest: g, state: started, times: 1}]\n", "only with fenced"},
		{"not a mapping", "- a\n- b\n", "must be a mapping"},
		{"bad quorum_loss", "name: x\ncluster:\n  quorum_loss: pause\n  nodes: [{name: n1}]\n", `3: cluster.quorum_loss: "pause" is not stop or freeze`},
		{"freeze with watchdog", "name: x\ncluster:\n  fencing: watchdog\n  quorum_loss: freeze\n  nodes: [{name: n1}]\n", "4: cluster.quorum_loss: freeze needs fence devices"},
		{"bad preemption", "name: x\ncluster:\n  preemption: maybe\n  nodes: [{name: n1}]\n", "3: cluster.preemption: must be on or off"},
		{"bad witness", "name: x\ncluster:\n  nodes: [{name: n1, witness: sometimes}]\n", "cluster.nodes.witness: must be true or false"},
		{"guest on witness", "name: x\ncluster:\n  nodes: [{name: n1}, {name: w, witness: true}]\nguests: [{name: g, node: w, state: stopped}]\n", `4: guests.node: node "w" is a witness`},
		{"domain lists witness", "name: x\ncluster:\n  nodes: [{name: n1}, {name: w, witness: true}]\ndomains: [{name: d, members: [n1, w]}]\n", `4: domains.members: node "w" is a witness`},
		{"priority too high", base + "guests: [{name: g, priority: 1001}]\n", "4: guests.priority: 1001 is more than 1000"},
		{"priority negative", base + "guests: [{name: g, priority: -1}]\n", "guests.priority: must be at least 0"},
		{"never_stopped unknown", base + "expect: [{never_stopped: g}]\n", `4: expect.never_stopped: unknown guest "g"`},
		{"never_stopped not placed", base + "guests: [{name: g}]\nexpect: [{never_stopped: g}]\n", "must be started at t=0"},
		{"never_stopped stopped", base + "guests: [{name: g, node: n1, state: stopped}]\nexpect: [{never_stopped: g}]\n", "must be started at t=0"},
		{"never_stopped with at", base + "guests: [{name: g, node: n1}]\nexpect: [{never_stopped: g, at: end}]\n", "expect.at: not allowed with never_stopped"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(c.src))
			if err == nil {
				t.Fatalf("no error; want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "f.yaml:") {
				t.Fatalf("error %q does not contain %q and the file name", err, c.want)
			}
			var pe *Error
			if !errors.As(err, &pe) && !strings.Contains(err.Error(), "yaml:") {
				t.Errorf("error is not a *scenario.Error: %T", err)
			}
		})
	}
}

func TestParseNewRules(t *testing.T) {
	src := `name: new rules
cluster:
  quorum_loss: freeze
  preemption: on
  nodes:
    - {name: n1, memory: 8GiB}
    - {name: w, witness: true, memory: 1TiB}
guests:
  - {name: g, node: n1, priority: 1000, memory: 8GiB}
expect:
  - {never_stopped: g}
`
	sc, err := Parse("new.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if sc.QuorumLoss != model.QuorumLossFreeze || !sc.Preemption {
		t.Errorf("cluster: quorum_loss %q preemption %v", sc.QuorumLoss, sc.Preemption)
	}
	if sc.Nodes[0].Witness || !sc.Nodes[1].Witness {
		t.Errorf("witness: %+v", sc.Nodes)
	}
	if sc.Guests[0].Spec.Priority != 1000 {
		t.Errorf("priority %d", sc.Guests[0].Spec.Priority)
	}
	if x := sc.Expects[0]; x.Kind != ExpectNeverStopped || x.Guest != "g" {
		t.Errorf("expect %+v", x)
	}
	sc, err = Parse("defaults.yaml", []byte("name: d\ncluster:\n  nodes: [{name: n1}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if sc.QuorumLoss != model.QuorumLossStop || sc.Preemption {
		t.Errorf("defaults: quorum_loss %q preemption %v", sc.QuorumLoss, sc.Preemption)
	}
}

func TestParseDurationAndSize(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "90s": 90 * time.Second, "1m30s": 90 * time.Second, "250ms": 250 * time.Millisecond, "1.5h": 90 * time.Minute} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, want := range map[string]int64{"1KiB": 1024, "2GiB": 2 << 30, "1.5TiB": 3 << 39, "512 MiB": 512 << 20} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

// FuzzParse: the parser never panics, and whatever it accepts is
// consistent: names referenced by events and expectations exist.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	files, _ := filepath.Glob("../sim/testdata/scenarios/*.yaml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := Parse("fuzz.yaml", data)
		if err != nil {
			return
		}
		nodes := map[string]bool{}
		for _, n := range sc.Nodes {
			if n.Name == "" || nodes[n.Name] || n.Memory <= 0 {
				t.Fatalf("bad node %+v", n)
			}
			nodes[n.Name] = true
		}
		guests := map[string]bool{}
		for _, g := range sc.Guests {
			if g.Spec.Name == "" || guests[g.Spec.Name] || g.Spec.Memory <= 0 || (g.Spec.Node != "" && !nodes[g.Spec.Node]) {
				t.Fatalf("bad guest %+v", g)
			}
			guests[g.Spec.Name] = true
		}
		for _, e := range sc.Events {
			if (e.Node != "" && !nodes[e.Node]) || (e.Guest != "" && !guests[e.Guest]) || e.At < 0 {
				t.Fatalf("bad event %+v", e)
			}
		}
		for _, x := range sc.Expects {
			if x.Kind == ExpectGuest && !guests[x.Guest] {
				t.Fatalf("bad expectation %+v", x)
			}
		}
	})
}
