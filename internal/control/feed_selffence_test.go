package control

import (
	"slices"
	"testing"

	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/model"
)

// A node's report to a new term lists the guests its self-fence killed
// (stopped, no order, reason self-fence) apart from those it runs; a guest
// stopped by an order or crashed is neither.
func TestNodeReportListsSelfFencedGuests(t *testing.T) {
	f := &feed{reports: map[string]map[string]hostctl.Report{}}
	f.setReport("n1", "a", hostctl.Report{Guest: "a", State: hostctl.Running})
	f.setReport("n1", "b", hostctl.Report{Guest: "b", State: hostctl.Stopped, Reason: hostctl.ReasonSelfFence})
	f.setReport("n1", "c", hostctl.Report{Guest: "c", State: hostctl.Stopped, OrderID: "7-stop", Result: hostctl.ResultOK})
	f.setReport("n1", "d", hostctl.Report{Guest: "d", State: hostctl.Crashed, Reason: "qemu exited"})
	r := f.nodeReport("n1", model.NodeFacts{Name: "n1", BootID: "x"})
	if !slices.Equal(r.Running, []string{"a"}) || !slices.Equal(r.SelfFenced, []string{"b"}) {
		t.Errorf("running %v, self-fenced %v; want [a], [b]", r.Running, r.SelfFenced)
	}
}
