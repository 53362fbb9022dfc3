package sim

import (
	"bytes"
	"flag"
	"path/filepath"
	"testing"

	"github.com/haven-ha/haven/internal/scenario"
)

var verbose = flag.Bool("sim.v", false, "print the timeline of every library scenario")

// TestScenarioLibrary runs every scenario under testdata/scenarios: each
// must load, hold every invariant and meet every expectation.
func TestScenarioLibrary(t *testing.T) {
	files, err := filepath.Glob("testdata/scenarios/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			sc, err := scenario.Load(f)
			if err != nil {
				t.Fatal(err)
			}
			r := Run(sc, Options{})
			var buf bytes.Buffer
			r.WriteText(&buf)
			if r.Failed() > 0 || *verbose {
				t.Log("\n" + buf.String())
			}
			if r.Failed() > 0 {
				t.Fatalf("%d expectations failed", r.Failed())
			}
		})
	}
}
