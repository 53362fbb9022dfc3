package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/auth"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// hostStore opens a store connection as host cn, with its keyring identity
// (after the cluster secret key is granted to it, it opens the CA key);
// embedded says the store is Haven's own, administered as root.
func hostStore(t *testing.T, srv *storetest.Server, cn string, embedded bool) (*store.Store, []byte) {
	t.Helper()
	cert, key, err := srv.CA.IssueNode(cn, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return hostStoreWith(t, srv, cn, cert, key, embedded), cert
}

func hostStoreWith(t *testing.T, srv *storetest.Server, cn string, cert, key []byte, embedded bool) *store.Store {
	t.Helper()
	tlsCfg, err := pki.ClientTLS(srv.CA.CertPEM, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := store.Connect(ctx, store.ClientConfig{Endpoints: srv.Endpoints, TLS: tlsCfg, Embedded: embedded}, nil, nil)
	if err != nil {
		t.Fatalf("connect as %s: %v", cn, err)
	}
	st.SetIdentity(cn, cert, key)
	t.Cleanup(func() { st.Close() })
	return st
}

// TestAdministerAsRoot: once the embedded store enforces its roles, a
// host's own certificate may not change the membership, take a snapshot
// or manage users; the Store does those as root with a credential signed
// in memory from the CA key it unseals. A host that cannot open the CA key
// (no cluster secret key) cannot.
func TestAdministerAsRoot(t *testing.T) {
	srv := storetest.Start(t)
	ctx := context.Background()
	if err := srv.Store.InitCluster(ctx, store.ClusterConfig{Name: "c", ID: "1"}, srv.CA.CertPEM, srv.CA.KeyPEM); err != nil {
		t.Fatal(err)
	}
	a, certA := hostStore(t, srv, "a", true)
	if err := srv.Store.GrantKey(ctx, "a", certA); err != nil {
		t.Fatal(err)
	}
	if on, err := a.RolesEnforced(ctx); err != nil || on {
		t.Fatalf("roles enforced before: %v %v", on, err)
	}
	// Before the roles are on, a host without the secret key still
	// administers the store with its own certificate.
	x, _ := hostStore(t, srv, "x", true)
	if err := x.GrantHost(ctx, "x"); err != nil {
		t.Fatalf("grant before the roles are on, without a root credential: %v", err)
	}
	if err := a.EnforceRoles(ctx, []string{"test", "a", "b"}); err != nil {
		t.Fatal(err)
	}
	if on, err := a.RolesEnforced(ctx); err != nil || !on {
		t.Fatalf("roles enforced after: %v %v", on, err)
	}

	// The host's own certificate is refused...
	ac := a.Client()
	if _, err := ac.MemberAddAsLearner(ctx, []string{"https://127.0.0.1:1"}); !store.IsDenied(err) {
		t.Errorf("host a added a member itself: %v, want permission denied", err)
	}
	if rc, err := ac.Snapshot(ctx); err == nil {
		var b bytes.Buffer
		if _, err := b.ReadFrom(rc); !store.IsDenied(err) {
			t.Errorf("host a took a snapshot itself: %v, want permission denied", err)
		}
		rc.Close()
	}
	if err := store.GrantHost(ctx, ac, "c"); !store.IsDenied(err) {
		t.Errorf("host a made a store user itself: %v", err)
	}
	// ... the Store does it as root.
	id, _, err := a.AddLearner(ctx, "https://127.0.0.1:1")
	if err != nil {
		t.Fatalf("add a learner as root: %v", err)
	}
	if err := a.RemoveMember(ctx, id); err != nil {
		t.Errorf("remove a member as root: %v", err)
	}
	var snap bytes.Buffer
	if n, err := a.Snapshot(ctx, &snap); err != nil || n == 0 {
		t.Errorf("snapshot as root: %d bytes, %v", n, err)
	}
	if err := a.GrantHost(ctx, "c"); err != nil {
		t.Errorf("grant c as root: %v", err)
	}
	c, _ := hostStore(t, srv, "c", true)
	if _, err := c.Client().Put(ctx, store.PrefixReports+"c/g1", "{}"); err != nil {
		t.Errorf("granted c writes its report: %v", err)
	}
	if _, err := c.Client().Put(ctx, store.PrefixReports+"a/g1", "{}"); !store.IsDenied(err) {
		t.Errorf("c wrote a's report: %v, want permission denied", err)
	}
	// c's liveness lease: a may not end it with its own certificate, the
	// Store ends it as root (the fast failure path).
	g, err := c.Client().Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client().Put(ctx, store.KeyNodeLive("c"), "{}", clientv3.WithLease(g.ID)); err != nil {
		t.Fatalf("c writes its liveness: %v", err)
	}
	if _, err := ac.Revoke(ctx, g.ID); !store.IsDenied(err) {
		t.Errorf("host a revoked c's lease itself: %v, want permission denied", err)
	}
	if err := a.RevokeLease(ctx, g.ID); err != nil {
		t.Errorf("revoke c's lease through the Store: %v", err)
	}
	if r, err := ac.Get(ctx, store.KeyNodeLive("c")); err != nil || len(r.Kvs) != 0 {
		t.Errorf("c's liveness after its lease was revoked: %v, %v", r, err)
	}
	if err := a.RevokeHost(ctx, "c"); err != nil {
		t.Errorf("revoke c as root: %v", err)
	}
	if _, err := c.Client().Get(ctx, store.KeyClusterConfig); !store.IsDenied(err) {
		t.Errorf("revoked c reads: %v, want permission denied", err)
	}

	// b has a user but not the cluster secret key: no root credential.
	certB, keyB, err := srv.CA.IssueNode("b", []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b := hostStoreWith(t, srv, "b", certB, keyB, true)
	if _, _, err := b.AddLearner(ctx, "https://127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("b without the secret key added a member: %v", err)
	}

	// An external etcd: the host's own client first, root (where that
	// etcd trusts the cluster CA) only when refused.
	if err := a.GrantKey(ctx, "b", certB); err != nil {
		t.Fatal(err)
	}
	e := hostStoreWith(t, srv, "b", certB, keyB, false)
	snap.Reset()
	if n, err := e.Snapshot(ctx, &snap); err != nil || n == 0 {
		t.Errorf("snapshot of an external store with roles, as root after a refusal: %d bytes, %v", n, err)
	}
	if _, err := e.Client().Put(ctx, store.PrefixGuests+"g", "{}"); err != nil {
		t.Errorf("external host writes: %v", err)
	}
}

// TestIsDenied: etcd's refusals for want of permission, also the auth
// store's own error an etcd 3.4 sends for a snapshot.
func TestIsDenied(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{rpctypes.ErrGRPCPermissionDenied, true},
		{status.Error(codes.Unknown, auth.ErrPermissionDenied.Error()), true},
		{fmt.Errorf("read: %w", status.Error(codes.Unknown, "auth: permission denied")), true},
		{status.Error(codes.Unavailable, "etcdserver: request timed out"), false},
		{errors.New("auth: permission denied"), false},
	} {
		if got := store.IsDenied(tc.err); got != tc.want {
			t.Errorf("IsDenied(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
