package sim

import (
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/scenario"
)

// TestNeverStopped: never_stopped fails for a guest that crashed (even if it
// was restarted), was stopped by the operator, or died with its host, and
// holds for one that was only live-migrated.
func TestNeverStopped(t *testing.T) {
	src := `name: never stopped
cluster:
  nodes: [{name: n1}, {name: n2}, {name: n3}]
guests:
  - {name: crashed, node: n1}
  - {name: stopped, node: n1}
  - {name: migrated, node: n1}
  - {name: lost, node: n2}
  - {name: quiet, node: n3}
events:
  - {at: 10s, do: crash crashed}
  - {at: 10s, do: stop stopped}
  - {at: 10s, do: migrate migrated n3}
  - {at: 20s, do: start stopped}
  - {at: 30s, do: power off n2}
expect:
  - {never_stopped: crashed}
  - {never_stopped: stopped}
  - {never_stopped: migrated}
  - {never_stopped: lost}
  - {never_stopped: quiet}
`
	sc, err := scenario.Parse("never.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	r := Run(sc, Options{})
	want := map[string]bool{"crashed": false, "stopped": false, "migrated": true, "lost": false, "quiet": true}
	for _, e := range r.Expects[:len(r.Expects)-1] {
		name := strings.Fields(e.Text)[1]
		if e.OK != want[name] {
			t.Errorf("%s: ok %v, want %v (seen %q)", e.Text, e.OK, want[name], e.Seen)
		}
	}
	if !r.Expects[len(r.Expects)-1].OK {
		t.Errorf("invariants: %v", r.Violations)
	}
	// Every one that failed runs again by the end: the expectation is about
	// the whole run, not the final state.
	for _, g := range []string{"crashed", "stopped", "lost"} {
		if st := r.World.Manager().Guest(g).State; st != "started" {
			t.Errorf("%s is %s at the end, want started", g, st)
		}
	}
}
