package libvirt

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
)

func TestReadQEMUConf(t *testing.T) {
	for _, tt := range []struct {
		conf, dir, group string
		gid              int
	}{
		{"", "/etc/pki/qemu", "", -1},
		{"#migrate_tls_x509_cert_dir = \"/x\"\ndefault_tls_x509_cert_dir = \"/etc/pki/d\"\n", "/etc/pki/d", "", -1},
		{"default_tls_x509_cert_dir = \"/etc/pki/d\"\n  migrate_tls_x509_cert_dir = \"/etc/libvirt/haven-tls/\"  \ngroup = \"+0\"\n", "/etc/libvirt/haven-tls", "0", 0},
		{"group = \"root\" # a comment\nuser = \"x\"\n", "/etc/pki/qemu", "root", 0},
		{"group = \"kvm\" # a comment\n", "/etc/pki/qemu", "kvm", -2},
	} {
		p := filepath.Join(t.TempDir(), "qemu.conf")
		if err := os.WriteFile(p, []byte(tt.conf), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := ReadQEMUConf(p)
		if err != nil {
			t.Fatal(err)
		}
		if tt.gid == -2 { // a group of this machine's
			g, err := user.LookupGroup(tt.group)
			if err != nil {
				t.Skip(err)
			}
			tt.gid, _ = strconv.Atoi(g.Gid)
		}
		if c.MigrateTLSDir != tt.dir || (tt.group != "" && (c.Group != tt.group || c.GID != tt.gid)) {
			t.Errorf("%q: %+v, want dir %s, group %q (%d)", tt.conf, c, tt.dir, tt.group, tt.gid)
		}
	}
	if _, err := ReadQEMUConf(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing qemu.conf read without error")
	}
}
