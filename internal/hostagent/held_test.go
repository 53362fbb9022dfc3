package hostagent

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// logRecorder keeps the messages logged about each guest.
type logRecorder struct {
	mu   sync.Mutex
	msgs map[string][]string // guest -> messages
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "guest" {
			r.mu.Lock()
			r.msgs[a.Value.String()] = append(r.msgs[a.Value.String()], rec.Message)
			r.mu.Unlock()
		}
		return true
	})
	return nil
}

// said reports whether a message about guest contains every one of words.
func (r *logRecorder) said(guest string, words ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs[guest] {
		all := true
		for _, w := range words {
			all = all && strings.Contains(m, w)
		}
		if all {
			return true
		}
	}
	return false
}

// fencedBed is a host side whose lease the test renews or not.
type fencedBed struct {
	t    *testing.T
	ctx  context.Context
	cli  *clientv3.Client
	lv   *lease
	drv  *memDriver
	logs *logRecorder
	h    *Host
	// renewing: the lease is renewed every 100 ms while set.
	renewing atomic.Bool
}

// selfFencedHost runs a host side whose guest vm1 runs (order 1) and which
// then self-fences for a lease no longer confirmed. It returns with the
// host self-fenced and its lease not renewed.
func selfFencedHost(t *testing.T) *fencedBed {
	t.Helper()
	srv := storetest.Start(t)
	st := srv.Connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	grant, err := st.Client().Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	b := &fencedBed{t: t, ctx: ctx, cli: st.Client(), lv: &lease{id: grant.ID, sent: time.Now()},
		drv: &memDriver{running: map[string]bool{}, events: make(chan hypervisor.Event, 8)}, logs: &logRecorder{msgs: map[string][]string{}}}
	h := New(Config{Node: "n1", DataDir: t.TempDir(), Cluster: cluster.New(st), Live: b.lv, Driver: b.drv, LeaseTTL: 3 * time.Second,
		PolicyEvery: 50 * time.Millisecond, Logger: slog.New(b.logs)})
	b.h = h
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	go func() {
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			if b.renewing.Load() {
				b.lv.renew()
			}
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	b.lv.renew()
	b.renewing.Store(true)
	b.order(hostctl.Order{ID: "1", Guest: "vm1", Op: hostctl.OpStart, Def: guestdef.Definition{Name: "vm1"}})
	poll(t, "vm1 running after order 1", func() bool { return b.report("vm1").OrderID == "1" && b.drv.isRunning("vm1") })
	b.renewing.Store(false)
	poll(t, "the self-fence", func() bool { return !b.drv.isRunning("vm1") })
	return b
}

// order writes an order for n1 as the manager does.
func (b *fencedBed) order(o hostctl.Order) {
	b.t.Helper()
	v, _ := json.Marshal(o)
	if _, err := b.cli.Put(b.ctx, cluster.KeyOrder("n1", o.Guest), string(v)); err != nil {
		b.t.Fatal(err)
	}
}

// report is n1's stored report about guest (zero if none).
func (b *fencedBed) report(guest string) hostctl.Report {
	var r hostctl.Report
	resp, err := b.cli.Get(b.ctx, cluster.KeyReport("n1", guest))
	if err == nil && len(resp.Kvs) == 1 {
		_ = json.Unmarshal(resp.Kvs[0].Value, &r)
	}
	return r
}

// TestOrderWhileSelfFencedRunsOnceBack: after a switch outage, the manager
// answers a host's self-fence report with a restart order before the host's
// next keepalive is confirmed. The host, still self-fenced, must carry it
// out once its lease is confirmed, not drop it: the manager waits for its
// result, and the guest stayed stopped with its start in flight (random
// test, libvirt, seed 1796536130378299715).
func TestOrderWhileSelfFencedRunsOnceBack(t *testing.T) {
	b := selfFencedHost(t)
	b.order(hostctl.Order{ID: "2", Guest: "vm1", Op: hostctl.OpStart, Def: guestdef.Definition{Name: "vm1"}})
	poll(t, "order 2 seen while self-fenced", func() bool { return b.logs.said("vm1", "self-fenced") })
	if b.drv.isRunning("vm1") {
		t.Fatal("vm1 started while its host is self-fenced")
	}
	b.renewing.Store(true)
	poll(t, "vm1 running after order 2", func() bool {
		r := b.report("vm1")
		return r.OrderID == "2" && r.State == hostctl.Running && b.drv.isRunning("vm1")
	})
}

// TestOrderWhileSelfFencedDroppedWithItsLease: an order held while
// self-fenced is dropped if the lease it came under ended meanwhile: the
// manager saw the node go down and gave the operation up (a start becomes a
// recovery, maybe elsewhere).
func TestOrderWhileSelfFencedDroppedWithItsLease(t *testing.T) {
	b := selfFencedHost(t)
	b.order(hostctl.Order{ID: "2", Guest: "vm1", Op: hostctl.OpStart, Def: guestdef.Definition{Name: "vm1"}})
	poll(t, "order 2 held", func() bool { return b.logs.said("vm1", "held while self-fenced") })
	grant, err := b.cli.Grant(b.ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	b.lv.mu.Lock()
	b.lv.id = grant.ID // the old lease expired; the node registered again
	b.lv.mu.Unlock()
	b.renewing.Store(true)
	poll(t, "order 2 dropped", func() bool { return b.logs.said("vm1", "dropped") })
	if b.drv.isRunning("vm1") {
		t.Fatal("an order held under a lease that ended was carried out")
	}
}

// TestOrderWhileSelfFencedReplaced: a kill that comes after a held start
// replaces it; the start is not carried out once back.
func TestOrderWhileSelfFencedReplaced(t *testing.T) {
	b := selfFencedHost(t)
	b.order(hostctl.Order{ID: "2", Guest: "vm1", Op: hostctl.OpStart, Def: guestdef.Definition{Name: "vm1"}})
	poll(t, "order 2 held", func() bool { return b.logs.said("vm1", "held while self-fenced") })
	b.order(hostctl.Order{ID: "3", Guest: "vm1", Op: hostctl.OpKill})
	poll(t, "order 3 done", func() bool { r := b.report("vm1"); return r.OrderID == "3" && r.Result == hostctl.ResultOK })
	b.h.mu.Lock()
	_, held := b.h.held["vm1"]
	b.h.mu.Unlock()
	if held {
		t.Fatal("a start held while self-fenced is still held after a later kill")
	}
}
