package agent

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

// A single host goes through a CA rotation by itself: its store member is
// restarted twice (the client has no other member to use meanwhile), its
// certificate is re-issued by the new CA, and afterwards its store and API
// take only certificates of the new CA. The three-host course (a host
// down, joins, old tokens) is test/e2e's TestCARotation.
func TestCARotationSingleHost(t *testing.T) {
	dir := t.TempDir()
	a, err := New(Config{Node: "h1", DataDir: filepath.Join(dir, "h1"), Listen: freeAddr(t), PeerListen: freeAddr(t), StoreClientListen: freeAddr(t),
		Init: true, StoreMembers: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	caFile, certFile, keyFile := a.TLSFiles()
	oldCA, _ := os.ReadFile(caFile)
	oldCert, _ := os.ReadFile(certFile)
	keyPEM, _ := os.ReadFile(keyFile)
	next, err := pki.NewCA("haven", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := a.Store().StartCARotation(ctx, "r1", next.CertPEM, next.KeyPEM, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	for {
		r, _, err := a.Store().CARotation(ctx)
		if err == nil && r.Phase == store.RotationDone {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("rotation not done: %+v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	t.Logf("rotation of one host took %v", time.Since(t0).Round(10*time.Millisecond))
	trust, _ := os.ReadFile(caFile)
	if cas, err := pki.ParseCerts(trust); err != nil || len(cas) != 1 || pki.Fingerprint(cas[0]) != pki.Fingerprint(next.Cert) {
		t.Fatalf("trust after the rotation: %v", err)
	}
	cert, _ := os.ReadFile(certFile)
	leaf, _ := pki.ParseCert(cert)
	if leaf.CheckSignatureFrom(next.Cert) != nil {
		t.Fatal("the host's certificate is not the new CA's")
	}
	// The store and the API with the new CA's certificate; not with the old.
	good, err := pki.ClientTLS(trust, cert, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	eps := []string{a.clientURL()}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, TLS: good, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cli.Get(ctx, store.KeyClusterConfig)
	cli.Close()
	if err != nil {
		t.Fatalf("the store with the new CA's certificate: %v", err)
	}
	if _, err := a.Store().Client().Get(ctx, store.KeyClusterConfig); err != nil {
		t.Fatalf("the agent's own store client after the rotation: %v", err)
	}
	bad, err := pki.ClientTLS(trust, oldCert, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cli, err = clientv3.New(clientv3.Config{Endpoints: eps, TLS: bad, DialTimeout: 2 * time.Second})
	if err == nil {
		gctx, gcancel := context.WithTimeout(ctx, 3*time.Second)
		_, err = cli.Get(gctx, store.KeyClusterConfig)
		gcancel()
		cli.Close()
	}
	if err == nil {
		t.Error("the store took the old CA's certificate")
	}
	if conn, err := tls.Dial("tcp", a.cfg.Listen, bad); err == nil {
		// TLS 1.3: the server's verdict on the client certificate comes
		// with the first read.
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
		if err == nil {
			t.Error("the API took the old CA's certificate")
		}
	}
	oldOnly, _ := pki.ClientTLS(oldCA, nil, nil)
	if conn, err := tls.Dial("tcp", a.cfg.Listen, oldOnly); err == nil {
		conn.Close()
		t.Error("the API presents a certificate of the old CA")
	}
}

// Three hosts in one process rotate their CA: every store member restarts
// twice, one at a time, and every host keeps its store all along and ends
// with a certificate of the new CA.
func TestCARotationThreeHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("three agents")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	var agents []*Agent
	for i, name := range []string{"h1", "h2", "h3"} {
		cfg := Config{Node: name, DataDir: filepath.Join(dir, name), Listen: freeAddr(t), PeerListen: freeAddr(t), StoreClientListen: freeAddr(t)}
		if i == 0 {
			cfg.Init = true
		} else {
			cfg.JoinAddr, cfg.JoinToken = agents[0].APIURL(), agents[0].JoinToken()
		}
		a, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(ctx); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		defer a.Stop(context.Background())
		agents = append(agents, a)
	}
	next, err := pki.NewCA("haven", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := agents[1].Store().StartCARotation(ctx, "r1", next.CertPEM, next.KeyPEM, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	for {
		r, _, err := agents[2].Store().CARotation(ctx)
		if err == nil && r.Phase == store.RotationDone {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("rotation not done: %+v %v", r, err)
		}
		time.Sleep(100 * time.Millisecond) // polling interval
	}
	t.Logf("rotation of three hosts took %v", time.Since(t0).Round(10*time.Millisecond))
	for _, a := range agents {
		if _, err := a.Store().Client().Get(ctx, store.KeyClusterConfig); err != nil {
			t.Errorf("%s's store after the rotation: %v", a.cfg.Node, err)
		}
		leaf, err := a.hostCert()
		if err != nil || leaf.CheckSignatureFrom(next.Cert) != nil {
			t.Errorf("%s's certificate is not the new CA's: %v", a.cfg.Node, err)
		}
	}
}
