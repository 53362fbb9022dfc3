// Package testguest owns Haven's tiny test guest as tests see it: building
// (once per machine) and locating its kernel and initramfs, and reading what
// the running guest reports: the boot id and counter it prints on its serial
// port and the record it keeps in the first sector of its disk.
//
// The guest is built by scripts/build-test-guest.sh from Debian packages; see
// docs/guests.md for what it does. Its counter n is one sequence in guest
// memory: a live migration continues it, a reboot (or a second copy booted
// from the same definition) starts a new boot id.
package testguest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
)

// DefaultDir is where the guest is built when HAVEN_TESTGUEST_DIR is unset.
const DefaultDir = "/var/cache/haven/testguest"

// Memory is the test guest's memory size: the smallest that boots (96 MiB)
// plus room.
const Memory = 128 << 20

// Cmdline is the kernel command line the guest is meant to boot with.
const Cmdline = "console=ttyS0 panic=-1 quiet"

// Files are the built guest's boot files.
type Files struct {
	Kernel string // uncompressed vmlinux
	Initrd string // gzipped cpio
}

// Dir is the directory the guest is built in: $HAVEN_TESTGUEST_DIR, else
// DefaultDir.
func Dir() string {
	if d := os.Getenv("HAVEN_TESTGUEST_DIR"); d != "" {
		return d
	}
	return DefaultDir
}

var (
	ensureOnce  sync.Once
	ensureFiles Files
	ensureErr   error
)

// Ensure builds the guest if needed (once per process; the build itself is
// serialized across processes by a lock file and skipped when already done)
// and returns its files.
func Ensure() (Files, error) {
	ensureOnce.Do(func() { ensureFiles, ensureErr = ensure(Dir()) })
	return ensureFiles, ensureErr
}

func ensure(dir string) (Files, error) {
	f := Files{Kernel: filepath.Join(dir, "vmlinux"), Initrd: filepath.Join(dir, "initrd.gz")}
	script, serr := findScript()
	if serr != nil {
		// Outside the source tree: use a guest built earlier, if any.
		if exists(f.Kernel) && exists(f.Initrd) {
			return f, nil
		}
		return Files{}, fmt.Errorf("build test guest in %s: %w", dir, serr)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Files{}, fmt.Errorf("build test guest in %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return Files{}, fmt.Errorf("build test guest in %s: %w", dir, err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return Files{}, fmt.Errorf("build test guest in %s: lock: %w", dir, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	cmd := exec.Command("bash", script, dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return Files{}, fmt.Errorf("build test guest in %s with %s: %w: %s", dir, script, err, bytes.TrimSpace(out))
	}
	if !exists(f.Kernel) || !exists(f.Initrd) {
		return Files{}, fmt.Errorf("build test guest in %s: %s ran but left no vmlinux/initrd.gz", dir, script)
	}
	return f, nil
}

// findScript locates scripts/build-test-guest.sh: $HAVEN_TESTGUEST_SCRIPT, or
// the first parent of the working directory that holds it.
func findScript() (string, error) {
	if s := os.Getenv("HAVEN_TESTGUEST_SCRIPT"); s != "" {
		return s, nil
	}
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(d, "scripts", "build-test-guest.sh")
		if exists(p) {
			return p, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("scripts/build-test-guest.sh not found above the working directory; set HAVEN_TESTGUEST_SCRIPT")
		}
		d = parent
	}
}

func exists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Size() > 0
}

// Build is Ensure for tests: it returns the guest's files, or skips the test
// when the guest cannot be built (fails instead when CI=true). It also skips
// (or fails in CI) when qemu-system-x86_64 is missing.
func Build(t testing.TB) Files {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		skipOrFail(t, "qemu-system-x86_64 not installed (scripts/deps.sh installs qemu-system-x86)")
	}
	f, err := Ensure()
	if err != nil {
		skipOrFail(t, err.Error())
	}
	return f
}

func skipOrFail(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("test guest unavailable: %s", reason)
	}
	t.Skipf("test guest unavailable: %s", reason)
}

// Definition returns a definition of the test guest named name booting files,
// with its serial port written to serialLog and, when disk is not empty, the
// raw image disk as its first (virtio) disk.
func Definition(name string, files Files, serialLog, disk string) guestdef.Definition {
	d := guestdef.Definition{
		Name:      name,
		VCPUs:     1,
		Memory:    Memory,
		Boot:      guestdef.Boot{Kernel: files.Kernel, Initrd: files.Initrd, Cmdline: Cmdline},
		SerialLog: serialLog,
	}
	if disk != "" {
		d.Disks = []guestdef.Disk{{Path: disk, Format: "raw", Bus: "virtio"}}
	}
	return d
}

// CreateDisk creates a raw disk image of size bytes at path for the guest to
// keep its record in (a sparse file).
func CreateDisk(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create test disk %s: %w", path, err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("create test disk %s: %w", path, err)
	}
	return f.Close()
}

// Serial is what the guest's serial log says so far.
type Serial struct {
	Ready      bool   // HAVEN-READY seen
	BootID     string // boot id of the latest HAVEN-READY or HAVEN-COUNT line
	Count      int64  // latest counter of that boot; 0 before the first
	Boots      int    // HAVEN-READY lines seen (a reboot appends another)
	PoweredOff bool   // the guest saw the ACPI power button and powered off
	NoACPI     bool   // the guest found no power button to listen to
	HTTPD      bool   // its httpd (the health tests' service) started in this boot
	Agent      bool   // its qemu-guest-agent started in this boot
}

// ParseSerial reads a serial log. Lines may carry firmware noise before the
// HAVEN- marker and end in CR LF.
func ParseSerial(r io.Reader) (Serial, error) {
	var s Serial
	httpd, agent := map[string]bool{}, map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "HAVEN-")
		if i < 0 {
			continue
		}
		f := strings.Fields(line[i:])
		switch {
		case f[0] == "HAVEN-READY" && len(f) >= 2:
			s.Ready, s.BootID, s.Count, s.PoweredOff = true, f[1], 0, false
			s.Boots++
		case f[0] == "HAVEN-HTTPD" && len(f) >= 2:
			httpd[f[1]] = true
		case f[0] == "HAVEN-QGA" && len(f) >= 2:
			agent[f[1]] = true
		case f[0] == "HAVEN-COUNT" && len(f) >= 3:
			n, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil {
				continue // a torn line
			}
			if f[1] != s.BootID {
				s.BootID, s.Count = f[1], 0
			}
			if n > s.Count {
				s.Count = n
			}
		case f[0] == "HAVEN-POWEROFF":
			s.PoweredOff = true
		case f[0] == "HAVEN-NOACPI":
			s.NoACPI = true
		}
	}
	s.HTTPD, s.Agent = httpd[s.BootID], agent[s.BootID]
	return s, sc.Err()
}

// ReadSerial parses the serial log at path; a missing file reads as nothing
// seen yet.
func ReadSerial(path string) (Serial, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return Serial{}, nil
	}
	if err != nil {
		return Serial{}, fmt.Errorf("read serial log %s: %w", path, err)
	}
	defer f.Close()
	s, err := ParseSerial(f)
	if err != nil {
		return s, fmt.Errorf("read serial log %s: %w", path, err)
	}
	return s, nil
}

// WaitSerial polls the serial log at path until cond holds or ctx ends, and
// returns the last reading.
func WaitSerial(ctx context.Context, path string, cond func(Serial) bool) (Serial, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		s, err := ReadSerial(path)
		if err == nil && cond(s) {
			return s, nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return s, fmt.Errorf("wait for serial log %s: %w (last: %+v)", path, err, s)
		case <-t.C:
		}
	}
}

// Record is the guest's record in the first sector of its disk.
type Record struct {
	BootID string
	Count  int64
}

// ErrNoRecord means the disk holds no record (yet).
var ErrNoRecord = errors.New("no HAVEN record in the disk's first sector")

// ParseRecord parses a first sector: "HAVEN <bootid> <n>\n" then padding
// (spaces from the current guest, NULs from older builds).
func ParseRecord(sector []byte) (Record, error) {
	if bytes.HasPrefix(sector, []byte("QFI\xfb")) {
		return Record{}, errors.New("disk is a qcow2 image: the record is readable from raw images only")
	}
	line, _, ok := bytes.Cut(sector, []byte("\n"))
	if !ok {
		return Record{}, ErrNoRecord
	}
	f := strings.Fields(string(line))
	if len(f) != 3 || f[0] != "HAVEN" {
		return Record{}, ErrNoRecord
	}
	n, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || f[1] == "" {
		return Record{}, ErrNoRecord
	}
	return Record{BootID: f[1], Count: n}, nil
}

// ReadRecord reads the record from the raw disk image or block device at path.
func ReadRecord(path string) (Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return Record{}, fmt.Errorf("read disk record of %s: %w", path, err)
	}
	defer f.Close()
	buf := make([]byte, 512)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return Record{}, fmt.Errorf("read disk record of %s: %w", path, err)
	}
	r, err := ParseRecord(buf[:n])
	if err != nil {
		return Record{}, fmt.Errorf("read disk record of %s: %w", path, err)
	}
	return r, nil
}
