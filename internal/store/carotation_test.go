package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// A CA rotation's record goes through its phases, each moved on once; the
// new CA's key stays sealed until the reissue phase makes it the store's
// CA; a second rotation is refused while one is under way; members take
// turns to restart.
func TestCARotationStore(t *testing.T) {
	srv := storetest.Start(t)
	st, ctx := srv.Store, context.Background()
	if err := st.InitCluster(ctx, store.ClusterConfig{Name: "c", ID: "1"}, srv.CA.CertPEM, srv.CA.KeyPEM); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.CARotation(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("rotation before any: %v", err)
	}
	now := time.Now()
	next, err := pki.NewCA("c", now)
	if err != nil {
		t.Fatal(err)
	}
	rot, err := st.StartCARotation(ctx, "r1", next.CertPEM, next.KeyPEM, "admin", now)
	if err != nil || rot.Phase != store.RotationTrust {
		t.Fatalf("start: %+v %v", rot, err)
	}
	if cas, err := pki.ParseCerts(rot.Trust()); err != nil || len(cas) != 2 {
		t.Fatalf("trust bundle in phase trust: %d CAs, %v", len(cas), err)
	}
	if _, err := st.StartCARotation(ctx, "r2", next.CertPEM, next.KeyPEM, "admin", now); !errors.Is(err, store.ErrRotating) {
		t.Fatalf("second rotation: %v, want ErrRotating", err)
	}
	r, err := st.Client().Get(ctx, store.KeyCANextKey)
	if err != nil || len(r.Kvs) != 1 || !pki.IsSealed(r.Kvs[0].Value) {
		t.Fatalf("the new CA key is not sealed in the store: %v", err)
	}
	if cert, key, err := st.CA(ctx); err != nil || string(cert) != string(srv.CA.CertPEM) || string(key) != string(srv.CA.KeyPEM) {
		t.Fatalf("the old CA must sign until reissue: %v", err)
	}
	if err := st.AckCARotation(ctx, "n1", rot, now); err != nil {
		t.Fatal(err)
	}
	acks, err := st.CARotationAcks(ctx)
	if err != nil || acks["n1"].Phase != store.RotationTrust || acks["n1"].ID != "r1" {
		t.Fatalf("acks: %+v %v", acks, err)
	}

	got, rev, err := st.CARotation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	moved, err := st.AdvanceCARotation(ctx, got, rev, now)
	if err != nil || moved.Phase != store.RotationReissue {
		t.Fatalf("advance: %+v %v", moved, err)
	}
	// A second agent that read the same revision does not move it again.
	if _, err := st.AdvanceCARotation(ctx, got, rev, now); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("advance twice from one read: %v, want ErrConflict", err)
	}
	if cert, key, err := st.CA(ctx); err != nil || string(cert) != string(next.CertPEM) || string(key) != string(next.KeyPEM) {
		t.Fatalf("after reissue the new CA signs: %v", err)
	}
	for _, phase := range []string{store.RotationDrop, store.RotationDone} {
		got, rev, err = st.CARotation(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if moved, err = st.AdvanceCARotation(ctx, got, rev, now); err != nil || moved.Phase != phase {
			t.Fatalf("advance to %s: %+v %v", phase, moved, err)
		}
	}
	if cas, err := pki.ParseCerts(moved.Trust()); err != nil || len(cas) != 1 || pki.Fingerprint(cas[0]) != pki.Fingerprint(next.Cert) {
		t.Fatalf("trust bundle when done: %v", err)
	}
	// Done: another rotation may start, and starts with no acks.
	if _, err := st.StartCARotation(ctx, "r2", srv.CA.CertPEM, srv.CA.KeyPEM, "admin", now); err != nil {
		t.Fatal(err)
	}
	if acks, err := st.CARotationAcks(ctx); err != nil || len(acks) != 0 {
		t.Fatalf("acks of a new rotation: %+v %v", acks, err)
	}

	// Restart turns: one host at a time, released by its holder or its lease.
	lease, err := st.Client().Grant(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := st.LockCARestart(ctx, "n1", lease.ID); err != nil || h != "n1" {
		t.Fatalf("n1 takes the turn: %q %v", h, err)
	}
	if h, err := st.LockCARestart(ctx, "n2", clientv3.NoLease); err != nil || h != "n1" {
		t.Fatalf("n2 while n1 restarts: %q %v, want n1", h, err)
	}
	if err := st.UnlockCARestart(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	if h, _ := st.LockCARestart(ctx, "n2", clientv3.NoLease); h != "n1" {
		t.Fatalf("n2 gave back n1's turn: holder %q", h)
	}
	if _, err := st.Client().Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	if h, err := st.LockCARestart(ctx, "n2", clientv3.NoLease); err != nil || h != "n2" {
		t.Fatalf("n2 after n1's lease ended: %q %v", h, err)
	}
}
