package qemu

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/haven-ha/haven/internal/guestdef"
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

// ffdhe2048 is the RFC 7919 2048-bit Diffie-Hellman group (public,
// well-known parameters) in PKCS#3 PEM, QEMU's dh-params.pem. Without that
// file, QEMU generates 2048-bit DH parameters of its own at every start of
// a guest with server TLS credentials: 0.1-0.4 s of CPU (measured with
// this machine's QEMU), on the path of every guest start, crash restart
// and migration target.
const ffdhe2048 = `-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
`

// writeTLSDir lays out the cluster CA and this host's certificate and key
// in RUNDIR/.tls under the names QEMU's tls-creds-x509 reads (the host's
// certificate serves both ends: it is valid for server and client use),
// and the DH parameters (ffdhe2048). Only root reads the directory: QEMU
// loads it before dropping to its user.
func writeTLSDir(runDir, ca, cert, key string) (string, error) {
	dir := filepath.Join(runDir, ".tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	files := map[string]string{"ca-cert.pem": ca, "server-cert.pem": cert, "server-key.pem": key, "client-cert.pem": cert, "client-key.pem": key, "dh-params.pem": ""}
	for name, src := range files {
		b := []byte(ffdhe2048)
		if src != "" {
			var err error
			if b, err = os.ReadFile(src); err != nil {
				return "", err
			}
		}
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return "", err
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return "", err
		}
	}
	return dir, nil
}
