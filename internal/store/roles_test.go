package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// connectAs opens a store connection with a certificate of the test CA
// whose CN is cn (a host, or root).
func connectAs(t testing.TB, srv *storetest.Server, cn string) *store.Store {
	t.Helper()
	cert, key, err := srv.CA.IssueNode(cn, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.ClientTLS(srv.CA.CertPEM, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Connect reads the cluster config: that is the check that cn may read.
	st, err := store.Connect(ctx, store.ClientConfig{Endpoints: srv.Endpoints, TLS: tlsCfg}, nil, nil)
	if err != nil {
		t.Fatalf("connect as %s: %v", cn, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestHostRoles: with the store's roles enforced (etcd authentication by
// certificate CN), a host writes the shared keys and its own, but not
// another host's reports, liveness or pool checks, nor keys outside
// Haven's; a removed host's certificate (its user deleted) reads nothing,
// even from a store that does not check revocations (this one has no CRL).
func TestHostRoles(t *testing.T) {
	srv := storetest.Start(t)
	ctx := context.Background()
	// Before authentication is on, any client sets the roles up.
	if err := store.EnforceRoles(ctx, srv.Store.Client(), []string{"test", "a", "b"}); err != nil {
		t.Fatal(err)
	}
	root := connectAs(t, srv, store.RootUser).Client()
	a, b := connectAs(t, srv, "a"), connectAs(t, srv, "b")
	// "test" is a host too: the server's own client keeps working.
	if _, err := srv.Store.Client().Put(ctx, store.PrefixGuests+"g0", "{}"); err != nil {
		t.Fatalf("host test writes a guest: %v", err)
	}

	// b is live and reports its guest and pool, under its lease.
	lb, err := b.StartLiveness(ctx, model.NodeFacts{Name: "b"}, 2*time.Second, 500*time.Millisecond)
	if err != nil {
		t.Fatalf("b's liveness: %v", err)
	}
	defer lb.Stop(ctx)
	for _, k := range []string{store.PrefixReports + "b/g1", store.PrefixPoolHealth + "b/p1"} {
		if _, err := b.Client().Put(ctx, k, "{}", clientv3.WithLease(lb.Lease())); err != nil {
			t.Fatalf("b writes its own %s: %v", k, err)
		}
	}
	// b's lease stays alive: its keepalives are checked against its keys.
	if _, err := b.Client().KeepAliveOnce(ctx, lb.Lease()); err != nil {
		t.Fatalf("b keeps its lease alive: %v", err)
	}

	ac := a.Client()
	for _, k := range []string{
		store.PrefixReports + "b/g1", store.PrefixReports + "b/g2", store.KeyNodeLive("b"),
		store.PrefixPoolHealth + "b/p1", "/other/x", "/havenx",
	} {
		if _, err := ac.Put(ctx, k, "{}"); !store.IsDenied(err) {
			t.Errorf("host a wrote %s: %v, want permission denied", k, err)
		}
		if _, err := ac.Delete(ctx, k); !store.IsDenied(err) {
			t.Errorf("host a deleted %s: %v, want permission denied", k, err)
		}
	}
	// Nor in a transaction, nor by revoking b's lease (its keys go with it).
	if _, err := ac.Txn(ctx).Then(clientv3.OpPut(store.PrefixGuests+"g1", "{}"), clientv3.OpPut(store.PrefixReports+"b/g1", "{}")).Commit(); !store.IsDenied(err) {
		t.Errorf("host a wrote b's report in a transaction: %v", err)
	}
	if _, err := ac.Delete(ctx, store.PrefixReports, clientv3.WithPrefix()); !store.IsDenied(err) {
		t.Errorf("host a deleted every report: %v", err)
	}
	if _, err := ac.Revoke(ctx, lb.Lease()); !store.IsDenied(err) {
		t.Errorf("host a revoked b's lease: %v", err)
	}
	// Nor keep b's lease alive: a dead host cannot be made to look alive.
	if _, err := ac.KeepAliveOnce(ctx, lb.Lease()); !store.IsDenied(err) {
		t.Errorf("host a kept b's lease alive: %v", err)
	}
	if resp, err := ac.Get(ctx, store.PrefixReports+"b/g1"); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "{}" {
		t.Fatalf("b's report after a's attempts: %v %v", resp, err)
	}

	// What a host does write: its own keys, the shared ones (the API's and
	// the manager's), and other hosts' registrations (joins, removals).
	la, err := a.StartLiveness(ctx, model.NodeFacts{Name: "a"}, 2*time.Second, 500*time.Millisecond)
	if err != nil {
		t.Fatalf("a's liveness: %v", err)
	}
	defer la.Stop(ctx)
	if _, err := ac.Put(ctx, store.PrefixReports+"a/g3", "{}", clientv3.WithLease(la.Lease())); err != nil {
		t.Errorf("a writes its own report: %v", err)
	}
	for _, k := range []string{store.PrefixGuests + "g1", store.PrefixUsers + "u", store.PrefixTokens + "t", store.PrefixOrders + "b/g1", store.PrefixEvents + "1", store.KeyFenceConfig, store.PrefixManagerLog + "1"} {
		if _, err := ac.Put(ctx, k, "{}"); err != nil {
			t.Errorf("a writes shared %s: %v", k, err)
		}
	}
	if _, err := ac.Get(ctx, store.Prefix, clientv3.WithPrefix()); err != nil {
		t.Errorf("a reads the whole store: %v", err)
	}
	l, err := a.Campaign(ctx, "a", 2*time.Second)
	if err != nil {
		t.Fatalf("a campaigns: %v", err)
	}
	if _, err := l.Do(ctx, clientv3.OpPut(store.KeyNodeState("b"), "{}")); err != nil {
		t.Errorf("the manager writes a node state: %v", err)
	}
	if err := a.RegisterNode(ctx, store.NodeRecord{Name: "c"}); err != nil {
		t.Errorf("a registers a joining host: %v", err)
	}
	if err := a.DeleteNode(ctx, "b"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a deletes live b: %v, want a conflict", err)
	}
	if err := a.DeleteNode(ctx, "c"); err != nil {
		t.Errorf("a deletes offline c: %v", err)
	}

	// b is removed: its certificate reads nothing.
	if err := store.RevokeHost(ctx, root, "b"); err != nil {
		t.Fatal(err)
	}
	bc := b.Client()
	for _, k := range []string{store.KeyClusterConfig, store.PrefixGuests + "g1", store.KeyCAKey} {
		if _, err := bc.Get(ctx, k); !store.IsDenied(err) {
			t.Errorf("removed b read %s: %v, want permission denied", k, err)
		}
	}
	if _, err := bc.Put(ctx, store.PrefixReports+"b/g1", "{}"); !store.IsDenied(err) {
		t.Errorf("removed b wrote its report: %v", err)
	}
	if w := <-bc.Watch(ctx, store.Prefix, clientv3.WithPrefix(), clientv3.WithRev(1)); w.Err() == nil {
		t.Errorf("removed b watches the store: %d events", len(w.Events))
	}
	// Hosts manage no users: only root does.
	if err := store.GrantHost(ctx, ac, "d"); !store.IsDenied(err) {
		t.Errorf("host a made a store user: %v", err)
	}
	if err := store.GrantHost(ctx, root, store.RootUser); err == nil {
		t.Error("a host named root granted")
	}
}

// TestRoleRanges: the shared ranges cover Haven's prefix but the
// host-owned families, and the script for an external etcd says the same.
func TestRoleRanges(t *testing.T) {
	shared := store.SharedWrites()
	in := func(k string) bool {
		for _, r := range shared {
			if k >= r.Key && k < r.End {
				return true
			}
		}
		return false
	}
	for _, f := range store.Families {
		owned := false
		for _, o := range store.HostOwned {
			owned = owned || strings.HasPrefix(f.Prefix, o.Family)
		}
		if in(f.Prefix) == owned || in(f.Prefix+"x/y") == owned {
			t.Errorf("%s: shared %v, host-owned %v", f.Prefix, in(f.Prefix), owned)
		}
	}
	for _, o := range store.HostOwned {
		for _, r := range store.OwnWrites("h1") {
			if r.Key == o.Key("h1") {
				goto found
			}
		}
		t.Errorf("%s not in h1's own writes", o.Key("h1"))
	found:
	}
	script := store.RolesScript([]store.HostUser{{Node: "h1", User: "h1"}})
	for _, r := range shared {
		if want := fmt.Sprintf("etcdctl role grant-permission %s readwrite %s %s\n", store.RoleHosts, r.Key, r.End); !strings.Contains(script, want) {
			t.Errorf("script lacks %q:\n%s", want, script)
		}
	}
}

// BenchmarkStoreWrites measures a host's puts (a report under its lease)
// and keepalives with and without the store's roles enforced.
func BenchmarkStoreWrites(b *testing.B) {
	for _, roles := range []bool{false, true} {
		b.Run(fmt.Sprintf("roles=%v", roles), func(b *testing.B) {
			srv := storetest.Start(b)
			ctx := context.Background()
			if roles {
				if err := store.EnforceRoles(ctx, srv.Store.Client(), []string{"test", "a"}); err != nil {
					b.Fatal(err)
				}
			}
			a := connectAs(b, srv, "a")
			lv, err := a.StartLiveness(ctx, model.NodeFacts{Name: "a"}, 5*time.Second, 500*time.Millisecond)
			if err != nil {
				b.Fatal(err)
			}
			defer lv.Stop(ctx)
			cli := a.Client()
			b.ResetTimer()
			for i := range b.N {
				if _, err := cli.Put(ctx, fmt.Sprintf("%sa/g%d", store.PrefixReports, i%50), "{}", clientv3.WithLease(lv.Lease())); err != nil {
					b.Fatal(err)
				}
				if _, err := cli.Get(ctx, store.PrefixGuests, clientv3.WithPrefix()); err != nil {
					b.Fatal(err)
				}
				if i%10 == 0 {
					if _, err := cli.KeepAliveOnce(ctx, lv.Lease()); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
