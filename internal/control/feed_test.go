package control

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/savedstate"
	"github.com/haven-ha/haven/internal/storage"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

func put(t *testing.T, cli *clientv3.Client, key string, v any, opts ...clientv3.OpOption) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(context.Background(), key, string(b), opts...); err != nil {
		t.Fatal(err)
	}
}

// A manager elected while its predecessor's live migration is half done
// (the target reported ready, the source has no order yet) carries it on:
// it sends the source its migrate order instead of waiting forever.
func TestNewManagerResumesMigration(t *testing.T) {
	st := storetest.Start(t).Connect(t)
	cli := st.Client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, n := range []string{"n1", "n2"} {
		if err := st.RegisterNode(ctx, store.NodeRecord{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1", "n2"} {
		put(t, cli, store.KeyNodeLive(n), model.NodeFacts{Name: n, Memory: 8 * model.GiB, CPUs: 4}, clientv3.WithLease(lease.ID))
	}
	spec := model.DefaultGuestSpec("vm1")
	put(t, cli, cluster.KeyGuest("vm1"), cluster.Guest{Spec: spec, Def: guestdef.Definition{Name: "vm1", VCPUs: 1, Memory: model.GiB}})

	// The previous manager's view: vm1 runs on n1, migrating to n2 (op 7).
	prev := manager.New(manager.Config{})
	for _, n := range []string{"n1", "n2"} {
		if err := prev.AddNode(n, 8*model.GiB, 4); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	prev.Step(now, manager.Sync{Nodes: []manager.NodeReport{{Name: "n1", Running: []string{"vm1"}}, {Name: "n2"}}})
	spec.Node = "n1"
	if err := prev.AddGuest(spec, true); err != nil {
		t.Fatal(err)
	}
	acts := prev.Step(now, manager.Command{Kind: manager.CmdMigrate, Guest: "vm1", Node: "n2"})
	var op uint64
	for _, a := range acts {
		if a.Kind == manager.ActMigrate {
			op = a.Op
		}
	}
	if op == 0 {
		t.Fatalf("no migration in %v", acts)
	}
	raw, _ := json.Marshal(prev)
	if _, err := cli.Put(ctx, savedstate.KeyLegacy, string(raw)); err != nil {
		t.Fatal(err)
	}
	put(t, cli, cluster.KeyReport("n1", "vm1"), hostctl.Report{Guest: "vm1", State: hostctl.Running}, clientv3.WithLease(lease.ID))
	put(t, cli, cluster.KeyReport("n2", "vm1"), hostctl.Report{Guest: "vm1", State: hostctl.Incoming, OrderID: orderID(op, "recv"), Op: hostctl.OpReceive,
		Result: hostctl.ResultOK, Target: hypervisor.MigrationTarget{Node: "n2", URI: "tcp:127.0.0.1:4444"}}, clientv3.WithLease(lease.ID))

	l, err := st.Campaign(ctx, "n1", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- RunManager(ctx, Daemon{Cluster: cluster.New(st), Leader: l, Timings: manager.DefaultTimings()})
	}()

	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := cli.Get(ctx, cluster.KeyOrder("n1", "vm1"))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 1 {
			var o hostctl.Order
			if err := json.Unmarshal(resp.Kvs[0].Value, &o); err != nil {
				t.Fatal(err)
			}
			if o.Op != hostctl.OpMigrate || o.Target.URI != "tcp:127.0.0.1:4444" || o.ID != orderID(op, "send") {
				t.Fatalf("order to n1 = %+v, want the migrate half of op %d", o, op)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new manager never sent the source its migrate order")
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	cancel()
	<-done
}

// A guest's disks decide where it may run: a disk on no shared pool pins it
// to its node; disks on a shared pool let it move.
func TestApplyGuestPinsLocalDisks(t *testing.T) {
	st := manager.New(manager.Config{})
	if err := st.AddNode("n1", 8*model.GiB, 4); err != nil {
		t.Fatal(err)
	}
	pools := []storage.Pool{{Name: "nfs", Kind: storage.KindDir, Path: "/srv/nfs", Shared: true}}
	local := cluster.Guest{Spec: model.DefaultGuestSpec("local"), Def: guestdef.Definition{Name: "local", Disks: []guestdef.Disk{{Path: "/var/lib/images/local.img"}}}}
	shared := cluster.Guest{Spec: model.DefaultGuestSpec("shared"), Def: guestdef.Definition{Name: "shared", Disks: []guestdef.Disk{{Path: "/srv/nfs/shared.img"}, {Pool: "nfs", Volume: "data.qcow2"}}}}
	for _, g := range []cluster.Guest{local, shared} {
		if err := applyGuest(st, g, "", pools); err != nil {
			t.Fatal(err)
		}
	}
	if g := st.Guest("local"); !g.Spec.Pinned {
		t.Error("a guest with a local disk is not pinned to its node")
	}
	if g := st.Guest("shared"); g.Spec.Pinned || len(g.Spec.Pools) != 1 || g.Spec.Pools[0] != "nfs" {
		t.Errorf("guest on shared storage: pinned %v, pools %v; want free to move, needing pool nfs", g.Spec.Pinned, g.Spec.Pools)
	}
}
