package cluster_test

import (
	"testing"

	"github.com/haven-ha/haven/internal/deptest"
)

// The store's records sit below what reads and writes them: the manager's
// core and shell, the host side and the fence devices define their own
// record types and bring them to package cluster (Get, List, ReadSealed),
// never the other way round.
func TestClusterLayering(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const m = "github.com/haven-ha/haven/internal/"
	deptest.Check(t, m+"cluster", map[string]string{
		m + "manager":    "the manager's core reads the store through its shell (package control)",
		m + "placement":  "placement is the core's",
		m + "savedstate": "the manager's saved state is the shell's (package control, savedstate.Load)",
		m + "control":    "the manager's shell builds on cluster, not the other way round",
		m + "hostctl":    "orders and reports are the host side's types (cluster.Get, cluster.List)",
		m + "hostagent":  "the host side builds on cluster",
		m + "hypervisor": "the host side's",
		m + "fence":      "the fence configuration is fence's type (cluster.ReadSealed)",
		m + "api":        "the API builds on cluster",
	})
}
