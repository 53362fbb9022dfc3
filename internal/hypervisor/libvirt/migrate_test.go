package libvirt_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/hypervisor/libvirt"
	"github.com/haven-ha/haven/internal/hypervisor/libvirt/libvirttest"
	"github.com/haven-ha/haven/internal/testguest"
)

// TestMigrate live-migrates the test guest, with a disk on a directory both
// hosts see (a local filesystem, which libvirt does not know as shared),
// between two namespace hosts and back; the counter continues with the same
// boot id. A driver with StrictStorageCheck lets libvirt refuse that disk.
// Then a migration to an unreachable target and a cancelled migration both
// leave the guest running on its source.
func TestMigrate(t *testing.T) {
	a, b := libvirttest.StartPair(t)
	da := newDriver(t, a, "a")
	db := newDriver(t, b, "b")
	def := guestDef(t, "mt1")
	disk := filepath.Join(qemuDir(t), "mt1.img")
	if err := testguest.CreateDisk(disk, 1<<20); err != nil {
		t.Fatal(err)
	}
	def.Disks = []guestdef.Disk{{Path: disk, Format: "raw"}}

	if err := da.Start(ctxT(t, 30*time.Second), def); err != nil {
		t.Fatalf("%v\n%s", err, a.LibvirtdLog())
	}
	before := waitCount(t, def, 60*time.Second, func(s testguest.Serial) bool { return s.Count >= 2 })
	checkConfined(t, a, def.Name)

	target, err := db.PrepareIncoming(ctxT(t, 5*time.Second), def, hypervisor.IncomingOptions{TLS: true})
	if err != nil || target.URI != b.URI || target.Node != "b" || !target.TLS {
		t.Fatalf("PrepareIncoming = %+v, %v; want %s on b with TLS", target, err, b.URI)
	}
	// The migration runs over TLS, the target's certificate checked: a
	// target named otherwise than its certificate is refused (plain TCP
	// would not care), and the guest still runs here.
	wrong := target
	wrong.Node = "c"
	if err := da.Migrate(ctxT(t, 60*time.Second), def.Name, wrong, nil); err == nil {
		t.Fatal("migration to a target whose certificate does not name it succeeded")
	} else if !strings.Contains(err.Error(), "still runs here") || !strings.Contains(err.Error(), "TLS") && !strings.Contains(err.Error(), "Certificate does not match") {
		// QEMU's words ("Certificate does not match the hostname c"), or
		// libvirt's around them, depending on which end saw it first.
		t.Errorf("migration to a wrongly named target: %v; want a TLS error, the guest still running here", err)
	} else {
		t.Logf("wrongly named target: %v", err)
	}
	var calls atomic.Int32
	var last hypervisor.Progress
	begin := time.Now()
	err = da.Migrate(ctxT(t, 60*time.Second), def.Name, target, func(p hypervisor.Progress) {
		calls.Add(1)
		last = p
	})
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, a.LibvirtdLog(), b.LibvirtdLog())
	}
	t.Logf("migration a->b took %s; downtime %s; %d progress reports; last %+v", time.Since(begin), last.Downtime, calls.Load(), last)
	if last.Remaining != 0 || last.Total == 0 {
		t.Errorf("final progress = %+v, want total > 0 and nothing remaining", last)
	}
	waitEvent(t, da, def.Name, hypervisor.EventMigrated, 10*time.Second)
	waitEvent(t, db, def.Name, hypervisor.EventResumed, 10*time.Second)

	if st, err := db.Status(ctxT(t, 10*time.Second), def.Name); err != nil || st.State != hypervisor.Running {
		t.Fatalf("target Status = %+v, %v; want running", st, err)
	}
	if _, err := da.Status(ctxT(t, 10*time.Second), def.Name); !errors.Is(err, hypervisor.ErrNotFound) {
		t.Fatalf("source Status after migration: err = %v, want ErrNotFound (definition removed)", err)
	}
	after := waitCount(t, def, 30*time.Second, func(s testguest.Serial) bool { return s.Count >= before.Count+2 })
	checkConfined(t, b, def.Name)
	if after.BootID != before.BootID || after.Boots != 1 {
		t.Fatalf("counter reset by migration: before %+v, after %+v", before, after)
	}

	// libvirt's own storage check refuses the disk on a local filesystem.
	strict := newDriverWith(t, b, "b", func(c *libvirt.Config) { c.StrictStorageCheck = true })
	target, _ = da.PrepareIncoming(ctxT(t, 5*time.Second), def, hypervisor.IncomingOptions{TLS: true})
	if err := strict.Migrate(ctxT(t, 60*time.Second), def.Name, target, nil); err == nil || !strings.Contains(err.Error(), "nsafe") {
		t.Fatalf("strict migration of a disk on a local filesystem: %v, want libvirt's unsafe-migration refusal", err)
	} else {
		t.Logf("strict storage check: %v", err)
	}

	// Failure: a target whose libvirtd does not answer (wrong port).
	bad := hypervisor.MigrationTarget{Node: "a", URI: "qemu+tcp://" + a.Addr + ":1/system"}
	err = db.Migrate(ctxT(t, 60*time.Second), def.Name, bad, nil)
	if err == nil {
		t.Fatal("migration to a dead target succeeded")
	}
	t.Logf("failed migration: %v", err)
	if !strings.Contains(err.Error(), "still runs here") {
		t.Errorf("error does not say the guest still runs on the source: %v", err)
	}
	if st, err := db.Status(ctxT(t, 10*time.Second), def.Name); err != nil || st.State != hypervisor.Running {
		t.Fatalf("source Status after failed migration = %+v, %v; want running", st, err)
	}

	// Cancelled while in flight: aborted, still running on the source.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	target, _ = da.PrepareIncoming(ctxT(t, 5*time.Second), def, hypervisor.IncomingOptions{TLS: true})
	err = db.Migrate(ctx, def.Name, target, func(p hypervisor.Progress) { cancel() })
	if err == nil {
		t.Log("migration finished before the cancel reached it; not checking abort")
	} else {
		t.Logf("cancelled migration: %v", err)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
		if st, err := db.Status(ctxT(t, 10*time.Second), def.Name); err != nil || st.State != hypervisor.Running {
			t.Fatalf("source Status after cancelled migration = %+v, %v; want running", st, err)
		}
		if _, err := da.Status(ctxT(t, 10*time.Second), def.Name); !errors.Is(err, hypervisor.ErrNotFound) {
			t.Errorf("target after cancelled migration: err = %v, want ErrNotFound", err)
		}
	}
	now := waitCount(t, def, 30*time.Second, func(s testguest.Serial) bool { return s.Count >= after.Count+2 })
	if now.BootID != before.BootID {
		t.Fatalf("guest rebooted: %+v then %+v", before, now)
	}
	if err := db.Kill(ctxT(t, 30*time.Second), def.Name); err != nil {
		t.Fatal(err)
	}
}
