package store_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// A snapshot of a Haven store verifies; a damaged or truncated one, or one
// of a store without a Haven cluster, does not.
func TestSnapshotVerify(t *testing.T) {
	srv := storetest.Start(t)
	st := srv.Store
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	save := func(name string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Snapshot(ctx, f); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		return path
	}
	bare := save("bare.snap")
	if _, err := store.VerifySnapshot(bare); err == nil || !strings.Contains(err.Error(), "no Haven cluster") {
		t.Fatalf("snapshot without a cluster: %v", err)
	}
	if err := st.InitCluster(ctx, store.ClusterConfig{Name: "prod", ID: "c1", StoreMembers: 3, Created: time.Now()}, []byte("ca"), []byte("key")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Client().Put(ctx, "/haven/guests/a", "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Client().Delete(ctx, "/haven/guests/a"); err != nil {
		t.Fatal(err)
	}
	path := save("ok.snap")
	info, err := store.VerifySnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || info.Cluster.Name != "prod" || info.Haven < 5 || info.Revision == 0 {
		t.Fatalf("info %+v", info)
	}
	if info.Haven != 5 {
		t.Errorf("%d live Haven keys, want 5 (config, CA cert and sealed key, the keyring entry, the heartbeat key; the deleted guest is gone)", info.Haven)
	}
	data, _ := os.ReadFile(path)
	damaged := filepath.Join(dir, "damaged.snap")
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(damaged, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.VerifySnapshot(damaged); err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Fatalf("damaged snapshot: %v", err)
	}
	short := filepath.Join(dir, "short.snap")
	if err := os.WriteFile(short, data[:100], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.VerifySnapshot(short); err == nil {
		t.Fatal("a truncated snapshot verified")
	}
}
