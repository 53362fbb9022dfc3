package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/haven-ha/haven/internal/guestdef"
)

// Every file a guest definition names (disks, kernel, initrd, serial log)
// must lie inside a storage pool the admin declared: an operator may define
// guests, but must not make the hypervisor read or write any other file of
// the host (/etc/shadow as a disk, /etc/cron.d/x as a serial log). Raw block
// devices come only from an LVM pool or a dir pool the admin marked as a
// device pool.
//
// CheckPaths runs twice: when a guest is created, edited or imported (the API
// has the pools but maybe not the files, which can live on another host), and
// on the host just before the hypervisor starts (Strict: the files must be
// there, and are checked again after resolving symlinks).

// PathMode says how strictly CheckPaths looks at the files.
type PathMode int

const (
	// Lexical checks the cleaned paths against the pools, and the
	// resolved ones when a file already exists on this machine (the API).
	Lexical PathMode = iota
	// Strict also requires disks, kernel and initrd to exist, and checks
	// every path after resolving symlinks (the host before it starts a guest).
	Strict
)

// CheckPaths checks that every path def names lies inside one of pools,
// returning every problem at once as *guestdef.FieldError values naming the
// field (disks[1].path, boot.kernel, serial_log), wrapped in an error naming
// the guest. Disks given as pool+volume are checked on their resolved path
// when Path is set (storage.ResolveDisk), else by their pool's existence.
func CheckPaths(def guestdef.Definition, pools []Pool, mode PathMode) error {
	var errs []error
	add := func(field, format string, a ...any) {
		errs = append(errs, &guestdef.FieldError{Field: field, Msg: fmt.Sprintf(format, a...)})
	}
	for i, d := range def.Disks {
		f := fmt.Sprintf("disks[%d]", i)
		if d.Pool != "" {
			p, ok := findPool(pools, d.Pool)
			if !ok {
				add(f+".pool", "no storage pool named %q", d.Pool)
				continue
			}
			if d.Path == "" {
				continue
			}
			if want := p.VolumePath(d.Volume); d.Path != want {
				add(f+".path", "%q is not volume %q of pool %q (%s)", d.Path, d.Volume, d.Pool, want)
				continue
			}
		}
		if d.Path == "" {
			continue
		}
		if err := checkPath(d.Path, pools, true, mode); err != nil {
			add(f+".path", "%v", err)
		}
	}
	if def.Boot.Kernel != "" {
		if err := checkPath(def.Boot.Kernel, pools, false, mode); err != nil {
			add("boot.kernel", "%v", err)
		}
	}
	if def.Boot.Initrd != "" {
		if err := checkPath(def.Boot.Initrd, pools, false, mode); err != nil {
			add("boot.initrd", "%v", err)
		}
	}
	if def.SerialLog != "" {
		// The serial log is written: it may not exist yet (a missing one is
		// checked through its directory).
		m := mode
		if m == Strict {
			m = strictMayBeMissing
		}
		if err := checkPath(def.SerialLog, pools, false, m); err != nil {
			add("serial_log", "%v", err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("guest %q: %w", def.Name, errors.Join(errs...))
}

// strictMayBeMissing is Strict for a file the hypervisor creates.
const strictMayBeMissing PathMode = 100

// root is where a pool's files are, and whether they are block devices.
func (p Pool) root() (dir string, devices bool) {
	if p.kind() == KindLVM {
		return "/dev/" + p.VG, true
	}
	return filepath.Clean(p.Path), p.Devices
}

// within reports whether path is below dir (path and dir cleaned).
func within(path, dir string) bool {
	return dir != "" && dir != "/" && strings.HasPrefix(path, dir+"/")
}

// checkPath checks one path: absolute, clean, inside a pool (a device pool
// for a block device, and only for disks), and (mode) its resolved target too.
func checkPath(path string, pools []Pool, disk bool, mode PathMode) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%q is not an absolute path", path)
	}
	if strings.ContainsAny(path, "\x00\n\r") {
		return fmt.Errorf("%q has a control character", path)
	}
	clean := filepath.Clean(path)
	var pool Pool
	found := false
	for _, p := range pools {
		dir, devices := p.root()
		if devices && !disk {
			continue
		}
		if within(clean, dir) {
			pool, found = p, true
			break
		}
	}
	if !found {
		return fmt.Errorf("%s is not inside a storage pool%s: put it in one (haven pool list), or ask an admin to declare a pool that holds it", path, kindHint(disk))
	}
	dir, devices := pool.root()
	st, err := os.Stat(clean)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if mode == Strict {
			return fmt.Errorf("%s (pool %q) does not exist on this host", path, pool.Name)
		}
		// A file yet to be created: its directory, where it exists here,
		// must resolve inside the pool.
		rdir, err := filepath.EvalSymlinks(filepath.Dir(clean))
		if mode == Lexical && err != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s (pool %q): its directory: %w", path, pool.Name, err)
		}
		rroot, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return fmt.Errorf("pool %q (%s): %w", pool.Name, dir, err)
		}
		if rdir != rroot && !within(rdir, rroot) {
			return fmt.Errorf("%s: its directory resolves to %s, outside pool %q (%s)", path, rdir, pool.Name, rroot)
		}
		return nil
	case err != nil:
		if mode == Lexical {
			return nil
		}
		return fmt.Errorf("%s (pool %q): %w", path, pool.Name, err)
	}
	real, err := filepath.EvalSymlinks(clean)
	if err != nil {
		return fmt.Errorf("%s (pool %q): resolve: %w", path, pool.Name, err)
	}
	if devices {
		// LVM volumes and /dev/disk/by-* names are symlinks to /dev/dm-N,
		// /dev/sdX: the target must be a block device under /dev.
		if st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 || !within(real, "/dev") {
			return fmt.Errorf("%s (pool %q) resolves to %s, which is not a block device", path, pool.Name, real)
		}
		return nil
	}
	rroot, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("pool %q (%s): %w", pool.Name, dir, err)
	}
	if !within(real, rroot) {
		return fmt.Errorf("%s resolves to %s, outside pool %q (%s)", path, real, pool.Name, rroot)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s (pool %q) is not a regular file (%s): block devices come only from an LVM pool or a device pool", path, pool.Name, st.Mode().Type())
	}
	return nil
}

func kindHint(disk bool) string {
	if disk {
		return ""
	}
	return " (kernels, initrds and serial logs live in dir pools)"
}
