package testbed

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testguest"
)

// qemuGuest is the test guest as plain QEMU with its first disk on disk.
// file.locking=off: on one machine QEMU's image lock would refuse the second
// copy that separate hosts would not stop; the checker must catch it.
func qemuGuest(f testguest.Files, disk, serial string) Spec {
	return Spec{Path: "qemu-system-x86_64", Role: "guest g1", Args: []string{
		"-accel", "tcg", "-m", "128", "-smp", "1", "-nographic", "-nodefaults", "-no-user-config",
		"-kernel", f.Kernel, "-initrd", f.Initrd, "-append", testguest.Cmdline,
		"-serial", "file:" + serial,
		"-drive", "file=" + disk + ",format=raw,if=virtio,cache=none,file.locking=off"}}
}

// The double-run checker against the real test guest on the bed: a clean
// restart on another host after PowerOff is no violation; two copies
// running at once on two hosts are.
func TestDoubleRunWithRealGuests(t *testing.T) {
	files := testguest.Build(t)
	b := ForTest(t, Options{Hosts: 2})
	h1, h2 := b.MustHost("h1"), b.MustHost("h2")
	disk := filepath.Join(b.SharedDir(), "g1.img")
	if err := testguest.CreateDisk(disk, 16<<20); err != nil {
		t.Fatal(err)
	}
	c := NewDoubleRunChecker()
	c.Watch("g1", disk)
	stop := c.Start(context.Background())
	defer stop()
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting until %s; segments %+v", what, c.Segments("g1"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	start := func(h *Host, serial string) *Process {
		t.Helper()
		p, err := h.Start(context.Background(), qemuGuest(files, disk, filepath.Join(h.Dir, serial)))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	first := start(h1, "serial1.log")
	wait("the guest on h1 writes", func() bool { s := c.Segments("g1"); return len(s) == 1 && s[0].LastCounter >= 5 })
	if err := b.PowerOff(t.Context(), "h1"); err != nil {
		t.Fatal(err)
	}
	// PowerOff returns once the host's processes are gone; the Process
	// learns it from its own Wait shortly after.
	select {
	case <-first.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the guest survived PowerOff")
	}
	if err := b.PowerOn(t.Context(), "h1"); err != nil {
		t.Fatal(err)
	}
	// One copy on h2 (the failover) and, wrongly, one on h1 at once.
	a, bb := start(h2, "serial2.log"), start(h1, "serial3.log")
	wait("the double run is reported", func() bool { return c.Err() != nil || a.Exited() || bb.Exited() })
	if a.Exited() || bb.Exited() {
		t.Fatalf("a guest copy exited: %v %v", a.Exited(), bb.Exited())
	}
	segs := c.Segments("g1")
	vs := c.Violations()
	t.Logf("segments %+v; violations %v", segs, vs)
	if len(vs) == 0 {
		t.Fatal("no violation")
	}
	// The fenced first boot is not one of the writers at fault.
	if slices.Contains(vs[0].BootIDs, segs[0].BootID) {
		t.Errorf("the powered-off boot %s is blamed: %v", segs[0].BootID, vs[0])
	}
}
