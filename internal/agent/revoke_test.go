package agent

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

// A revoked certificate's serial reaches ca-crl.pem, a revocation list
// signed by the cluster CA (what libvirtd's GnuTLS checks), and the
// agent's OnCACRL hooks run after each rewrite.
func TestCARevocationList(t *testing.T) {
	dir := t.TempDir()
	a, err := New(Config{Node: "h1", DataDir: filepath.Join(dir, "h1"), Listen: freeAddr(t), PeerListen: freeAddr(t), StoreClientListen: freeAddr(t),
		Init: true, StoreMembers: 1})
	if err != nil {
		t.Fatal(err)
	}
	hooks := make(chan struct{}, 10)
	a.OnCACRL(func() { hooks <- struct{}{} })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	caFile, _, _ := a.TLSFiles()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCert(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	// read returns the serials of a list the cluster CA signed.
	read := func() ([]string, error) {
		b, err := os.ReadFile(a.CACRLFile())
		if err != nil {
			return nil, err
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "X509 CRL" {
			t.Fatalf("%s is not a PEM revocation list: %q", a.CACRLFile(), b)
		}
		l, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.CheckSignatureFrom(ca); err != nil {
			t.Fatalf("the revocation list is not signed by the cluster CA: %v", err)
		}
		var out []string
		for _, e := range l.RevokedCertificateEntries {
			out = append(out, e.SerialNumber.Text(16))
		}
		return out, nil
	}
	if err := a.Store().Revoke(ctx, store.Revocation{Serial: "abc123", Node: "gone", Revoked: time.Now()}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := read()
		if err == nil && len(got) == 1 && got[0] == "abc123" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the CA-signed revocation list: %v, %v; want serial abc123", got, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	select {
	case <-hooks:
	case <-time.After(10 * time.Second):
		t.Fatal("the OnCACRL hook did not run")
	}
}

// The CA-signed list is signed again only when the serials or the CA
// changed: an agent's start rewrote it with a new number, and libvirtd,
// made to reload it, failed the TLS handshakes it answered meanwhile.
func TestCARevocationListKeptWhenSame(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ca-crl.pem")
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := writeCACRL(path, ca, []string{"0AB", "12"}, t0); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(path)
	if err := writeCACRL(path, ca, []string{"12", "ab"}, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(path); string(again) != string(first) {
		t.Error("the same serials signed by the same CA: the list was written again")
	}
	other, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what    string
		ca      *pki.CA
		serials []string
	}{{"a serial more", ca, []string{"12", "ab", "cd"}}, {"a serial less", ca, []string{"12"}}, {"another CA", other, []string{"12"}}} {
		before, _ := os.ReadFile(path)
		if err := writeCACRL(path, c.ca, c.serials, t0.Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if after, _ := os.ReadFile(path); string(after) == string(before) {
			t.Errorf("%s: the list was not written again", c.what)
		}
		if !sameCACRL(path, c.ca.Cert, normalSerials(c.serials)) {
			t.Errorf("%s: the list written is not the one asked for", c.what)
		}
	}
}
