package sim

import (
	"testing"

	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/scenario"
)

// A live migration in the simulator is the daemon shell's two orders, with
// the shell's order IDs (op, then the phase): the target is ordered to
// receive and reports ready with its address; the source is ordered to
// migrate to that address and reports the result.
func TestMigrationGoesThroughTheShellsTwoPhases(t *testing.T) {
	sc, err := scenario.Parse("two-phase.yaml", []byte(`name: two phases
cluster:
  nodes: [{name: n1}, {name: n2}]
guests:
  - {name: vm1, node: n1}
events:
  - {at: 10s, do: migrate vm1 n2}
expect:
  - {by: 16s, guest: vm1, state: started, node: n2}
  - never_stopped: vm1
`))
	if err != nil {
		t.Fatal(err)
	}
	r := Run(sc, Options{})
	if r.Failed() > 0 {
		t.Fatalf("expectations failed: %+v", r.Expects)
	}
	w := r.World
	recv, send := w.reports["n2"]["vm1"], w.reports["n1"]["vm1"]
	if recv.OrderID != "1-recv" || recv.Op != hostctl.OpReceive || recv.Result != hostctl.ResultOK || recv.Target.URI != migrationURI("n2") {
		t.Errorf("n2's report: %+v, want a ready receive of order 1-recv at %s", recv, migrationURI("n2"))
	}
	if send.OrderID != "1-send" || send.Op != hostctl.OpMigrate || send.Result != hostctl.ResultOK {
		t.Errorf("n1's report: %+v, want a migrate of order 1-send that succeeded", send)
	}
}
