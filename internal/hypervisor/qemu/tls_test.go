package qemu

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/testguest"
)

// tlsDriver is newDriver with the migration TLS credentials of node,
// issued by ca.
func tlsDriver(t *testing.T, ca *pki.CA, runDir, node string) *Driver {
	t.Helper()
	cert, key, err := ca.IssueNode(node, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string][]byte{"ca.crt": ca.CertPEM, "node.crt": cert, "node.key": key}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := New(ctx, Config{RunDir: runDir, Node: node, Logger: testLogger().With("node", node),
		TLSCA: filepath.Join(dir, "ca.crt"), TLSCert: filepath.Join(dir, "node.crt"), TLSKey: filepath.Join(dir, "node.key")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killAll(d) })
	return d
}

// tlsPair is two drivers with the migration TLS credentials of nodes a and
// b (one cluster CA), and guest g1 running on a.
func tlsPair(t *testing.T) (a, b *Driver, def guestdef.Definition, ctx context.Context) {
	t.Helper()
	f := newFixture(t)
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a = tlsDriver(t, ca, filepath.Join(f.dir, "a"), "a")
	b = tlsDriver(t, ca, filepath.Join(f.dir, "b"), "b")
	ctx = ctxT(t, 2*time.Minute)
	def = f.def("g1")
	if err := a.Start(ctx, def); err != nil {
		t.Fatal(err)
	}
	waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Count >= 5 })
	return a, b, def, ctx
}

// Issue 10, Low: live migration runs over TLS with the cluster's
// certificates: the target listens with TLS, the source connects with it,
// and the guest arrives running.
func TestLiveMigrationTLS(t *testing.T) {
	a, b, def, ctx := tlsPair(t)
	target, err := b.PrepareIncoming(ctx, def, hypervisor.IncomingOptions{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	if !target.TLS {
		t.Fatalf("target %+v does not offer TLS", target)
	}
	bg, err := b.live("g1")
	if err != nil {
		t.Fatal(err)
	}
	var params struct {
		TLSCreds string `json:"tls-creds"`
	}
	if err := bg.mon.run(ctx, "query-migrate-parameters", nil, &params); err != nil || params.TLSCreds != tlsServerID {
		t.Fatalf("target's migration parameters: tls-creds %q, %v; want %s", params.TLSCreds, err, tlsServerID)
	}
	// A target named otherwise than its certificate is refused.
	wrong := target
	wrong.Node = "c"
	if err := a.Migrate(ctx, "g1", wrong, func(hypervisor.Progress) {}); err == nil {
		t.Fatal("migration to a target whose certificate does not name it succeeded")
	} else if !strings.Contains(err.Error(), "failed") {
		t.Logf("wrong target name: %v", err)
	}
	target2, err := b.PrepareIncoming(ctx, def, hypervisor.IncomingOptions{TLS: true})
	if err != nil {
		// The failed attempt may have ended b's incoming QEMU; start anew.
		t.Logf("prepare again: %v", err)
	}
	if target2.URI == "" {
		b.Kill(ctx, "g1")
		if target2, err = b.PrepareIncoming(ctx, def, hypervisor.IncomingOptions{TLS: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Migrate(ctx, "g1", target2, func(hypervisor.Progress) {}); err != nil {
		t.Fatalf("TLS migration: %v", err)
	}
	waitEvent(t, b, "g1", hypervisor.EventResumed, 10*time.Second)
	st, err := b.Status(ctx, "g1")
	if err != nil || st.State != hypervisor.Running {
		t.Fatalf("target after migration: %+v %v", st, err)
	}
}

// A target with the credentials whose manager does not allow TLS (some host
// lacks model.FeatureMigrationTLS: an older source speaks plain TCP only)
// listens on plain TCP, and a source with credentials follows it.
func TestLiveMigrationTLSNotAllowed(t *testing.T) {
	a, b, def, ctx := tlsPair(t)
	target, err := b.PrepareIncoming(ctx, def, hypervisor.IncomingOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if target.TLS {
		t.Fatalf("target %+v offers TLS though its manager did not allow it", target)
	}
	bg, err := b.live("g1")
	if err != nil {
		t.Fatal(err)
	}
	var params struct {
		TLSCreds string `json:"tls-creds"`
	}
	if err := bg.mon.run(ctx, "query-migrate-parameters", nil, &params); err != nil || params.TLSCreds != "" {
		t.Fatalf("target's migration parameters: tls-creds %q, %v; want none", params.TLSCreds, err)
	}
	if err := a.Migrate(ctx, "g1", target, func(hypervisor.Progress) {}); err != nil {
		t.Fatalf("plain migration from a source with TLS credentials: %v", err)
	}
	waitEvent(t, b, "g1", hypervisor.EventResumed, 10*time.Second)
	if st, err := b.Status(ctx, "g1"); err != nil || st.State != hypervisor.Running {
		t.Fatalf("target after migration: %+v %v", st, err)
	}
}

// setTLSFiles replaces d's credential files (what a CA rotation does to
// DATA/pki): the CAs trusted and a certificate for d's node from issuer.
func setTLSFiles(t *testing.T, d *Driver, issuer *pki.CA, trusted ...*pki.CA) {
	t.Helper()
	cert, key, err := issuer.IssueNode(d.cfg.Node, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var bundle []byte
	for _, ca := range trusted {
		bundle = append(bundle, ca.CertPEM...)
	}
	for path, b := range map[string][]byte{d.cfg.TLSCA: bundle, d.cfg.TLSCert: cert, d.cfg.TLSKey: key} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// Issue 10: a guest started before a CA rotation migrates with TLS after
// it without a restart. The guest starts on a with CA A's credentials; then
// a's files become B's (trusted and certificate, as at the rotation's end)
// and c joins with B's. The guest migrates to c (a's running QEMU loads the
// current files) and back (the QEMU a starts to receive it too: a's driver
// wrote its credentials when it started, with A's).
func TestLiveMigrationTLSAfterCARotation(t *testing.T) {
	f := newFixture(t)
	caA, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	caB, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a := tlsDriver(t, caA, filepath.Join(f.dir, "a"), "a")
	ctx := ctxT(t, 3*time.Minute)
	def := f.def("g1")
	if err := a.Start(ctx, def); err != nil {
		t.Fatal(err)
	}
	boot := waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Count >= 3 }).BootID
	migrate := func(from, to *Driver) {
		t.Helper()
		target, err := to.PrepareIncoming(ctx, def, hypervisor.IncomingOptions{TLS: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := from.Migrate(ctx, "g1", target, func(hypervisor.Progress) {}); err != nil {
			t.Fatalf("TLS migration %s -> %s: %v", from.cfg.Node, to.cfg.Node, err)
		}
		waitEvent(t, to, "g1", hypervisor.EventResumed, 10*time.Second)
		if st, err := to.Status(ctx, "g1"); err != nil || st.State != hypervisor.Running {
			t.Fatalf("on %s after migration: %+v %v", to.cfg.Node, st, err)
		}
	}
	setTLSFiles(t, a, caB, caB)
	c := tlsDriver(t, caB, filepath.Join(f.dir, "c"), "c")
	migrate(a, c)
	migrate(c, a)
	// The same run of the guest goes on counting: it was never restarted.
	before, err := testguest.ReadSerial(f.serial)
	if err != nil {
		t.Fatal(err)
	}
	after := waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Count > before.Count })
	if after.BootID != boot || after.Boots != 1 {
		t.Errorf("serial %+v: want the boot %s the guest started with, and no other", after, boot)
	}
}

// Issue 10: a removed host's certificate opens no migration port. The
// target's list of revoked certificates (signed by the cluster CA, as the
// agent writes it) names the source's: the target's QEMU refuses the
// source and the guest stays where it runs. Once the list no longer names
// it, the same migration goes through.
func TestLiveMigrationTLSRevokedPeer(t *testing.T) {
	f := newFixture(t)
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a := tlsDriver(t, ca, filepath.Join(f.dir, "a"), "a")
	b := tlsDriver(t, ca, filepath.Join(f.dir, "b"), "b")
	ctx := ctxT(t, 2*time.Minute)
	def := f.def("g1")
	if err := a.Start(ctx, def); err != nil {
		t.Fatal(err)
	}
	waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Count >= 5 })
	certA, err := pki.ParseCert(mustRead(t, a.cfg.TLSCert))
	if err != nil {
		t.Fatal(err)
	}
	crl := func(serials ...*big.Int) []byte {
		var entries []x509.RevocationListEntry
		for _, s := range serials {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()})
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour), RevokedCertificateEntries: entries}, ca.Cert, ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	}
	b.cfg.TLSCRL = filepath.Join(f.dir, "ca-crl.pem")
	if err := os.WriteFile(b.cfg.TLSCRL, crl(certA.SerialNumber), 0o600); err != nil {
		t.Fatal(err)
	}
	target, err := b.PrepareIncoming(ctx, def, hypervisor.IncomingOptions{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Migrate(ctx, "g1", target, func(hypervisor.Progress) {}); err == nil {
		t.Fatal("a revoked certificate migrated a guest in")
	} else {
		t.Logf("revoked source refused: %v", err)
	}
	if st, err := a.Status(ctx, "g1"); err != nil || st.State != hypervisor.Running {
		t.Fatalf("source after the refused migration: %+v %v", st, err)
	}

	// A list without it: the next incoming QEMU loads it and takes a.
	if err := os.WriteFile(b.cfg.TLSCRL, crl(big.NewInt(12345)), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = b.Kill(ctx, "g1")
	target, err = b.PrepareIncoming(ctx, def, hypervisor.IncomingOptions{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Migrate(ctx, "g1", target, func(hypervisor.Progress) {}); err != nil {
		t.Fatalf("migration once the list no longer names the source: %v", err)
	}
	waitEvent(t, b, "g1", hypervisor.EventResumed, 10*time.Second)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
