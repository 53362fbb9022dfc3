package store_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// TestBackupOfExternalEtcdWithRoles: an external etcd (the system's, 3.4
// on Debian) that trusts the cluster CA and enforces the store roles
// refuses a host's snapshot (3.4 with its auth store's own error); the
// Store then takes it as root. Skipped without an etcd binary.
func TestBackupOfExternalEtcdWithRoles(t *testing.T) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skipf("no etcd binary: %v", err)
	}
	dir := t.TempDir()
	ca, err := pki.NewCA("t", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.IssueNode("e1", []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for f, b := range map[string][]byte{"ca.crt": ca.CertPEM, "e1.crt": cert, "e1.key": key} {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cu, pu := "https://"+storetest.FreeAddr(t), "http://"+storetest.FreeAddr(t)
	cmd := exec.Command(bin, "--data-dir", filepath.Join(dir, "data"), "--listen-client-urls", cu, "--advertise-client-urls", cu,
		"--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu, "--initial-cluster", "default="+pu,
		"--cert-file", filepath.Join(dir, "e1.crt"), "--key-file", filepath.Join(dir, "e1.key"),
		"--trusted-ca-file", filepath.Join(dir, "ca.crt"), "--client-cert-auth")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	hc, hk, err := ca.IssueNode("h1", []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.ClientTLS(ca.CertPEM, hc, hk)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var st *store.Store
	for deadline := time.Now().Add(20 * time.Second); ; {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err = store.Connect(cctx, store.ClientConfig{Endpoints: []string{cu}, TLS: tlsCfg}, nil, nil)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd at %s: %v", cu, err)
		}
		time.Sleep(100 * time.Millisecond) // polling interval
	}
	defer st.Close()
	st.SetIdentity("h1", hc, hk)
	if err := st.InitCluster(ctx, store.ClusterConfig{Name: "c", ID: "1"}, ca.CertPEM, ca.KeyPEM); err != nil {
		t.Fatal(err)
	}
	if err := store.EnforceRoles(ctx, st.Client(), []string{"h1"}); err != nil {
		t.Fatal(err)
	}
	rc, err := st.Client().Snapshot(ctx)
	if err == nil {
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
	}
	if !store.IsDenied(err) {
		t.Errorf("a host's own snapshot: %v, want a refusal IsDenied knows", err)
	}
	if n, err := st.Snapshot(ctx, io.Discard); err != nil || n == 0 {
		t.Errorf("snapshot as root: %d bytes, %v", n, err)
	}
}
