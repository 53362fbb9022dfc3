package hostctl

import (
	"testing"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
)

// The driver's "started" event may reach the controller after the start
// order's result. The last report published must still be the result (it
// names the order the manager waits for): a report of the event, naming no
// order, would replace it in a coalescing publisher and the manager would
// never learn the start succeeded.
func TestStartedEventAfterResultKeepsTheResult(t *testing.T) {
	drv, rec, c, ctx := setup(t)
	c.Submit(ctx, Order{ID: "o1", Guest: "vm1", Op: OpStart, Def: guestdef.Definition{Name: "vm1"}})
	waitFor(t, "vm1 started by order o1", func() bool { r := rec.get("vm1"); return r.OrderID == "o1" && r.Result == ResultOK })
	drv.events <- hypervisor.Event{Guest: "vm1", Kind: hypervisor.EventStarted}
	// A later event proves the first was handled: events are handled in order.
	drv.events <- hypervisor.Event{Guest: "other", Kind: hypervisor.EventPaused}
	waitFor(t, "the later event", func() bool { return rec.get("other").State == Paused })
	if r := rec.get("vm1"); r.OrderID != "o1" || r.Result != ResultOK || r.State != Running {
		t.Errorf("last report of vm1 after a late started event = %+v, want order o1's result, running", r)
	}
}
