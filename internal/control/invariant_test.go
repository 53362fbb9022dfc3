package control

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/savedstate"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// brokenState is a state that contradicts itself: a guest with an
// operation on a node that does not exist. The core panics on its first
// step.
func brokenState(t *testing.T) *manager.State {
	t.Helper()
	s := manager.New(manager.Config{})
	if err := s.AddNode("n1", 8*model.GiB, 4); err != nil {
		t.Fatal(err)
	}
	spec := model.DefaultGuestSpec("vm1")
	spec.Node = "n1"
	if err := s.AddGuest(spec, true); err != nil {
		t.Fatal(err)
	}
	s.Guest("vm1").Op = &manager.Op{ID: 9, Kind: manager.OpStop, Node: "ghost", Purpose: manager.PurposeOperator}
	return s
}

// A step whose state breaks an invariant does not panic the shell: it
// stops with an InvariantError and neither saves nor orders anything.
func TestShellInvariantErrorStops(t *testing.T) {
	w := newMemWriter()
	sh := New(Config{State: brokenState(t), Writer: w, Fencer: noFence{}, Defs: defs{}})
	err := sh.step(context.Background(), manager.Tick{})
	var inv *InvariantError
	if !errors.As(err, &inv) || !strings.Contains(inv.Panic, "operation on no node") || len(inv.Stack) == 0 {
		t.Fatalf("step: %v, want an InvariantError naming the broken invariant", err)
	}
	if w.saves != 0 || len(w.log) != 0 {
		t.Fatalf("a failed step saved %d times and ordered %v", w.saves, w.log)
	}
	// A command goes through the same guard.
	err = sh.input(context.Background(), Input{Command: &manager.Command{Kind: manager.CmdStop, Guest: "vm1"}, CommandID: "c"})
	if !errors.As(err, &inv) {
		t.Fatalf("command: %v, want an InvariantError", err)
	}
}

// In the daemon, the term ends with the error (the agent resigns), the
// incident is recorded with the event and the state, an alert goes to the
// event log, and the saved state is the one from before the step.
func TestRunManagerRecordsIncident(t *testing.T) {
	st := storetest.Start(t).Connect(t)
	cli := st.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.RegisterNode(ctx, store.NodeRecord{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	put(t, cli, store.KeyNodeLive("n1"), model.NodeFacts{Name: "n1", Memory: 8 * model.GiB, CPUs: 4}, clientv3.WithLease(lease.ID))
	put(t, cli, cluster.KeyReport("n1", "vm1"), hostctl.Report{Guest: "vm1", State: hostctl.Running}, clientv3.WithLease(lease.ID))
	put(t, cli, cluster.KeyGuest("vm1"), cluster.Guest{Spec: model.DefaultGuestSpec("vm1")})
	b, _ := json.Marshal(brokenState(t))
	if _, err := cli.Put(ctx, savedstate.KeyLegacy, string(b)); err != nil {
		t.Fatal(err)
	}
	l, err := st.Campaign(ctx, "n1", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cs := cluster.New(st)
	err = RunManager(ctx, Daemon{Cluster: cs, Leader: l, Timings: manager.DefaultTimings()})
	var inv *InvariantError
	if !errors.As(err, &inv) {
		t.Fatalf("RunManager: %v, want an InvariantError", err)
	}
	ins, err := cs.Incidents(ctx)
	if err != nil || len(ins) != 1 {
		t.Fatalf("incidents: %v, %v", ins, err)
	}
	in := ins[0]
	if in.Node != "n1" || in.Term != l.Rev() || in.EventType != "manager.Sync" || !strings.Contains(in.Panic, "vm1") || !strings.Contains(string(in.State), `"vm1"`) {
		t.Fatalf("incident %+v", in)
	}
	evs, _, err := cs.Events(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	alert := false
	for _, e := range evs {
		alert = alert || e.Kind == "alert" && strings.Contains(e.Msg, "resigned")
	}
	if !alert {
		t.Fatalf("no alert event in %+v", evs)
	}
	resp, err := cli.Get(ctx, savedstate.KeyLegacy)
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != string(b) {
		t.Fatalf("the saved state changed after the failed step: %v", err)
	}
	if r, _ := cli.Get(ctx, cluster.PrefixOrders, clientv3.WithPrefix()); len(r.Kvs) != 0 {
		t.Fatalf("orders written: %v", r.Kvs)
	}
}
