package libvirt

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/hypervisor/libvirt/libvirtd"
)

func TestLibvirtdConfAndPKI(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "libvirtd.conf")
	pki := filepath.Join(dir, "pki")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// libvirt's defaults: TLS on its own certificates, not Haven's.
	write(conf, "# nothing set\nlisten_tcp = 1\n")
	c, err := ReadLibvirtdConf(conf)
	if err != nil || !c.ListenTLS || c.TLSPort != "16514" || c.CAFile != "/etc/pki/CA/cacert.pem" || c.UsesPKI(pki) {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	write(conf, `listen_tls = 1
tls_port = "16600"   # a port of its own
ca_file = "`+pki+`/cacert.pem"
cert_file = "`+pki+`/servercert.pem"
key_file = "`+pki+`//serverkey.pem"
`)
	if c, err = ReadLibvirtdConf(conf); err != nil || !c.UsesPKI(pki+"/") || c.TLSPort != "16600" {
		t.Fatalf("set to Haven's certificates: %+v %v", c, err)
	}
	write(conf, "listen_tls = 0\nca_file = \""+pki+"/cacert.pem\"\ncert_file = \""+pki+"/servercert.pem\"\nkey_file = \""+pki+"/serverkey.pem\"\n")
	if c, err = ReadLibvirtdConf(conf); err != nil || c.UsesPKI(pki) {
		t.Fatalf("TLS off: %+v %v", c, err)
	}
	if _, err := ReadLibvirtdConf(filepath.Join(dir, "none")); err == nil {
		t.Error("a missing libvirtd.conf read")
	}

	src := t.TempDir()
	for name, v := range map[string]string{"ca.crt": "CA", "node.crt": "CERT", "node.key": "KEY"} {
		write(filepath.Join(src, name), v)
	}
	if err := WritePKI(pki, filepath.Join(src, "ca.crt"), filepath.Join(src, "node.crt"), filepath.Join(src, "node.key"), filepath.Join(src, "none.crl")); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"cacert.pem": "CA", "clientcert.pem": "CERT", "clientkey.pem": "KEY", "servercert.pem": "CERT", "serverkey.pem": "KEY"} {
		p := filepath.Join(pki, name)
		b, err := os.ReadFile(p)
		st, _ := os.Stat(p)
		if err != nil || string(b) != want || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %q %v %v", name, b, err, st.Mode())
		}
	}
	if st, _ := os.Stat(pki); st.Mode().Perm() != 0o700 {
		t.Errorf("pki dir mode %v, want 0700", st.Mode())
	}

	for _, tt := range []struct{ host, port, dir, want string }{
		{"10.0.0.2", "16514", "/etc/libvirt/haven-pki/", "qemu+tls://10.0.0.2/system?pkipath=/etc/libvirt/haven-pki"},
		{"10.0.0.2", "16600", "/etc/libvirt/haven-pki", "qemu+tls://10.0.0.2:16600/system?pkipath=/etc/libvirt/haven-pki"},
		{"fd00::2", "", "/p", "qemu+tls://[fd00::2]/system?pkipath=/p"},
		{"h2", "16514", "/a b", "qemu+tls://h2/system?pkipath=%2Fa+b"},
	} {
		if got := TLSURI(tt.host, tt.port, tt.dir); got != tt.want {
			t.Errorf("TLSURI(%s, %s, %s) = %s, want %s", tt.host, tt.port, tt.dir, got, tt.want)
		}
	}
}

// pkiDriver is a driver whose libvirtd serves qemu+tls with the
// certificates of its PKIDir (dir/pki), from the agent's files ca, cert
// and key (reading "CA", "CERT", "KEY"), with a stand-in virt-admin that
// records its calls (count) and then runs extra; libvirt's default paths
// are under dir/root.
type pkiDriver struct {
	d             *Driver
	dir           string
	ca, cert, key string
	calls         string
}

func newPKIDriver(t *testing.T, extra string) *pkiDriver {
	t.Helper()
	dir := t.TempDir()
	f := &pkiDriver{dir: dir, calls: filepath.Join(dir, "calls")}
	va := filepath.Join(dir, "virt-admin")
	if err := os.WriteFile(va, []byte("#!/bin/sh\necho \"$@\" >> "+f.calls+"\n"+extra), 0o755); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	f.ca, f.cert, f.key = filepath.Join(src, "ca.crt"), filepath.Join(src, "node.crt"), filepath.Join(src, "node.key")
	for p, v := range map[string]string{f.ca: "CA", f.cert: "CERT", f.key: "KEY"} {
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pkiDir := filepath.Join(dir, "pki")
	f.d = &Driver{cfg: Config{PKIDir: pkiDir, TLSCA: f.ca, TLSCert: f.cert, TLSKey: f.key, VirtAdmin: va,
		Socket: "/run/libvirt/libvirt-sock", MigrationURI: "qemu+tls://10.0.0.2/system?pkipath=" + pkiDir}, log: slog.Default(), pkiRoot: filepath.Join(dir, "root")}
	return f
}

// count is how many times virt-admin ran.
func (f *pkiDriver) count() int {
	b, _ := os.ReadFile(f.calls)
	return strings.Count(string(b), "\n")
}

// libvirtd is told to load its certificates again when they change (a
// renewal, a CA rotation), and only then, and only when it serves
// qemu+tls with them.
func TestRefreshPKIReloadsLibvirtd(t *testing.T) {
	f := newPKIDriver(t, "")
	d, dir, ca, cert, calls, count := f.d, f.dir, f.ca, f.cert, f.calls, f.count
	ctx := context.Background()
	for i, step := range []struct {
		change string
		want   int
	}{{"", 1}, {"", 1}, {"NEW CA\nCA", 2}} {
		if step.change != "" {
			if err := os.WriteFile(ca, []byte(step.change), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.refreshPKI(ctx); err != nil {
			t.Fatal(err)
		}
		if got := count(); got != step.want {
			t.Fatalf("step %d: virt-admin ran %d times, want %d", i, got, step.want)
		}
	}
	b, _ := os.ReadFile(calls)
	if !strings.Contains(string(b), "-c libvirtd:///system?socket=/run/libvirt/libvirt-admin-sock server-update-tls libvirtd") {
		t.Errorf("virt-admin called with %q", b)
	}
	// qemu+tcp: the files are kept up to date, libvirtd is left alone.
	d.cfg.MigrationURI = "qemu+tcp://10.0.0.2/system"
	if err := os.WriteFile(cert, []byte("RENEWED"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.refreshPKI(ctx); err != nil || count() != 2 {
		t.Fatalf("qemu+tcp: %v, virt-admin ran %d times", err, count())
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "pki", "clientcert.pem")); string(b) != "RENEWED" {
		t.Errorf("client certificate %q after renewal", b)
	}
}

// A reload of libvirtd's certificates that failed is tried again at the
// next refresh, though the files did not change meanwhile (libvirtd would
// otherwise serve the older ones until they change again).
func TestRefreshPKIRetriesFailedReload(t *testing.T) {
	fail := filepath.Join(t.TempDir(), "fail")
	f := newPKIDriver(t, "if [ -e "+fail+" ]; then echo 'cannot connect' >&2; exit 1; fi\n")
	d, count := f.d, f.count
	ctx := context.Background()
	if err := os.WriteFile(fail, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.refreshPKI(ctx); err != nil || count() != 1 {
		t.Fatalf("first refresh with virt-admin failing: %v (a migration goes on), virt-admin ran %d times, want 1", err, count())
	}
	os.Remove(fail)
	if err := d.refreshPKI(ctx); err != nil || count() != 2 {
		t.Fatalf("refresh after a failed reload: %v, virt-admin ran %d times, want 2", err, count())
	}
	if err := d.refreshPKI(ctx); err != nil || count() != 2 {
		t.Fatalf("refresh with nothing changed: %v, virt-admin ran %d times, want 2", err, count())
	}
}

// virt-admin server-update-tls reloads libvirtd's certificates only from
// libvirt's default paths: the driver makes them symlinks to its files
// (where nothing is), and does not reload when one is another file.
func TestRefreshPKILinksLibvirtDefaults(t *testing.T) {
	f := newPKIDriver(t, "")
	d, cert, calls := f.d, f.cert, f.calls
	root, pkiDir := d.pkiRoot, d.cfg.PKIDir
	ctx := context.Background()
	if err := d.refreshPKI(ctx); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"/etc/pki/CA/cacert.pem": "CA", "/etc/pki/libvirt/servercert.pem": "CERT", "/etc/pki/libvirt/private/serverkey.pem": "KEY"} {
		l, err := os.Readlink(filepath.Join(root, path))
		if b, _ := os.ReadFile(filepath.Join(root, path)); err != nil || !strings.HasPrefix(l, pkiDir) || string(b) != want {
			t.Errorf("%s: link %q (%v) reads %q, want a link into %s reading %q", path, l, err, b, pkiDir, want)
		}
	}
	conf := LibvirtdConf{ListenTLS: true, CAFile: filepath.Join(root, defaultCAFile), CertFile: filepath.Join(root, defaultCertFile), KeyFile: filepath.Join(root, defaultKeyFile)}
	if !conf.UsesPKI(pkiDir) {
		t.Errorf("libvirtd.conf with the default paths, linked: does not use %s", pkiDir)
	}
	// An admin's own certificate at a default path: left alone, no reload.
	own := filepath.Join(root, defaultCertFile)
	os.Remove(own)
	if err := os.WriteFile(own, []byte("ADMIN'S"), 0o600); err != nil {
		t.Fatal(err)
	}
	if conf.UsesPKI(pkiDir) {
		t.Errorf("libvirtd.conf whose certificate is the admin's own: uses %s", pkiDir)
	}
	if err := os.WriteFile(cert, []byte("RENEWED"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.refreshPKI(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(calls)
	if n := strings.Count(string(b), "\n"); n != 1 {
		t.Errorf("virt-admin ran %d times, want once (not with the admin's certificate in the way)", n)
	}
	if b, _ := os.ReadFile(own); string(b) != "ADMIN'S" {
		t.Errorf("the admin's certificate became %q", b)
	}
}

// The test bed's private libvirtds (libvirtd.Config.ListenTLS) serve TLS
// with the files the agent writes in its default --libvirt-pki-dir, and do
// not listen on plain TCP: the agent picks qemu+tls for them.
func TestPrivateLibvirtdServesAgentPKI(t *testing.T) {
	if libvirtd.PKIPath != DefaultPKIDir {
		t.Fatalf("libvirtd.PKIPath %s, the agent's default --libvirt-pki-dir %s", libvirtd.PKIPath, DefaultPKIDir)
	}
	conf := libvirtd.Files(libvirtd.Config{UUID: "u", ListenAddr: "10.0.0.2", ListenTLS: true})["libvirtd.conf"]
	path := filepath.Join(t.TempDir(), "libvirtd.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := ReadLibvirtdConf(path)
	if err != nil {
		t.Fatal(err)
	}
	if !c.UsesPKI(DefaultPKIDir) || !c.ReadsCRL(DefaultPKIDir) {
		t.Errorf("libvirtd.conf %q: %+v does not serve the agent's certificates and revocation list", conf, c)
	}
	for _, want := range []string{"listen_tcp = 0\n", "listen_tls = 1\n"} {
		if !strings.Contains(conf, want) {
			t.Errorf("libvirtd.conf lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "auth_tcp") || strings.Count(conf, "listen_tls") != 1 {
		t.Errorf("libvirtd.conf:\n%s", conf)
	}
}

// The revocation list the agent signs with the cluster CA reaches libvirtd:
// copied as cacrl.pem once there is one, linked from libvirt's default
// path (the one server-update-tls reads), and libvirtd reloads when it
// changes (a host removed).
func TestRefreshPKIRevocationList(t *testing.T) {
	f := newPKIDriver(t, "")
	d, count := f.d, f.count
	crl := filepath.Join(t.TempDir(), "ca-crl.pem")
	d.cfg.TLSCRL = crl
	ctx := context.Background()
	// None signed yet (the agent has not opened the CA key): no file.
	if err := d.RefreshPKI(ctx); err != nil || count() != 1 {
		t.Fatalf("first refresh: %v, virt-admin ran %d times, want 1", err, count())
	}
	if _, err := os.Stat(filepath.Join(d.cfg.PKIDir, "cacrl.pem")); err == nil {
		t.Error("cacrl.pem written with no revocation list signed")
	}
	for i, v := range []string{"CRL 1", "CRL 2"} {
		if err := os.WriteFile(crl, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := d.RefreshPKI(ctx); err != nil || count() != 2+i {
			t.Fatalf("refresh with %s: %v, virt-admin ran %d times, want %d", v, err, count(), 2+i)
		}
		if b, err := os.ReadFile(filepath.Join(d.pkiRoot, defaultCRLFile)); err != nil || string(b) != v {
			t.Errorf("libvirt's default CRL path reads %q, %v; want %q", b, err, v)
		}
	}
	if err := d.RefreshPKI(ctx); err != nil || count() != 3 {
		t.Fatalf("refresh with nothing changed: %v, virt-admin ran %d times, want 3", err, count())
	}
	conf := LibvirtdConf{CRLFile: filepath.Join(d.pkiRoot, defaultCRLFile)}
	if !conf.ReadsCRL(d.cfg.PKIDir) || (LibvirtdConf{}).ReadsCRL(d.cfg.PKIDir) {
		t.Error("ReadsCRL: crl_file linked to cacrl.pem, or unset")
	}
}
