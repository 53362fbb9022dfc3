package sim

import (
	"flag"
	"os"
	"testing"

	"github.com/haven-ha/haven/internal/manager"
)

// TestMain has every step of the core that visits only the unsettled
// guests checked against the full step (manager.VerifyCalm) in the tests,
// the library's scenarios and the random faults among them; not in the
// benchmarks, which measure the steps as they run.
func TestMain(m *testing.M) {
	flag.Parse()
	manager.VerifyCalm = flag.Lookup("test.bench").Value.String() == ""
	os.Exit(m.Run())
}
