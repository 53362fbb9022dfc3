package qemu

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
)

// handOver gives the unprivileged QEMU user the guest's disks, as libvirt's
// dynamic ownership does. QEMU opens every file as the agent's user before
// it drops to cfg.User, but a guest that arrives by live migration reopens
// its disks read-write when it takes over, after the drop. Kernel, initrd
// and serial log are only opened at start, before the drop, and are left
// alone. The paths were checked against the storage pools just before
// (hostctl's CheckDef).
func (d *Driver) handOver(def guestdef.Definition) error {
	if d.uid < 0 {
		return nil
	}
	for i, disk := range def.Disks {
		real, err := filepath.EvalSymlinks(disk.Path)
		if err != nil {
			return fmt.Errorf("disk %d (%s): %w", i, disk.Path, err)
		}
		if err := reachable(real, d.uid, d.gid); err != nil {
			return fmt.Errorf("disk %d (%s): QEMU runs as %s (uid %d), which cannot reach it: %w", i, disk.Path, d.cfg.User, d.uid, err)
		}
		if err := os.Chown(real, d.uid, d.gid); err != nil {
			return fmt.Errorf("disk %d (%s): give it to QEMU's user %s: %w", i, disk.Path, d.cfg.User, err)
		}
	}
	return nil
}

// reachable reports whether uid/gid can search every directory above path
// (by its mode bits; ACLs are not read).
func reachable(path string, uid, gid int) error {
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		if err != nil {
			return err
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		m := st.Mode().Perm()
		var can bool
		switch {
		case int(sys.Uid) == uid:
			can = m&0o100 != 0
		case int(sys.Gid) == gid:
			can = m&0o010 != 0
		default:
			can = m&0o001 != 0
		}
		if !can {
			return fmt.Errorf("directory %s (mode %04o, owner %d:%d) is not searchable by it: chmod o+x %s, or keep guest disks in a pool it can reach", dir, m, sys.Uid, sys.Gid, dir)
		}
		if dir == "/" {
			return nil
		}
	}
}

// QEMU's ids of the migration TLS credentials.
const (
	tlsServerID = "haven-tls-server"
	tlsClientID = "haven-tls-client"
)

// writeTLSDir lays out the migration TLS credentials in RUNDIR/.tls
// (hypervisor.WriteTLSCreds). Only root reads the directory: QEMU loads it
// before dropping to its user.
func writeTLSDir(runDir, ca, cert, key, crl string) (string, error) {
	dir := filepath.Join(runDir, ".tls")
	return dir, hypervisor.WriteTLSCreds(dir, ca, cert, key, crl, -1)
}
