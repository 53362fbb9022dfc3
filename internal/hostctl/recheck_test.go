package hostctl

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/hypervisor"
)

// downDriver is a fakeDriver whose hypervisor does not answer while down.
type downDriver struct {
	*fakeDriver
	down atomic.Bool
}

var errDown = errors.New("hypervisor unavailable: connection refused")

func (d *downDriver) Kill(ctx context.Context, name string) error {
	if d.down.Load() {
		return errDown
	}
	return d.fakeDriver.Kill(ctx, name)
}

func (d *downDriver) Status(ctx context.Context, name string) (hypervisor.Status, error) {
	if d.down.Load() {
		return hypervisor.Status{}, errDown
	}
	return d.fakeDriver.Status(ctx, name)
}

// A kill that fails while the hypervisor does not answer leaves the guest
// reported running (the safe guess); once the hypervisor answers again,
// the guest it does not have is reported crashed, so the manager does not
// count it running here for good.
func TestUnknownStateIsCheckedAgain(t *testing.T) {
	drv := &downDriver{fakeDriver: newFake()}
	drv.down.Store(true)
	rec := &recorder{}
	c := New(Config{Driver: drv, Publisher: rec, RecheckEvery: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	c.Submit(ctx, Order{ID: "5-clean", Guest: "g1", Op: OpKill})
	waitFor(t, "the failed kill's report", func() bool { return rec.get("g1").Result == ResultFailed })
	if r := rec.get("g1"); r.State != Running {
		t.Fatalf("after a kill the hypervisor did not answer: %+v, want running (unknown)", r)
	}
	// Still down: nothing changes.
	waitFor(t, "a few rechecks", func() bool { time.Sleep(50 * time.Millisecond); return true })
	if r := rec.get("g1"); r.State != Running {
		t.Fatalf("report changed while the hypervisor still does not answer: %+v", r)
	}
	drv.down.Store(false)
	waitFor(t, "the recheck once the hypervisor answers", func() bool { return rec.get("g1").State == Crashed })
	if r := rec.get("g1"); r.OrderID != "" {
		t.Errorf("recheck report carries order %q, want none", r.OrderID)
	}
}
