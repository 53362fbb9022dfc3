package failover

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/pki"
)

// figures are one failover's times, measured from the moment the plug was
// pulled.
type figures struct {
	lost     string        // the host lost, and what it was: "h2 (manager, store leader)"
	manager  time.Duration // status named a live manager again (rounds that lost the manager)
	acting   time.Duration // the new manager's term began (status's manager since), same rounds
	detect   time.Duration // the manager decided to fence
	fenced   time.Duration // the fence device confirmed the host off
	started  time.Duration // the manager ordered the guest started elsewhere
	reported time.Duration // the API reported the guest running on another host
	running  time.Duration // the guest wrote its disk from its new host (boot included)
}

// BenchmarkHostPowerLoss pulls the plug on the host running a guest, with
// default timings and fence devices (fence_testbed), b.N times, and reports
// the median and worst times: detection, fencing, the guest's start order,
// the API reporting it running elsewhere and the guest writing its disk
// again. The rounds take turns: the guest's host is the manager, then the
// store leader, then neither (when one host is both, the round says so);
// rounds that lose the manager also time how long until status names a
// live one. Between rounds the host comes back. It runs per driver of
// -failover.hypervisors (sub-benchmarks qemu and libvirt).
//
//	scripts/bench-failover.sh [ROUNDS] [DRIVERS]
func BenchmarkHostPowerLoss(b *testing.B) {
	for _, hv := range strings.Split(*hypervisors, ",") {
		b.Run(hv, func(b *testing.B) { hostLoss(b, hv, false) })
	}
}

// BenchmarkPartition is BenchmarkHostPowerLoss with the guest's host cut
// off from the other two (a 2/1 partition) instead of powered off: the
// majority fences it (fence_testbed powers it off) and starts the guest.
func BenchmarkPartition(b *testing.B) {
	for _, hv := range strings.Split(*hypervisors, ",") {
		b.Run(hv, func(b *testing.B) { hostLoss(b, hv, true) })
	}
}

func hostLoss(b *testing.B, hv string, partition bool) {
	c := newCluster(b, options{hypervisor: hv})
	c.domain("any", "h1", "h2", "h3")
	c.guest("g1", "any", "")
	c.waitRunning(120*time.Second, nil)
	var all []figures
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c.waitHosts(90*time.Second, c.names()...)
		// The last round's host is back: its failback (when it is first
		// in the guest's domain) must be over before the guest is moved
		// for this round, or the move is refused as already done.
		c.waitSettled(120 * time.Second)
		mgr, leader := c.manager(), c.storeLeader()
		var target string
		switch i % 3 {
		case 0:
			target = mgr
		case 1:
			target = leader
		default:
			for _, n := range c.names() {
				if n != mgr && n != leader {
					target = n
				}
			}
			if target == "" {
				target = c.names()[0]
			}
		}
		c.moveTo("g1", target)
		c.waitStamp("g1", time.Now(), 60*time.Second)
		var what []string
		if target == mgr {
			what = append(what, "manager")
		}
		if target == leader {
			what = append(what, "store leader")
		}
		f := figures{lost: target}
		if len(what) > 0 {
			f.lost += " (" + strings.Join(what, ", ") + ")"
		}
		b.StartTimer()
		t0 := time.Now()
		var err error
		if partition {
			var rest []string
			for _, n := range c.names() {
				if n != target {
					rest = append(rest, n)
				}
			}
			err = c.bed.Partition(c.ctx, []string{target}, rest)
		} else {
			err = c.bed.PowerOff(c.ctx, target)
		}
		if err != nil {
			b.Fatal(err)
		}
		f.reported, f.manager, f.acting = c.watchRecovery("g1", target, t0, target == mgr)
		seg := c.waitNewBoot("g1", t0, recoverWithin)
		b.StopTimer()
		f.running = seg.First.Sub(t0)
		for _, e := range c.events() {
			if !e.At.After(t0) {
				continue
			}
			switch {
			case f.detect == 0 && e.Kind == "fence" && strings.HasPrefix(e.Msg, "fence "+target+" "):
				f.detect = e.At.Sub(t0)
			case f.fenced == 0 && e.Kind == "fence" && strings.HasPrefix(e.Msg, "fenced "+target+":"):
				f.fenced = e.At.Sub(t0)
			case f.started == 0 && e.Guest == "g1" && strings.HasPrefix(e.Msg, "start g1 on "):
				f.started = e.At.Sub(t0)
			}
		}
		ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
		mgrNote := ""
		if f.manager > 0 {
			mgrNote = fmt.Sprintf(", new manager %v (acting %v)", ms(f.manager), ms(f.acting))
		}
		b.Logf("round %d: lost %s%s: detected %v, fenced %v, start ordered %v, reported running %v, writing its disk %v", i+1, f.lost, mgrNote,
			ms(f.detect), ms(f.fenced), ms(f.started), ms(f.reported), ms(f.running))
		if f.reported > slowRound {
			c.logFailover(b, t0, target)
		}
		all = append(all, f)
		c.noDoubleRun()
		if partition {
			if err := c.bed.Heal(c.ctx); err != nil {
				b.Fatal(err)
			}
		}
		if !c.node(target).h.PoweredOn() {
			if err := c.bed.PowerOn(c.ctx, target); err != nil {
				b.Fatal(err)
			}
		}
	}
	if len(all) == 0 {
		return
	}
	for _, m := range []struct {
		name string
		get  func(figures) time.Duration
	}{
		{"manager", func(f figures) time.Duration { return f.manager }},
		{"acting", func(f figures) time.Duration { return f.acting }},
		{"detect", func(f figures) time.Duration { return f.detect }},
		{"fenced", func(f figures) time.Duration { return f.fenced }},
		{"started", func(f figures) time.Duration { return f.started }},
		{"reported", func(f figures) time.Duration { return f.reported }},
		{"running", func(f figures) time.Duration { return f.running }},
	} {
		var ds []time.Duration
		for _, f := range all {
			if d := m.get(f); d > 0 {
				ds = append(ds, d)
			}
		}
		if len(ds) == 0 {
			continue
		}
		slices.Sort(ds)
		med, worst := ds[len(ds)/2], ds[len(ds)-1]
		b.ReportMetric(med.Seconds(), m.name+"-median-s")
		b.ReportMetric(worst.Seconds(), m.name+"-worst-s")
		b.Logf("%-8s median %v worst %v over %d rounds", m.name, med.Round(10*time.Millisecond), worst.Round(10*time.Millisecond), len(ds))
	}
}

// watchRecovery polls the API every 50 ms from t0 until guest is reported
// running on a host other than lost; it returns when that happened and, if
// wantManager, when status first named a live manager other than lost and
// when that manager's term began (status's manager since: it acts from
// then on).
func (c *testCluster) watchRecovery(guest, lost string, t0 time.Time, wantManager bool) (reported, manager, acting time.Duration) {
	c.t.Helper()
	var wg sync.WaitGroup
	if wantManager {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(t0) < recoverWithin && c.ctx.Err() == nil {
				var name string
				var since time.Time
				_ = c.tryAPIExcept(lost, func(ctx context.Context, cl *client.Client) error {
					st, err := cl.Status(ctx)
					if err == nil && st.Quorum.OK {
						name, since = st.Manager, st.ManagerSince
					}
					return err
				})
				if name != "" && name != lost {
					if manager == 0 {
						manager = time.Since(t0)
					}
					if since.After(t0) {
						acting = since.Sub(t0)
						return
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	c.poll(guest+" reported running elsewhere", recoverWithin, func() bool {
		for time.Since(t0) < recoverWithin {
			rows := map[string]api.GuestRow{}
			err := c.tryAPIExcept(lost, func(ctx context.Context, cl *client.Client) error {
				gs, err := cl.Guests(ctx)
				for _, g := range gs {
					rows[g.Name] = g
				}
				return err
			})
			if r, ok := rows[guest]; err == nil && ok && r.State == "started" && r.Running && r.Node != "" && r.Node != lost {
				reported = time.Since(t0)
				return true
			}
			time.Sleep(50 * time.Millisecond)
		}
		return false
	})
	wg.Wait()
	return reported, manager, acting
}

// manager is the manager's name as status reports it.
func (c *testCluster) manager() string {
	c.t.Helper()
	var name string
	c.poll("a manager", 30*time.Second, func() bool {
		st, err := c.status()
		if err == nil {
			name = st.Manager
		}
		return name != ""
	})
	return name
}

// storeLeader asks the store (with h1's certificate) which member leads it.
func (c *testCluster) storeLeader() string {
	c.t.Helper()
	var name string
	c.poll("a store leader", 30*time.Second, func() bool {
		for _, n := range c.nodes {
			if !n.h.PoweredOn() {
				continue
			}
			if name = c.leaderSeenBy(n); name != "" {
				return true
			}
		}
		return false
	})
	return name
}

func (c *testCluster) leaderSeenBy(n *node) string {
	read := func(f string) []byte {
		b, _ := os.ReadFile(filepath.Join(n.dir, "pki", f))
		return b
	}
	tlsCfg, err := pki.ClientTLS(read("ca.crt"), read("node.crt"), read("node.key"))
	if err != nil {
		return ""
	}
	ep := "https://" + n.h.Addr.String() + ":7402"
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, TLS: tlsCfg, DialTimeout: 2 * time.Second})
	if err != nil {
		return ""
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
	defer cancel()
	st, err := cli.Status(ctx, ep)
	if err != nil || st.Leader == 0 {
		return ""
	}
	ms, err := cli.MemberList(ctx)
	if err != nil {
		return ""
	}
	for _, m := range ms.Members {
		if m.ID == st.Leader {
			return m.Name
		}
	}
	return ""
}

// moveTo live-migrates guest to node unless it runs there, and waits until
// it runs there.
func (c *testCluster) moveTo(guest, node string) {
	c.t.Helper()
	rows, err := c.guestRows()
	if err == nil && rows[guest].Node == node && rows[guest].Running {
		return
	}
	c.api(func(ctx context.Context, cl *client.Client) error {
		_, err := cl.GuestCommand(ctx, guest, "migrate", node)
		return err
	})
	c.waitRunning(120*time.Second, func(g, n string) bool { return n == node }, guest)
}

// slowRound is a round slower than the fast path allows (a host seen dead
// in 1.5 s, fenced, its guest started): the survivors' log lines about
// the failover are kept for it.
const slowRound = 6 * time.Second

// logFailover logs, from every agent but the lost one, the lines since t0
// that say how the failover went: the fast path, the election, leases,
// fencing and the store's warnings about leadership.
func (c *testCluster) logFailover(tb testing.TB, t0 time.Time, lost string) {
	tb.Helper()
	keep := []string{"op=failover", "op=election", "op=liveness", "op=fence", "lease", "fenc", "leadership", "became manager", "manager write"}
	for _, n := range c.nodes {
		if n.name == lost {
			continue
		}
		var lines []string
		timedLines(c.logOf(n), func(at time.Time, line string) {
			if at.Before(t0) {
				return
			}
			for _, k := range keep {
				if strings.Contains(line, k) {
					lines = append(lines, line)
					return
				}
			}
		})
		if len(lines) > 60 {
			lines = lines[:60]
		}
		tb.Logf("slow round: %s's log since the fault (%d lines):\n%s", n.name, len(lines), strings.Join(lines, "\n"))
	}
}

// timedLines calls fn with the time and text of every timed line of an
// agent log.
func timedLines(log string, fn func(at time.Time, line string)) {
	for _, line := range strings.Split(log, "\n") {
		m := logTime.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if at, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
			fn(at, line)
		}
	}
}
