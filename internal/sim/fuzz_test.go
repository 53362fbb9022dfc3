package sim

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/scenario"
)

// FuzzRun: any scenario the parser accepts runs to its end without a panic
// and without breaking an invariant.
func FuzzRun(f *testing.F) {
	files, _ := filepath.Glob("testdata/scenarios/*.yaml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(genScenario(7)))
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := scenario.Parse("fuzz.yaml", data)
		if err != nil || len(sc.Nodes) > 16 || len(sc.Guests) > 64 || sc.End() > 6*time.Hour {
			return
		}
		r := Run(sc, Options{NoTimeline: true})
		if len(r.Violations) > 0 {
			t.Fatalf("invariants broken: %v", r.Violations)
		}
	})
}
