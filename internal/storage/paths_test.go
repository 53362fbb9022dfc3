package storage

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/guestdef"
)

func fieldOf(err error) string {
	var fe *guestdef.FieldError
	if errors.As(err, &fe) {
		return fe.Field
	}
	return ""
}

// The host checks again just before the hypervisor opens the files, after
// resolving symlinks: a file swapped for a symlink after the API checked it
// is refused, and so is a missing file, a block device in a plain dir pool,
// and a serial log whose directory leads out of the pool.
func TestCheckPathsStrict(t *testing.T) {
	dir := t.TempDir()
	pools := []Pool{{Name: "p", Path: dir}}
	disk := filepath.Join(dir, "d.img")
	kernel := filepath.Join(dir, "vmlinux")
	for _, f := range []string{disk, kernel} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	def := guestdef.Definition{Name: "g", Disks: []guestdef.Disk{{Path: disk}}, Boot: guestdef.Boot{Kernel: kernel}, SerialLog: filepath.Join(dir, "g.serial")}
	if err := CheckPaths(def, pools, Strict); err != nil {
		t.Fatalf("files inside the pool: %v", err)
	}
	// Swap the disk for a symlink to /etc/shadow after the API's check.
	if err := CheckPaths(def, pools, Lexical); err != nil {
		t.Fatal(err)
	}
	os.Remove(disk)
	if err := os.Symlink("/etc/shadow", disk); err != nil {
		t.Fatal(err)
	}
	if err := CheckPaths(def, pools, Strict); fieldOf(err) != "disks[0].path" || !strings.Contains(err.Error(), "outside pool") {
		t.Errorf("disk swapped for a symlink to /etc/shadow: %v", err)
	}
	os.Remove(disk)
	if err := CheckPaths(def, pools, Strict); fieldOf(err) != "disks[0].path" || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing disk: %v", err)
	}
	// A block device through a symlink in a plain dir pool.
	if err := os.Symlink("/dev/loop0", disk); err != nil {
		t.Fatal(err)
	}
	if err := CheckPaths(def, pools, Strict); fieldOf(err) != "disks[0].path" {
		t.Errorf("block device in a dir pool: %v", err)
	}
	os.Remove(disk)
	os.WriteFile(disk, []byte("x"), 0o644)
	// A serial log in a directory that is a symlink out of the pool.
	if err := os.Symlink("/etc/cron.d", filepath.Join(dir, "logs")); err != nil {
		t.Fatal(err)
	}
	def.SerialLog = filepath.Join(dir, "logs", "x")
	if err := CheckPaths(def, pools, Strict); fieldOf(err) != "serial_log" {
		t.Errorf("serial log through a symlinked directory: %v", err)
	}
	if err := CheckPaths(def, pools, Lexical); fieldOf(err) != "serial_log" {
		t.Errorf("serial log through a symlinked directory, at the API: %v", err)
	}
}

// Raw block devices come only from an LVM pool or a device pool; kernels
// never from a device pool.
func TestCheckPathsDevices(t *testing.T) {
	devs := Pool{Name: "disks", Path: "/dev/disk/by-id", Devices: true}
	if err := devs.Validate(); err != nil {
		t.Fatalf("device pool: %v", err)
	}
	if err := (Pool{Name: "x", Path: "/srv/x", Devices: true}).Validate(); err == nil {
		t.Error("a device pool outside /dev was accepted")
	}
	for _, p := range []string{"/etc", "/dev", "/proc/1", "/sys"} {
		if err := (Pool{Name: "x", Path: p}).Validate(); err == nil {
			t.Errorf("a dir pool at %s was accepted", p)
		}
	}
	vg := Pool{Name: "vg", Kind: KindLVM, VG: "vg0"}
	pools := []Pool{devs, vg}
	def := guestdef.Definition{Name: "g", Disks: []guestdef.Disk{{Path: "/dev/sda"}}}
	if err := CheckPaths(def, pools, Lexical); fieldOf(err) != "disks[0].path" {
		t.Errorf("/dev/sda with device and LVM pools: %v", err)
	}
	def.Disks[0].Path = "/dev/vg0/lv1"
	if err := CheckPaths(def, pools, Lexical); err != nil {
		t.Errorf("an LVM volume: %v", err)
	}
	def.Disks = nil
	def.Boot.Kernel = "/dev/vg0/lv1"
	if err := CheckPaths(def, pools, Lexical); fieldOf(err) != "boot.kernel" {
		t.Errorf("a kernel from an LVM pool: %v", err)
	}
	// A character device in a device pool is refused on the host.
	dpool := []Pool{{Name: "d", Path: "/dev/disk", Devices: true}}
	def = guestdef.Definition{Name: "g", Disks: []guestdef.Disk{{Path: "/dev/disk/../null"}}}
	if err := CheckPaths(def, dpool, Strict); fieldOf(err) != "disks[0].path" {
		t.Errorf("/dev/null via a device pool: %v", err)
	}
}

// FuzzCheckPaths: whatever path an operator sends, an accepted one lies
// inside a pool after cleaning, and a block-device pool never holds a
// kernel.
func FuzzCheckPaths(f *testing.F) {
	pools := []Pool{{Name: "img", Path: "/var/lib/images"}, {Name: "dev", Path: "/dev/disk/by-id", Devices: true}, {Name: "vg", Kind: KindLVM, VG: "vg0"}}
	for _, s := range []string{"/var/lib/images/a.img", "/var/lib/images/../../etc/shadow", "/etc/shadow", "/dev/vg0/lv", "/dev/disk/by-id/x", "/var/lib/images", "/var/lib/imagesX/a", "//var//lib/images/./a"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, disk, kernel string) {
		def := guestdef.Definition{Name: "g", Disks: []guestdef.Disk{{Path: disk}}, Boot: guestdef.Boot{Kernel: kernel}}
		err := CheckPaths(def, pools, Lexical)
		if err != nil {
			return
		}
		inside := func(p string, devices bool) bool {
			c := filepath.Clean(p)
			for _, pl := range pools {
				root, dev := pl.root()
				if devices || !dev {
					if within(c, root) {
						return true
					}
				}
			}
			return false
		}
		if disk != "" && !inside(disk, true) {
			t.Fatalf("disk %q accepted outside every pool", disk)
		}
		if kernel != "" && !inside(kernel, false) {
			t.Fatalf("kernel %q accepted outside every dir pool", kernel)
		}
	})
}
