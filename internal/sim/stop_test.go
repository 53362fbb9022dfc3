package sim

import (
	"testing"

	"github.com/haven-ha/haven/internal/scenario"
)

// Issue 10, Low: a run can be stopped (SIGTERM on `haven sim run`): it ends
// at the next item and says it did not reach its end.
func TestRunStops(t *testing.T) {
	sc, err := scenario.Parse("s.yaml", []byte("name: s\ncluster:\n  nodes: [{name: a}, {name: b}]\nguests:\n  - {name: g1}\nevents:\n  - {at: 60s, do: power off a}\n"))
	if err != nil {
		t.Fatal(err)
	}
	asked := 0
	r := Run(sc, Options{Stop: func() bool { asked++; return asked > 3 }})
	if !r.World.Stopped || r.Failed() == 0 {
		t.Fatalf("stopped run: stopped %v, failed %d; want it stopped and failing", r.World.Stopped, r.Failed())
	}
	if r.World.Now() >= sc.End() {
		t.Errorf("stopped run went on to %v (end %v)", r.World.Now(), sc.End())
	}
}
