package libvirt

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultMigrationTLSDir is where the agent keeps libvirt's migration TLS
// credentials unless told otherwise; qemu.conf's migrate_tls_x509_cert_dir
// must name it.
const DefaultMigrationTLSDir = "/etc/libvirt/haven-tls"

// QEMUConf is what Haven reads of libvirt's qemu.conf.
type QEMUConf struct {
	// MigrateTLSDir is where libvirt's QEMU reads migration TLS
	// credentials: migrate_tls_x509_cert_dir, else
	// default_tls_x509_cert_dir, else libvirt's default /etc/pki/qemu.
	MigrateTLSDir string
	// Group is the group QEMU runs as (group, else libvirt-qemu or qemu,
	// the distributions' defaults, else root) and GID its id.
	Group string
	GID   int
}

// ReadQEMUConf reads the settings QEMUConf describes from libvirt's
// qemu.conf at path.
func ReadQEMUConf(path string) (QEMUConf, error) {
	vals, err := readConf(path, "qemu.conf")
	if err != nil {
		return QEMUConf{}, err
	}
	c := QEMUConf{MigrateTLSDir: "/etc/pki/qemu"}
	for _, k := range []string{"migrate_tls_x509_cert_dir", "default_tls_x509_cert_dir"} {
		if v := vals[k]; v != "" {
			c.MigrateTLSDir = filepath.Clean(v)
			break
		}
	}
	groups := []string{"libvirt-qemu", "qemu"}
	if g := vals["group"]; g != "" {
		groups = []string{strings.TrimPrefix(g, "+")}
	}
	c.Group = "root"
	for _, name := range groups {
		if gid, err := strconv.Atoi(name); err == nil {
			c.Group, c.GID = name, gid
			break
		}
		if g, err := user.LookupGroup(name); err == nil {
			c.Group = name
			c.GID, _ = strconv.Atoi(g.Gid)
			break
		}
	}
	return c, nil
}

// readConf reads the settings (key = value, strings quoted, # comments) of
// a libvirt configuration file.
func readConf(path, what string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("libvirt's %s: %w", what, err)
	}
	vals := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		v = strings.TrimSpace(v)
		if q, ok := strings.CutPrefix(v, `"`); ok {
			v, _, _ = strings.Cut(q, `"`)
		} else if i := strings.Index(v, "#"); i >= 0 {
			v = strings.TrimSpace(v[:i])
		}
		vals[strings.TrimSpace(k)] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("libvirt's %s %s: %w", what, path, err)
	}
	return vals, nil
}
