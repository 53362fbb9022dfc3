package hostagent

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// TestOrderFromAnEarlierLifeNotCarriedOut: the manager wrote a start order
// for n1 that n1 never received (it lost power just then); n1 was fenced
// and its guest started elsewhere. When n1 comes back, the order is still
// in the store: carried out, the guest would run on two hosts. Orders
// written after n1 registered again are carried out.
func TestOrderFromAnEarlierLifeNotCarriedOut(t *testing.T) {
	srv := storetest.Start(t)
	st := srv.Connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	put := func(o hostctl.Order) {
		t.Helper()
		v, _ := json.Marshal(o)
		if _, err := st.Client().Put(ctx, cluster.KeyOrder("n1", o.Guest), string(v)); err != nil {
			t.Fatal(err)
		}
	}
	// The order of the earlier life, then the host registers again.
	put(hostctl.Order{ID: "1", Guest: "vm1", Op: hostctl.OpStart, Def: guestdef.Definition{Name: "vm1"}})
	live, err := st.StartLiveness(ctx, model.NodeFacts{Name: "n1"}, 3*time.Second, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Release()
	if live.Since() == 0 {
		t.Fatal("Since is 0 after the live key was written")
	}
	logs := &logRecorder{msgs: map[string][]string{}}
	drv := &memDriver{running: map[string]bool{}, events: make(chan hypervisor.Event, 8)}
	h := New(Config{Node: "n1", DataDir: t.TempDir(), Cluster: cluster.New(st), Live: live, Driver: drv, LeaseTTL: 3 * time.Second,
		PolicyEvery: 50 * time.Millisecond, Logger: slog.New(logs)})
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	poll(t, "the old order refused", func() bool { return logs.said("vm1", "before this host's current life") })

	// An order of this life, for the same guest and another.
	put(hostctl.Order{ID: "2", Guest: "vm2", Op: hostctl.OpStart, Def: guestdef.Definition{Name: "vm2"}})
	poll(t, "vm2 running", func() bool { return drv.isRunning("vm2") })
	if drv.isRunning("vm1") {
		t.Fatal("vm1 started by an order written before the host's current life")
	}
	put(hostctl.Order{ID: "3", Guest: "vm1", Op: hostctl.OpStart, Def: guestdef.Definition{Name: "vm1"}})
	poll(t, "vm1 running after an order of this life", func() bool { return drv.isRunning("vm1") })
}
