package hostctl

import (
	"context"
	"sync"
	"testing"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
)

// incomingDriver holds a copy of vm1 waiting for a migration that will not
// come, as a migration given up by the manager leaves it.
type incomingDriver struct {
	*fakeDriver
	mu       sync.Mutex
	incoming bool
	killed   int
}

func (d *incomingDriver) Start(ctx context.Context, def guestdef.Definition) error {
	d.mu.Lock()
	in := d.incoming
	d.mu.Unlock()
	if in {
		return hypervisor.ErrAlreadyRunning
	}
	return d.fakeDriver.Start(ctx, def)
}

func (d *incomingDriver) Status(ctx context.Context, name string) (hypervisor.Status, error) {
	d.mu.Lock()
	in := d.incoming
	d.mu.Unlock()
	if in {
		return hypervisor.Status{Name: name, State: hypervisor.Incoming}, nil
	}
	return d.fakeDriver.Status(ctx, name)
}

func (d *incomingDriver) Kill(ctx context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.incoming {
		d.incoming = false
		d.killed++
		return nil
	}
	return d.fakeDriver.Kill(ctx, name)
}

// A start order that finds only a copy waiting for an incoming migration
// must start the guest for real, not report a guest that does not run.
func TestStartReplacesAWaitingIncomingCopy(t *testing.T) {
	drv := &incomingDriver{fakeDriver: newFake(), incoming: true}
	rec := &recorder{}
	c := New(Config{Driver: drv, Publisher: rec})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	c.Submit(ctx, Order{ID: "o1", Guest: "vm1", Op: OpStart, Def: guestdef.Definition{Name: "vm1"}})
	waitFor(t, "start result", func() bool { return rec.get("vm1").OrderID == "o1" && rec.get("vm1").Result != ResultPending })
	if r := rec.get("vm1"); r.Result != ResultOK || r.State != Running {
		t.Fatalf("start over a waiting incoming copy: %+v", r)
	}
	drv.mu.Lock()
	killed := drv.killed
	drv.mu.Unlock()
	if killed != 1 || drv.starts["vm1"] != 1 {
		t.Errorf("incoming copy killed %d times, guest started %d times; want 1 and 1", killed, drv.starts["vm1"])
	}
}
