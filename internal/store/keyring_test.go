package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// host is another host of the test cluster: its own certificate and key,
// and a store connection that opens sealed values as that host.
func host(t *testing.T, srv *storetest.Server, name string) (st *store.Store, certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := srv.CA.IssueNode(name, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st = srv.Connect(t)
	st.SetIdentity(name, certPEM, keyPEM)
	return st, certPEM, keyPEM
}

// The CA key is sealed at init; a host granted the key opens it, a host
// not granted does not; removing a host rotates the key so that its copy
// opens nothing any more, while the others still do.
func TestSecretKeyGrantAndRotate(t *testing.T) {
	srv := storetest.Start(t)
	st, ctx := srv.Store, context.Background()
	if err := st.InitCluster(ctx, store.ClusterConfig{Name: "c", ID: "1"}, srv.CA.CertPEM, srv.CA.KeyPEM); err != nil {
		t.Fatal(err)
	}
	r, err := st.Client().Get(ctx, store.KeyCAKey)
	if err != nil || len(r.Kvs) != 1 || strings.Contains(string(r.Kvs[0].Value), "PRIVATE KEY") {
		t.Fatalf("CA key in the store: %v, in the clear or missing", err)
	}
	if _, key, err := st.CA(ctx); err != nil || string(key) != string(srv.CA.KeyPEM) {
		t.Fatalf("the creating host reads the CA key: %v", err)
	}
	n2, n2Cert, _ := host(t, srv, "n2")
	if _, _, err := n2.CA(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a host not granted the key read the CA key: %v", err)
	}
	if err := st.GrantKey(ctx, "n2", n2Cert); err != nil {
		t.Fatal(err)
	}
	if _, key, err := n2.CA(ctx); err != nil || string(key) != string(srv.CA.KeyPEM) {
		t.Fatalf("a granted host reads the CA key: %v", err)
	}
	if err := n2.PutSealed(ctx, store.KeyFenceConfig, []byte(`{"devices":[]}`)); err != nil {
		t.Fatal(err)
	}
	if err := n2.PutSealed(ctx, store.KeyNotify, []byte(`{"webhooks":[]}`)); err != nil {
		t.Fatal(err)
	}
	n3, n3Cert, _ := host(t, srv, "n3")
	if err := n2.GrantKey(ctx, "n3", n3Cert); err != nil {
		t.Fatal(err)
	}
	old, err := n2.SecretKey(ctx)
	if err != nil {
		t.Fatal(err)
	}

	id, err := st.RotateSecretKey(ctx, "n2")
	if err != nil || id == "" || id == old.ID {
		t.Fatalf("rotate: %q %v (old key %s)", id, err, old.ID)
	}
	// n2 (removed) holds no entry; the key it kept opens nothing stored.
	if _, err := n2.SecretKey(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the removed host's entry: %v, want none", err)
	}
	for _, key := range store.SealedKeys {
		r, err := st.Client().Get(ctx, key)
		if err == nil && len(r.Kvs) == 0 && key == store.KeyCANextKey {
			continue // only while the CA is rotated (TestCARotationStore)
		}
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("read %s: %v", key, err)
		}
		if _, err := old.Open(key, r.Kvs[0].Value); err == nil {
			t.Errorf("the removed host's old secret key opens %s after rotation", key)
		}
	}
	for name, h := range map[string]*store.Store{"n1": st, "n3": n3} {
		if _, key, err := h.CA(ctx); err != nil || string(key) != string(srv.CA.KeyPEM) {
			t.Errorf("host %s after rotation: %v", name, err)
		}
		if b, err := h.GetSealed(ctx, store.KeyFenceConfig); err != nil || string(b) != `{"devices":[]}` {
			t.Errorf("host %s fence config after rotation: %q %v", name, b, err)
		}
	}
	// A write sealed by a host that missed the rotation is refused, not
	// written with a key the others no longer hold.
	if err := n2.PutSealed(ctx, store.KeyFenceConfig, []byte(`{}`)); err == nil {
		t.Error("the removed host wrote a sealed value")
	}
}

// A store written before secrets were sealed (the CA key in the clear) is
// sealed by the first agent that starts; the heartbeat key stays what it
// was (the old CA key's bytes), and other hosts get the key by asking.
func TestSealSecretsOfAnOldStore(t *testing.T) {
	srv := storetest.Start(t)
	st, ctx := srv.Store, context.Background()
	cli := st.Client()
	for k, v := range map[string]string{store.KeyCACert: string(srv.CA.CertPEM), store.KeyCAKey: string(srv.CA.KeyPEM), store.KeyFenceConfig: `{"devices":[]}`, store.KeyNotify: `{"webhooks":[]}`} {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	if hb, err := st.HeartbeatKey(ctx); err != nil || string(hb) != string(srv.CA.KeyPEM) {
		t.Fatalf("heartbeat key of an old store: %v", err)
	}
	if _, key, err := st.CA(ctx); err != nil || string(key) != string(srv.CA.KeyPEM) {
		t.Fatalf("an old store's CA key: %v", err)
	}
	sealed, err := st.SealSecrets(ctx)
	if err != nil || !sealed {
		t.Fatalf("seal: %v %v", sealed, err)
	}
	if again, err := st.SealSecrets(ctx); err != nil || again {
		t.Fatalf("sealed twice: %v %v", again, err)
	}
	// The fence configuration is sealed once no registered host may run
	// a release that cannot open it (oldreleases_test.go): here, with no
	// host registered, at once.
	r, _ := cli.Get(ctx, store.KeyFenceConfig)
	if pki.IsSealed(r.Kvs[0].Value) {
		t.Errorf("SealSecrets sealed the fence configuration itself")
	}
	if form, changed, err := st.KeepFenceReadable(ctx); err != nil || !changed || form.Clear {
		t.Fatalf("seal the fence configuration: %+v %v %v", form, changed, err)
	}
	for _, key := range store.SealedKeys {
		r, _ := cli.Get(ctx, key)
		if len(r.Kvs) == 0 && key == store.KeyCANextKey {
			continue // only while the CA is rotated
		}
		if !pki.IsSealed(r.Kvs[0].Value) {
			t.Errorf("%s not sealed", key)
		}
	}
	if hb, err := st.HeartbeatKey(ctx); err != nil || string(hb) != string(srv.CA.KeyPEM) {
		t.Errorf("heartbeat key after sealing: %v, want the old one kept", err)
	}
	// Another host asks; a check that refuses leaves it without the key,
	// one that accepts grants it.
	n2, _, _ := host(t, srv, "n2")
	if err := n2.RequestKey(ctx); err != nil {
		t.Fatal(err)
	}
	err = st.GrantRequests(ctx, func(string, []byte) error { return errors.New("not registered") })
	if err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Fatalf("refused request: %v", err)
	}
	if _, err := n2.SecretKey(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused host holds the key: %v", err)
	}
	if err := n2.RequestKey(ctx); err != nil {
		t.Fatal(err)
	}
	var asked []string
	if err := st.GrantRequests(ctx, func(node string, _ []byte) error { asked = append(asked, node); return nil }); err != nil {
		t.Fatal(err)
	}
	if _, key, err := n2.CA(ctx); err != nil || string(key) != string(srv.CA.KeyPEM) || len(asked) != 1 || asked[0] != "n2" {
		t.Fatalf("granted host: %v (asked %v)", err, asked)
	}
}
