package control

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// recordingFencer notes every fence the manager asks for.
type recordingFencer struct {
	mu    sync.Mutex
	nodes []string
}

func (f *recordingFencer) Fence(_ context.Context, node string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes = append(f.nodes, node)
	return nil
}

func (f *recordingFencer) fenced() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.nodes)
}

// A cluster put on hold (policy hold, Pacemaker's maintenance-mode) has a
// manager that takes no action: a host whose lease ends while on hold is
// neither fenced nor are its guests started elsewhere. When the hold ends
// the manager starts afresh and handles the host as failed: fence first,
// then its guest elsewhere. The event log says both.
func TestHoldStopsTheManager(t *testing.T) {
	st := storetest.Start(t).Connect(t)
	cli := st.Client()
	cs := cluster.New(st)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leases := map[string]clientv3.LeaseID{}
	for _, n := range []string{"n1", "n2"} {
		if err := st.RegisterNode(ctx, store.NodeRecord{Name: n}); err != nil {
			t.Fatal(err)
		}
		l, err := cli.Grant(ctx, 60)
		if err != nil {
			t.Fatal(err)
		}
		leases[n] = l.ID
		put(t, cli, store.KeyNodeLive(n), model.NodeFacts{Name: n, Memory: 8 * model.GiB, CPUs: 4}, clientv3.WithLease(l.ID))
	}
	spec := model.DefaultGuestSpec("vm1")
	put(t, cli, cluster.KeyGuest("vm1"), cluster.Guest{Spec: spec, Def: guestdef.Definition{Name: "vm1", VCPUs: 1, Memory: model.GiB}})
	put(t, cli, cluster.KeyReport("n1", "vm1"), hostctl.Report{Guest: "vm1", State: hostctl.Running}, clientv3.WithLease(leases["n1"]))

	l, err := st.Campaign(ctx, "n2", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fencer := &recordingFencer{}
	done := make(chan error, 1)
	go func() {
		done <- RunManager(ctx, Daemon{Cluster: cs, Leader: l, Timings: manager.DefaultTimings(), Fencer: fencer})
	}()
	events := func() []cluster.Event {
		evs, _, err := cs.Events(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(evs, func(a, b cluster.Event) int { return int(a.Rev - b.Rev) })
		return evs
	}
	waitEvent := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			for _, e := range events() {
				if strings.Contains(e.Msg, what) {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no event %q in %+v", what, events())
			}
			time.Sleep(20 * time.Millisecond) // polling interval
		}
	}
	// The manager runs; then the cluster goes on hold during its term.
	waitEvent("node n2 is online")
	p := cluster.DefaultPolicy()
	p.Hold = true
	if err := cs.SetPolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	waitEvent("cluster on hold")

	// n1 dies while the cluster is on hold: nothing happens.
	if _, err := cli.Revoke(ctx, leases["n1"]); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if f := fencer.fenced(); len(f) > 0 {
			t.Fatalf("fenced %v while the cluster was on hold", f)
		}
		if resp, err := cli.Get(ctx, cluster.PrefixOrders, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count > 0 {
			t.Fatalf("orders sent while the cluster was on hold (%v, %v)", resp, err)
		}
	}

	// The hold ends: n1 is fenced, then vm1 is ordered to start on n2.
	p.Hold = false
	if err := cs.SetPolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := cli.Get(ctx, cluster.KeyOrder("n2", "vm1"))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vm1 never ordered to n2 after the hold ended; fenced %v; events %+v", fencer.fenced(), events())
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	if f := fencer.fenced(); !slices.Equal(f, []string{"n1"}) {
		t.Errorf("fenced %v after the hold, want [n1]; events %+v", f, events())
	}
	ended := -1
	for i, e := range events() {
		if strings.Contains(e.Msg, "hold ended") {
			ended = i
		}
		if strings.HasPrefix(e.Msg, "fence n1") && ended < 0 {
			t.Errorf("n1 fenced before the hold ended: %+v", events())
		}
	}
	if ended < 0 {
		t.Errorf("no 'hold ended' event: %+v", events())
	}

	// Policy checks: hold needs fence devices.
	w := cluster.DefaultPolicy()
	w.Fencing, w.Hold = model.FencingWatchdog, true
	if err := cs.SetPolicy(ctx, w); err == nil || !strings.Contains(err.Error(), "hold") {
		t.Errorf("hold with the watchdog: %v, want an error about hold", err)
	}
	cancel()
	<-done
}
