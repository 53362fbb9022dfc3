package hostagent

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store/storetest"
	"github.com/haven-ha/haven/internal/watchdog"
)

// memDriver is an in-memory hypervisor for the host side's own tests.
type memDriver struct {
	mu      sync.Mutex
	running map[string]bool
	events  chan hypervisor.Event
}

func (d *memDriver) Name() string { return "mem" }
func (d *memDriver) Start(ctx context.Context, def guestdef.Definition) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.running[def.Name] = true
	return nil
}
func (d *memDriver) Stop(ctx context.Context, name string, _ time.Duration) error {
	return d.Kill(ctx, name)
}
func (d *memDriver) Kill(ctx context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.running[name] {
		return hypervisor.ErrNotFound
	}
	delete(d.running, name)
	return nil
}
func (d *memDriver) Status(ctx context.Context, name string) (hypervisor.Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running[name] {
		return hypervisor.Status{Name: name, State: hypervisor.Running}, nil
	}
	return hypervisor.Status{}, hypervisor.ErrNotFound
}
func (d *memDriver) List(ctx context.Context) ([]hypervisor.Status, error) { return nil, nil }
func (d *memDriver) Events() <-chan hypervisor.Event                       { return d.events }
func (d *memDriver) PrepareIncoming(ctx context.Context, def guestdef.Definition, _ hypervisor.IncomingOptions) (hypervisor.MigrationTarget, error) {
	return hypervisor.MigrationTarget{}, nil
}
func (d *memDriver) Migrate(ctx context.Context, name string, t hypervisor.MigrationTarget, p func(hypervisor.Progress)) error {
	return nil
}
func (d *memDriver) Close() error { return nil }
func (d *memDriver) isRunning(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.running[name]
}

// lease is a node lease whose renewals the test controls.
type lease struct {
	mu    sync.Mutex
	id    clientv3.LeaseID
	sent  time.Time
	since int64
}

func (l *lease) Lease() clientv3.LeaseID { l.mu.Lock(); defer l.mu.Unlock(); return l.id }
func (l *lease) LastRenewed() time.Time  { return l.LastSent() }
func (l *lease) Since() int64            { l.mu.Lock(); defer l.mu.Unlock(); return l.since }
func (l *lease) LastSent() time.Time     { l.mu.Lock(); defer l.mu.Unlock(); return l.sent }
func (l *lease) renew()                  { l.mu.Lock(); l.sent = time.Now(); l.mu.Unlock() }

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

func TestOrdersReportsSelfFenceAndWatchdog(t *testing.T) {
	srv := storetest.Start(t)
	st := srv.Connect(t)
	cs := cluster.New(st)
	cli := st.Client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	grant, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SetPolicy(ctx, cluster.Policy{Fencing: model.FencingWatchdog, ShutdownPolicy: model.ShutdownMigrate}); err != nil {
		t.Fatal(err)
	}
	wdPath := filepath.Join(t.TempDir(), "watchdog")
	timing := watchdog.Timing{LeaseTTL: 3 * time.Second, KeepaliveInterval: time.Second, WatchdogTimeout: 2 * time.Second, StopGuestsDeadline: 2 * time.Second, ManagerWait: 4 * time.Second}
	wd, err := watchdog.New(timing.WatchdogConfig(watchdog.FileDevicePrefix+wdPath), watchdog.OpenAny, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	lv := &lease{id: grant.ID, sent: time.Now()}
	drv := &memDriver{running: map[string]bool{}, events: make(chan hypervisor.Event, 8)}
	h := New(Config{Node: "n1", DataDir: t.TempDir(), Cluster: cs, Live: lv, Driver: drv, LeaseTTL: 3 * time.Second, Watchdog: wd, PolicyEvery: 50 * time.Millisecond})
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	// Keep the lease "renewed" until the test stops doing so.
	stopRenew := make(chan struct{})
	go func() {
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stopRenew:
				return
			case <-tk.C:
				lv.renew()
			}
		}
	}()

	order := hostctl.Order{ID: "7", Guest: "vm1", Op: hostctl.OpStart, Def: guestdef.Definition{Name: "vm1"}}
	b, _ := json.Marshal(order)
	if _, err := cli.Put(ctx, cluster.KeyOrder("n1", "vm1"), string(b)); err != nil {
		t.Fatal(err)
	}
	poll(t, "the start report in the store", func() bool {
		resp, err := cli.Get(ctx, cluster.KeyReport("n1", "vm1"))
		if err != nil || len(resp.Kvs) == 0 {
			return false
		}
		var r hostctl.Report
		return json.Unmarshal(resp.Kvs[0].Value, &r) == nil && r.OrderID == "7" && r.Result == hostctl.ResultOK &&
			resp.Kvs[0].Lease == int64(grant.ID)
	})
	if !drv.isRunning("vm1") {
		t.Fatal("vm1 not running after its start order")
	}
	poll(t, "the watchdog armed while a guest runs", func() bool {
		armed, deadline, _ := watchdog.ReadFileDevice(wdPath)
		return armed && deadline.After(time.Now())
	})

	// The same order again (a replayed watch) is not carried out twice.
	if err := drv.Kill(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	h.submit(ctx, order, 1)
	if drv.isRunning("vm1") {
		t.Fatal("a replayed start order started the guest again")
	}
	if err := drv.Start(ctx, order.Def); err != nil {
		t.Fatal(err)
	}

	// The lease is no longer confirmed: the host kills its guest before the
	// lease could expire in the store.
	close(stopRenew)
	lost := time.Now()
	poll(t, "self-fence", func() bool { return !drv.isRunning("vm1") })
	if took := time.Since(lv.LastSent()); took >= 3*time.Second {
		t.Fatalf("guest killed %v after the last renewal, not before the lease TTL", took)
	}
	_ = lost
	// With no guest left, the watchdog is not petted any more but stays
	// armed until the lease is confirmed again (then it is disarmed).
	lv.renew()
	poll(t, "watchdog disarmed with no guest", func() bool {
		armed, _, _ := watchdog.ReadFileDevice(wdPath)
		lv.renew()
		return !armed
	})
}

// Issue 10, High 1: an order naming a file outside every storage pool (a
// guest record written to the store behind the API's back, or a file
// swapped since) is refused by the host before the driver sees it.
func TestStartOrderOutsidePoolsRefused(t *testing.T) {
	srv := storetest.Start(t)
	st := srv.Connect(t)
	cs := cluster.New(st)
	cli := st.Client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	grant, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	lv := &lease{id: grant.ID, sent: time.Now()}
	drv := &memDriver{running: map[string]bool{}, events: make(chan hypervisor.Event, 8)}
	h := New(Config{Node: "n1", DataDir: t.TempDir(), Cluster: cs, Live: lv, Driver: drv, LeaseTTL: 30 * time.Second, PolicyEvery: 50 * time.Millisecond})
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	lv.renew()

	order := hostctl.Order{ID: "1", Guest: "evil", Op: hostctl.OpStart, Def: guestdef.Definition{Name: "evil", VCPUs: 1, Memory: 128 << 20,
		Disks: []guestdef.Disk{{Path: "/etc/shadow"}}, SerialLog: "/etc/cron.d/x"}}
	b, _ := json.Marshal(order)
	if _, err := cli.Put(ctx, cluster.KeyOrder("n1", "evil"), string(b)); err != nil {
		t.Fatal(err)
	}
	var rep hostctl.Report
	poll(t, "the refused start report", func() bool {
		resp, err := cli.Get(ctx, cluster.KeyReport("n1", "evil"))
		if err != nil || len(resp.Kvs) == 0 {
			return false
		}
		return json.Unmarshal(resp.Kvs[0].Value, &rep) == nil && rep.Result == hostctl.ResultFailed
	})
	if !strings.Contains(rep.Error, "not inside a storage pool") {
		t.Errorf("report error = %q, want it to say the files are outside every pool", rep.Error)
	}
	drv.mu.Lock()
	running := drv.running["evil"]
	drv.mu.Unlock()
	if running {
		t.Error("the driver started a guest whose disk is /etc/shadow")
	}
}

// Issue 14: a running guest's report carries its health checks' status,
// written again when a check changes status and not at every passing run.
func TestReportCarriesHealth(t *testing.T) {
	srv := storetest.Start(t)
	st := srv.Connect(t)
	cs := cluster.New(st)
	cli := st.Client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	grant, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	lv := &lease{id: grant.ID, sent: time.Now()}
	drv := &memDriver{running: map[string]bool{}, events: make(chan hypervisor.Event, 8)}
	h := New(Config{Node: "n1", DataDir: t.TempDir(), Cluster: cs, Live: lv, Driver: drv, LeaseTTL: 30 * time.Second, PolicyEvery: 50 * time.Millisecond,
		HealthNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}) // the test listener
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	lv.renew()

	ms := guestdef.Duration(100 * time.Millisecond)
	order := hostctl.Order{ID: "1", Guest: "web", Op: hostctl.OpStart, Def: guestdef.Definition{Name: "web", VCPUs: 1, Memory: 128 << 20, Address: "127.0.0.1",
		Health: []guestdef.Check{{Name: "port", TCP: port, Interval: ms, Timeout: guestdef.Duration(time.Second), Failures: 1000}}}}
	b, _ := json.Marshal(order)
	if _, err := cli.Put(ctx, cluster.KeyOrder("n1", "web"), string(b)); err != nil {
		t.Fatal(err)
	}
	report := func() (hostctl.Report, int64) {
		resp, err := cli.Get(ctx, cluster.KeyReport("n1", "web"))
		if err != nil || len(resp.Kvs) == 0 {
			return hostctl.Report{}, 0
		}
		var r hostctl.Report
		if json.Unmarshal(resp.Kvs[0].Value, &r) != nil {
			return hostctl.Report{}, 0
		}
		return r, resp.Kvs[0].ModRevision
	}
	var rep hostctl.Report
	var rev int64
	poll(t, "a report with the passing check", func() bool {
		rep, rev = report()
		return rep.State == hostctl.Running && len(rep.Health) == 1 && rep.Health[0].OK && !rep.Health[0].At.IsZero()
	})
	if c := rep.Health[0]; c.Check != "port" || c.Kind != "tcp" || !strings.Contains(c.Output, "connected to 127.0.0.1:") {
		t.Errorf("health in the report = %+v", c)
	}
	// Several more passing runs: the report is not written again.
	stored := rep.Health[0].At
	poll(t, "five more passing runs", func() bool {
		r := h.Health().Results("web")
		return len(r) == 1 && r[0].OK && r[0].At.After(stored.Add(450*time.Millisecond))
	})
	if _, now := report(); now != rev {
		t.Errorf("report rewritten by passing runs: revision %d, was %d", now, rev)
	}
	// The service goes away: the report says so, with the failures in a row.
	ln.Close()
	poll(t, "a report with the failing check", func() bool {
		rep, _ = report()
		return len(rep.Health) == 1 && !rep.Health[0].OK && rep.Health[0].Failures >= 1
	})
	if !strings.Contains(rep.Health[0].Output, "connect 127.0.0.1:") {
		t.Errorf("failing output = %q", rep.Health[0].Output)
	}
	if !drv.isRunning("web") {
		t.Error("guest killed before its failures reached the limit")
	}
}
