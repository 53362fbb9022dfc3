package cli

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api/apitest"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

// A backup taken through the API checks out, a viewer may not take one,
// and its restore starts an etcd that holds the cluster's records.
func TestStoreBackupVerifyRestore(t *testing.T) {
	ag, err := apitest.Start("n1", t.TempDir())
	if err != nil {
		t.Fatalf("start agent: %v", err)
	}
	defer ag.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := ag.A.Store().Client().Put(ctx, "/haven/guests/marker", `{"spec":{"name":"marker"}}`); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	snap := filepath.Join(dir, "b.snap")
	if code, _, errs := cliRun(ctx, ag, "viewer", "", "store", "backup", snap); code == 0 || !strings.Contains(errs, "403") && !strings.Contains(strings.ToLower(errs), "admin") {
		t.Fatalf("viewer backup: exit %d, %s", code, errs)
	}
	if _, err := os.Stat(snap); err == nil {
		t.Fatal("a refused backup left a file")
	}
	code, out, errs := cliRun(ctx, ag, "admin", "", "store", "backup", snap)
	if code != 0 || !strings.Contains(out, "SHA-256 and database check OK") {
		t.Fatalf("backup: exit %d\n%s\n%s", code, out, errs)
	}
	if code, out, errs := cliRun(ctx, ag, "admin", "", "store", "verify", snap); code != 0 || !strings.Contains(out, "cluster ") {
		t.Fatalf("verify: exit %d\n%s\n%s", code, out, errs)
	}
	b, _ := os.ReadFile(snap)
	bad := filepath.Join(dir, "bad.snap")
	if err := os.WriteFile(bad, b[:len(b)-10], 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := cliRun(ctx, ag, "admin", "", "store", "verify", bad); code == 0 || !strings.Contains(errs, "SHA-256") {
		t.Fatalf("verify of a truncated backup: exit %d, %s", code, errs)
	}

	// Restore into a new data directory and start etcd on it.
	l1, _ := net.Listen("tcp", "127.0.0.1:0")
	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	peer, client := "http://"+l1.Addr().String(), "http://"+l2.Addr().String()
	l1.Close()
	l2.Close()
	to := filepath.Join(dir, "etcd")
	if code, _, errs := cliRun(ctx, ag, "admin", "", "store", "restore", snap, "--to", to, "--name", "r1"); code != 2 || !strings.Contains(errs, "--peer-url") {
		t.Fatalf("restore without --peer-url: exit %d, %s", code, errs)
	}
	// The backup carries the store roles: the copy refuses a client that
	// has no certificate (this etcd checks none), unless restored without.
	for _, noRoles := range []bool{false, true} {
		args := []string{"store", "restore", snap, "--to", to, "--name", "r1", "--peer-url", peer}
		if noRoles {
			if err := os.RemoveAll(to); err != nil {
				t.Fatal(err)
			}
			args = append(args, "--no-roles")
		}
		code, out, errs = cliRun(ctx, ag, "admin", "", args...)
		if code != 0 {
			t.Fatalf("restore: exit %d\n%s\n%s", code, out, errs)
		}
		e, err := store.StartEmbedded(ctx, store.EmbeddedConfig{Name: "r1", Dir: to, PeerURL: peer, ClientURL: client, Existing: true})
		if err != nil {
			t.Fatalf("start etcd on the restored directory: %v", err)
		}
		st, err := store.Connect(ctx, store.ClientConfig{Endpoints: []string{client}}, nil, nil)
		if !noRoles {
			if err == nil || !strings.Contains(err.Error(), "user name is empty") {
				t.Errorf("a restored store with its roles let an anonymous client in: %v", err)
			}
			if st != nil {
				st.Close()
			}
			e.Close()
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		defer st.Close()
		checkRestored(ctx, t, st)
	}
}

func checkRestored(ctx context.Context, t *testing.T, st *store.Store) {
	t.Helper()
	resp, err := st.Client().Get(ctx, "/haven/guests/marker")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("restored store: %v, %v", resp, err)
	}
	if resp, err := st.Client().Get(ctx, store.KeyClusterConfig); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("restored store has no cluster config: %v", err)
	}
}

// `haven store roles` prints the etcdctl script that confines each host's
// store user (a CN given, or read from its certificate) to Haven's prefix,
// writing only its own reports and liveness (store.RolesScript; the roles
// themselves are tested on a real etcd in internal/store, TestHostRoles).
func TestStoreRoles(t *testing.T) {
	ca, err := pki.NewCA("c", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, _, err := ca.IssueNode("h2", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(t.TempDir(), "h2.pem")
	if err := os.WriteFile(certFile, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI(t, "store", "roles", "h1", certFile, "h3=etcd-user-3")
	if code != 0 {
		t.Fatalf("store roles: %d %s", code, errs)
	}
	for _, want := range []string{
		"etcdctl role grant-permission haven-hosts readwrite /haven/ /haven/nodes/live/\n",
		"etcdctl role grant-permission haven-hosts --prefix=true read /haven/reports/\n",
		"etcdctl role grant-permission haven-host-h1 write /haven/reports/h1/ /haven/reports/h10\n",
		"etcdctl role grant-permission haven-host-h2 write /haven/nodes/live/h2\n",
		"etcdctl user add h1 --no-password\netcdctl user grant-role h1 haven-hosts\netcdctl user grant-role h1 haven-host-h1\n",
		"etcdctl user add h2 --no-password\netcdctl user grant-role h2 haven-hosts\netcdctl user grant-role h2 haven-host-h2\n",
		"etcdctl role grant-permission haven-host-h3 write /haven/poolhealth/h3/ /haven/poolhealth/h30\n",
		"etcdctl user add etcd-user-3 --no-password\netcdctl user grant-role etcd-user-3 haven-hosts\netcdctl user grant-role etcd-user-3 haven-host-h3\n",
		"etcdctl auth enable\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("script lacks %q:\n%s", want, out)
		}
	}
	for _, bad := range [][]string{{"store", "roles"}, {"store", "roles", "h1; rm -rf /"}, {"store", "roles", "root"}, {"store", "roles", "h1=root"}, {"store", "roles", "h1=a b"}} {
		if code, _, _ := runCLI(t, bad...); code == 0 {
			t.Errorf("haven %v accepted", bad)
		}
	}
}
