package qemu

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/haven-ha/haven/internal/hypervisor"
	"golang.org/x/sys/unix"
)

// The migration TLS credentials change while guests run: a CA rotation
// (haven ca rotate) changes the trusted CAs twice and re-issues the host's
// certificate. A QEMU loads its tls-creds-x509 objects once, so the driver
// hands every migration the files as they are now: a QEMU started for an
// incoming migration loads RUNDIR/.tls brought up to date first
// (refreshTLS), and before an outgoing one the running QEMU loads a fresh
// client object (reloadTLS).

// refreshTLS brings RUNDIR/.tls up to date with the configured files when
// they changed since it was written; QEMUs started after load it.
func (d *Driver) refreshTLS() error {
	d.tlsMu.Lock()
	defer d.tlsMu.Unlock()
	same := true
	for src, name := range map[string]string{d.cfg.TLSCA: "ca-cert.pem", d.cfg.TLSCert: "server-cert.pem", d.cfg.TLSKey: "server-key.pem", d.cfg.TLSCRL: "ca-crl.pem"} {
		if src == "" {
			continue
		}
		want, err := os.ReadFile(src)
		if os.IsNotExist(err) && name == "ca-crl.pem" {
			continue // none yet (hypervisor.WriteTLSCreds)
		}
		if err != nil {
			return fmt.Errorf("migration TLS credentials: %w", err)
		}
		have, err := os.ReadFile(filepath.Join(d.tlsDir, name))
		if err != nil || !bytes.Equal(have, want) {
			same = false
			break
		}
	}
	if same {
		return nil
	}
	if err := hypervisor.WriteTLSCreds(d.tlsDir, d.cfg.TLSCA, d.cfg.TLSCert, d.cfg.TLSKey, d.cfg.TLSCRL, -1); err != nil {
		return err
	}
	d.log.Info("migration TLS credentials changed: QEMUs started from now on load the new ones", "op", "tls")
	return nil
}

// reloadTLS has g's running QEMU load the current credentials as a new
// client object and migrates with it; the object it used before is
// deleted. QEMU has dropped to its user by now, so
// it reads them from a directory of that user's, made for this load and
// removed after (QEMU keeps what it loaded).
func (d *Driver) reloadTLS(ctx context.Context, mon *monitor, log *slog.Logger) error {
	dir, err := os.MkdirTemp("", "haven-tls-")
	if err != nil {
		return fmt.Errorf("migration TLS credentials: %w", err)
	}
	defer os.RemoveAll(dir)
	creds := filepath.Join(dir, "creds")
	if err := hypervisor.WriteTLSCreds(creds, d.cfg.TLSCA, d.cfg.TLSCert, d.cfg.TLSKey, d.cfg.TLSCRL, -1); err != nil {
		return err
	}
	if d.uid >= 0 {
		if err := grantRead(dir, d.uid, d.gid); err != nil {
			return fmt.Errorf("migration TLS credentials: hand them to QEMU's user: %w", err)
		}
	}
	var params struct {
		TLSCreds string `json:"tls-creds"`
	}
	if err := mon.run(ctx, "query-migrate-parameters", nil, &params); err != nil {
		return fmt.Errorf("query migration parameters: %w", err)
	}
	old := params.TLSCreds
	if old == "" {
		old = tlsClientID // loaded at start, not used yet
	}
	id := tlsClientID + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	err = mon.run(ctx, "object-add", map[string]any{"qom-type": "tls-creds-x509", "id": id, "dir": creds, "endpoint": "client", "verify-peer": true}, nil)
	if err != nil {
		return fmt.Errorf("load the current migration TLS credentials into the guest's QEMU: %w", err)
	}
	if err := mon.run(ctx, "migrate-set-parameters", map[string]any{"tls-creds": id}, nil); err != nil {
		return fmt.Errorf("set migration TLS: %w", err)
	}
	if old != id {
		if err := mon.run(ctx, "object-del", map[string]any{"id": old}, nil); err != nil {
			log.Debug("the earlier migration TLS credentials stay loaded", "id", old, "err", err)
		}
	}
	log.Info("migration TLS credentials loaded from the current files", "id", id)
	return nil
}

// grantRead lets uid read the files of the directory tree at root (and
// search its directories) while they stay root's: POSIX ACLs, so that no
// other process of QEMU's user (another guest's) can replace them, and
// no other user read them. Where the file system has no ACLs, the tree
// becomes uid's (gid's) instead, mode 0700/0600.
func grantRead(root string, uid, gid int) error {
	return filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		owner, other := uint16(6), uint16(4) // rw-, r--
		if e.IsDir() {
			owner, other = 7, 1 // rwx, --x
		}
		err = unix.Setxattr(p, "system.posix_acl_access", aclEntries(owner, uint32(uid), other), 0)
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
			return os.Lchown(p, uid, gid)
		}
		return err
	})
}

// aclEntries is a POSIX access ACL in the kernel's xattr form: the owner
// with perm owner, user uid with perm user, nobody else.
func aclEntries(owner uint16, uid uint32, user uint16) []byte {
	const (
		version  = 2
		userObj  = 0x01
		userTag  = 0x02
		groupObj = 0x04
		mask     = 0x10
		otherTag = 0x20
		undefID  = 0xffffffff
	)
	b := binary.LittleEndian.AppendUint32(nil, version)
	for _, e := range []struct {
		tag, perm uint16
		id        uint32
	}{{userObj, owner, undefID}, {userTag, user, uid}, {groupObj, 0, undefID}, {mask, user, undefID}, {otherTag, 0, undefID}} {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}
