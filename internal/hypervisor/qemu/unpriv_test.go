package qemu

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/hypervisor"
)

// A guest's QEMU must not keep root: a guest that breaks out of the emulator
// would own the host. It drops to DefaultUser under a seccomp sandbox, and
// owns its disks so that it can reopen them after a migration.
func TestQEMURunsUnprivilegedAndSandboxed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (QEMU drops from root to its own user)")
	}
	u, err := user.Lookup(DefaultUser)
	if err != nil {
		t.Fatalf("user %s missing (scripts/deps.sh creates it): %v", DefaultUser, err)
	}
	f := newFixture(t)
	d := newDriver(t, filepath.Join(f.dir, "a"), "a")
	ctx := ctxT(t, 2*time.Minute)
	if err := d.Start(ctx, f.def("g1")); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, d, "g1", hypervisor.EventStarted, 5*time.Second)
	st, err := d.Status(ctx, "g1")
	if err != nil {
		t.Fatal(err)
	}
	// The drop happens once QEMU has set up the machine: poll for it.
	var status string
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(st.PID) + "/status")
		if err != nil {
			t.Fatal(err)
		}
		status = string(b)
		if field(status, "Uid") != "0" || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if uid := field(status, "Uid"); uid != u.Uid {
		t.Errorf("QEMU runs with uid %s, want %s (%s)", uid, u.Uid, DefaultUser)
	}
	if sc := field(status, "Seccomp"); sc != "2" {
		t.Errorf("QEMU's Seccomp mode is %q, want 2 (filter: -sandbox on)", sc)
	}
	var fst syscall.Stat_t
	if err := syscall.Stat(f.disk, &fst); err != nil {
		t.Fatal(err)
	}
	if strconv.Itoa(int(fst.Uid)) != u.Uid {
		t.Errorf("disk owned by uid %d, want QEMU's user %s", fst.Uid, u.Uid)
	}
}

// A disk QEMU's user cannot reach fails the start with a clear error.
func TestUnreachableDiskRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	f := newFixture(t)
	d := newDriver(t, filepath.Join(f.dir, "a"), "a")
	priv := filepath.Join(f.dir, "private")
	if err := os.Mkdir(priv, 0o700); err != nil {
		t.Fatal(err)
	}
	def := f.def("g1")
	def.Disks[0].Path = filepath.Join(priv, "disk.raw")
	if err := os.WriteFile(def.Disks[0].Path, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	err := d.Start(ctxT(t, time.Minute), def)
	if err == nil || !strings.Contains(err.Error(), "not searchable") {
		t.Fatalf("start with a disk in a 0700 directory: %v, want an error saying QEMU's user cannot reach it", err)
	}
}

func field(status, name string) string {
	for _, l := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			fs := strings.Fields(v)
			if len(fs) > 0 {
				return fs[0]
			}
		}
	}
	return ""
}
