package libvirt

import (
	"os"
	"path/filepath"
	"testing"
)

// The migration credentials libvirt's QEMU reads at each migration follow
// the agent's files: a renewed certificate or a rotated CA reaches the
// next migration without a restart.
func TestRefreshTLS(t *testing.T) {
	src, dir := t.TempDir(), filepath.Join(t.TempDir(), "tls")
	ca, cert, key := filepath.Join(src, "ca.crt"), filepath.Join(src, "node.crt"), filepath.Join(src, "node.key")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(ca, "old CA")
	write(cert, "old cert")
	write(key, "key")
	d := &Driver{cfg: Config{MigrationTLSDir: dir, TLSCA: ca, TLSCert: cert, TLSKey: key, TLSGroup: -1}, tls: true}
	if err := d.refreshTLS(); err != nil {
		t.Fatal(err)
	}
	write(ca, "new CA\nold CA")
	write(cert, "new cert")
	if err := d.refreshTLS(); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"ca-cert.pem": "new CA\nold CA", "server-cert.pem": "new cert", "client-cert.pem": "new cert"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != want {
			t.Errorf("%s: %q %v, want %q", name, b, err, want)
		}
	}
}
