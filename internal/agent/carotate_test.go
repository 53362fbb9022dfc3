package agent

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
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
	waitRotationDone(ctx, t, a.Store())
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

// Three hosts in one process rotate their CA, one of them (h3) down when
// it starts: no member restarts while h3 is down and the rotation waits
// for it; back, h3 catches up. Every store member restarts twice, one at
// a time, every host keeps its store and ends with a certificate of the
// new CA. A join token made before is refused after (it pins the old CA);
// one made after admits a host.
func TestCARotationThreeHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("three agents")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	agents := map[string]*Agent{}
	cfgs := map[string]Config{}
	start := func(cfg Config) *Agent {
		t.Helper()
		a, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(ctx); err != nil {
			t.Fatalf("start %s: %v", cfg.Node, err)
		}
		t.Cleanup(func() { a.Stop(context.Background()) })
		agents[cfg.Node] = a
		return a
	}
	for i, name := range []string{"h1", "h2", "h3"} {
		cfg := Config{Node: name, DataDir: filepath.Join(dir, name), Listen: freeAddr(t), PeerListen: freeAddr(t), StoreClientListen: freeAddr(t)}
		if i == 0 {
			cfg.Init = true
		} else {
			cfg.JoinAddr, cfg.JoinToken = agents["h1"].APIURL(), agents["h1"].JoinToken()
		}
		start(cfg)
		cfg.Init, cfg.JoinAddr, cfg.JoinToken = false, "", ""
		cfgs[name] = cfg
	}
	agents["h3"].Stop(ctx)
	next, err := pki.NewCA("haven", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h1 := agents["h1"]
	if _, err := agents["h2"].Store().StartCARotation(ctx, "r1", next.CertPEM, next.KeyPEM, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	// h1 and h2 trust both CAs but do not restart their members.
	for _, name := range []string{"h1", "h2"} {
		for {
			cas, err := pki.ParseCerts(agents[name].trustPEM())
			if err == nil && len(cas) == 2 {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%s does not trust both CAs", name)
			}
			time.Sleep(50 * time.Millisecond) // polling interval
		}
	}
	// Each has looked and found h3 down.
	for agents["h1"].caRestartWaits.Load() == 0 || agents["h2"].caRestartWaits.Load() == 0 {
		if ctx.Err() != nil {
			t.Fatal("h1 and h2 never found h3's member down")
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	if r, _, err := h1.Store().CARotation(ctx); err != nil || r.Phase != store.RotationTrust {
		t.Fatalf("rotation with h3 down: %+v %v", r, err)
	}
	for _, name := range []string{"h1", "h2"} {
		if cas, _ := pki.ParseCerts(agents[name].memberStartedWith()); len(cas) != 1 {
			t.Errorf("%s restarted its store member while h3 was down", name)
		}
	}
	t0 := time.Now()
	start(cfgs["h3"])
	waitRotationDone(ctx, t, h1.Store())
	t.Logf("rotation done %v after h3 came back", time.Since(t0).Round(10*time.Millisecond))
	for _, name := range []string{"h1", "h2", "h3"} {
		a := agents[name]
		if _, err := a.Store().Client().Get(ctx, store.KeyClusterConfig); err != nil {
			t.Errorf("%s's store after the rotation: %v", name, err)
		}
		leaf, err := a.hostCert()
		if err != nil || leaf.CheckSignatureFrom(next.Cert) != nil {
			t.Errorf("%s's certificate is not the new CA's: %v", name, err)
		}
		if cas, _ := pki.ParseCerts(a.trustPEM()); len(cas) != 1 || pki.Fingerprint(cas[0]) != pki.Fingerprint(next.Cert) {
			t.Errorf("%s trusts %d CAs after the rotation", name, len(cas))
		}
	}
	// The init join token pins the old CA: a host given it refuses.
	cfg := Config{Node: "h4", DataDir: filepath.Join(dir, "h4"), Listen: freeAddr(t), PeerListen: freeAddr(t), StoreClientListen: freeAddr(t),
		JoinAddr: h1.APIURL(), JoinToken: h1.JoinToken()}
	a4, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a4.Start(ctx); err == nil || !strings.Contains(err.Error(), "does not match the join token") {
		a4.Stop(ctx)
		t.Fatalf("join with a token of the old CA: %v", err)
	}
	tok := pki.NewJoinToken(pki.Fingerprint(next.Cert))
	if err := h1.Store().PutToken(ctx, store.TokenRecord{ID: tok.ID, Hash: tok.Hash(), Role: store.RoleJoin, Created: time.Now(), Expires: time.Now().Add(time.Hour), Uses: 1}); err != nil {
		t.Fatal(err)
	}
	cfg.DataDir, cfg.JoinToken = filepath.Join(dir, "h4b"), tok.String()
	start(cfg)
}

// waitRotationDone polls until the CA rotation is done or ctx ends.
func waitRotationDone(ctx context.Context, t *testing.T, st *store.Store) {
	t.Helper()
	for {
		r, _, err := st.CARotation(ctx)
		if err == nil && r.Phase == store.RotationDone {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("rotation not done: %+v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}
