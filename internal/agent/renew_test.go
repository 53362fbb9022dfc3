package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/pki"
)

// A host certificate is renewed before it expires, with the same name,
// addresses and key; the registration names the new serial and keeps the
// old ones (for node remove), and the store, the API and a new store
// connection take the new certificate without a restart. Without renewal
// a host's certificate runs out after five years and the host is locked
// out of its own cluster.
func TestHostCertificateRenewed(t *testing.T) {
	dir := t.TempDir()
	// Due two seconds after issue: the agent renews every two seconds.
	a, err := New(Config{Node: "h1", DataDir: filepath.Join(dir, "h1"), Listen: freeAddr(t), PeerListen: freeAddr(t), StoreClientListen: freeAddr(t),
		Init: true, StoreMembers: 1, CertRenewBefore: pki.NodeValidity - 2*time.Second, CertCheckEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	caFile, certFile, keyFile := a.TLSFiles()
	first, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := pki.ParseCert(first)
	oldSerial := old.SerialNumber.Text(16)
	deadline := time.Now().Add(30 * time.Second)
	var rec struct{ serial string }
	for {
		r, err := a.Store().Node(ctx, "h1")
		if err == nil && r.CertSerial != oldSerial && len(r.PrevSerials) >= 2 {
			rec.serial = r.CertSerial
			if !slices.Contains(r.PrevSerials, oldSerial) {
				t.Fatalf("previous serials %v do not name the first certificate %s", r.PrevSerials, oldSerial)
			}
			if len(r.PrevSerials) > maxPrevSerials {
				t.Fatalf("%d previous serials kept, want at most %d", len(r.PrevSerials), maxPrevSerials)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("certificate not renewed twice: %+v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	renewed, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.ParseCert(renewed)
	if err != nil {
		t.Fatal(err)
	}
	if cert.SerialNumber.Cmp(old.SerialNumber) == 0 || cert.Subject.CommonName != "h1" ||
		!slices.Equal(cert.DNSNames, old.DNSNames) || len(cert.IPAddresses) != len(old.IPAddresses) ||
		!cert.NotAfter.After(old.NotAfter) {
		t.Fatalf("renewed certificate %v %v %v %v, was %v %v %v", cert.Subject.CommonName, cert.DNSNames, cert.IPAddresses, cert.NotAfter, old.DNSNames, old.IPAddresses, old.NotAfter)
	}
	if !bytes.Equal(cert.RawSubjectPublicKeyInfo, old.RawSubjectPublicKeyInfo) {
		t.Fatal("the renewed certificate has another key")
	}
	// The API presents a renewed certificate.
	caPEM, _ := os.ReadFile(caFile)
	keyPEM, _ := os.ReadFile(keyFile)
	ccfg, err := pki.ClientTLS(caPEM, renewed, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", a.cfg.Listen, ccfg.Clone())
	if err != nil {
		t.Fatal(err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if leaf.SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Error("the API still presents the first certificate")
	}
	// A new store connection with the renewed certificate works, and the
	// host still opens the sealed CA key.
	cli, err := clientv3.New(clientv3.Config{Endpoints: a.Store().Client().Endpoints(), TLS: ccfg.Clone(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Get(ctx, "/haven/cluster/config"); err != nil {
		t.Fatalf("the store with the renewed certificate: %v", err)
	}
	if _, _, err := a.Store().CA(ctx); err != nil {
		t.Fatalf("the CA key after renewal: %v", err)
	}
}
