package agent

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// TestEnforceStoreRoles: in a cluster made before the store roles, the
// manager turns them on only once every online host has the feature
// level, for every registered host (an offline one too), and records it.
func TestEnforceStoreRoles(t *testing.T) {
	srv := storetest.Start(t)
	ctx := context.Background()
	if err := srv.Store.InitCluster(ctx, store.ClusterConfig{Name: "c", ID: "1"}, srv.CA.CertPEM, srv.CA.KeyPEM); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"test", "b"} {
		if err := srv.Store.RegisterNode(ctx, store.NodeRecord{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	live, err := srv.Store.StartLiveness(ctx, model.NodeFacts{Name: "test", FeatureLevel: model.FeatureStoreRoles - 1}, 5*time.Second, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Stop(ctx)
	l, err := srv.Store.Campaign(ctx, "test", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{st: srv.Store, now: time.Now, log: slog.Default()}
	waiting := false
	if done := a.storeRolesStep(ctx, l, &waiting); done || !waiting {
		t.Fatalf("a host below the level: done %v, waiting %v", done, waiting)
	}
	if on, err := srv.Store.RolesEnforced(ctx); err != nil || on {
		t.Fatalf("roles on with a host below the level: %v %v", on, err)
	}
	if err := live.UpdateFacts(ctx, model.NodeFacts{Name: "test", FeatureLevel: model.FeatureStoreRoles}); err != nil {
		t.Fatal(err)
	}
	if done := a.storeRolesStep(ctx, l, &waiting); !done {
		t.Fatal("every host at the level: roles not turned on")
	}
	if on, err := srv.Store.RolesEnforced(ctx); err != nil || !on {
		t.Fatalf("roles after: %v %v", on, err)
	}
	if cc, err := srv.Store.ClusterConfig(ctx); err != nil || !cc.StoreRoles {
		t.Fatalf("cluster config after: %+v %v", cc, err)
	}
	// b, offline, got its user: its certificate writes its own report
	// and not test's.
	cert, key, err := srv.CA.IssueNode("b", []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.ClientTLS(srv.CA.CertPEM, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := store.Connect(ctx, store.ClientConfig{Endpoints: srv.Endpoints, TLS: tlsCfg}, nil, nil)
	if err != nil {
		t.Fatalf("b after the roles went on: %v", err)
	}
	defer b.Close()
	if _, err := b.Client().Put(ctx, store.PrefixReports+"b/g1", "{}"); err != nil {
		t.Errorf("b writes its report: %v", err)
	}
	if _, err := b.Client().Put(ctx, store.KeyNodeLive("test"), "{}"); !store.IsDenied(err) {
		t.Errorf("b wrote test's liveness: %v, want permission denied", err)
	}
	// The next term finds them on and has nothing to do.
	if done := a.storeRolesStep(ctx, l, &waiting); !done {
		t.Error("roles on: the step is not done")
	}
}
