package sim

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/scenario"
)

var (
	verbose = flag.Bool("sim.v", false, "print the timeline of every library scenario")
	rewrite = flag.Bool("sim.rewrite", false, "rewrite testdata/golden from the current timelines")
)

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
			golden := filepath.Join("testdata", "golden", strings.TrimSuffix(filepath.Base(f), ".yaml")+".txt")
			if *rewrite {
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			} else if want, err := os.ReadFile(golden); err != nil {
				t.Errorf("no golden timeline (run with -sim.rewrite): %v", err)
			} else if string(want) != buf.String() {
				t.Errorf("timeline differs from %s (review, then -sim.rewrite):\n%s", golden, diff(string(want), buf.String()))
			}
			if r.Failed() > 0 || *verbose {
				t.Log("\n" + buf.String())
			}
			if r.Failed() > 0 {
				t.Fatalf("%d expectations failed", r.Failed())
			}
		})
	}
}

// diff shows the first lines where two timelines part.
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, a, b)
		}
	}
	return ""
}
