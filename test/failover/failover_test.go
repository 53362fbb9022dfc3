package failover

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/store"
)

// Default timings: a dead host's guests must run again well under this.
const recoverWithin = 60 * time.Second

// eachHypervisor runs fn as a subtest per driver of -failover.hypervisors:
// the same faults and checks with agents on the QEMU driver and on libvirt
// (a libvirtd per host).
func eachHypervisor(t *testing.T, fn func(t *testing.T, hv string)) {
	for _, hv := range strings.Split(*hypervisors, ",") {
		t.Run(hv, func(t *testing.T) { fn(t, hv) })
	}
}

// homeScenario is what tests (a) to (c) share: g1 and g2 prefer h1 (ordered
// domain h1, h2, h3), g3 runs on h3 with no domain. fail takes h1 away;
// restore brings it back. The guests of h1 must run elsewhere, never twice,
// g3 must not notice, and once h1 is back g1 and g2 must go home by live
// migration: same boot, counter still counting.
type homeScenario struct {
	fail    func(c *testCluster)
	restore func(c *testCluster)
	// fences is how many successful fence operations of h1 the event log
	// must show (0 in watchdog mode, where no device runs).
	fences int
	within time.Duration
	// failoverMetric: the failover's latency must show in /metrics.
	failoverMetric bool
	// poweredOff: fail powers h1 off, so it must never be reported
	// isolated (its storage heartbeat stopped with its network ones).
	poweredOff bool
}

func runHome(t *testing.T, c *testCluster, s homeScenario) {
	c.domain("h1-first", "h1", "h2", "h3")
	c.guest("g1", "h1-first", "")
	c.guest("g2", "h1-first", "")
	c.guest("g3", "", "h3")
	home := func(g, n string) bool {
		if g == "g3" {
			return n == "h3"
		}
		return n == "h1"
	}
	start := time.Now()
	c.waitRunning(120*time.Second, home)
	for _, g := range c.guests {
		c.waitStamp(g, start, 60*time.Second)
	}
	t.Logf("3 guests running and writing after %v", time.Since(start).Round(100*time.Millisecond))
	g3Boots := len(c.segments("g3"))

	t0 := time.Now()
	s.fail(c)
	on := c.waitRunning(s.within, func(g, n string) bool { return n != "h1" && (g != "g3" || n == "h3") })
	t.Logf("h1's guests run again on %v, %v after the fault", on, time.Since(t0).Round(100*time.Millisecond))
	for _, g := range []string{"g1", "g2"} {
		seg := c.waitNewBoot(g, t0, 120*time.Second) // a TCG boot; a minute and more on a loaded machine
		t.Logf("%s: new boot %s writes its disk %v after the fault", g, seg.BootID[:8], seg.First.Sub(t0).Round(100*time.Millisecond))
	}
	c.noDoubleRun()
	if got := len(c.segments("g3")); got != g3Boots {
		t.Errorf("g3 on h3 was restarted (%d boots, want %d)", got, g3Boots)
	}
	if got := c.fencedCount("h1", t0); got != s.fences {
		t.Errorf("h1 fenced %d times, want %d", got, s.fences)
	}
	if s.poweredOff {
		for _, e := range c.events() {
			if e.At.After(t0) && strings.HasPrefix(e.Msg, "h1 is cut off from the cluster network") {
				t.Errorf("powered-off h1 reported isolated: %s", e.Msg)
			}
		}
	}
	if s.failoverMetric {
		c.waitFailoverObserved(1, 10*time.Second)
	}

	// h1 comes back: g1 and g2 go home live.
	before := map[string]int{}
	serial := map[string]int64{}
	lastCount := map[string]uint64{}
	for _, g := range []string{"g1", "g2"} {
		segs := c.segments(g)
		before[g] = len(segs)
		serial[g] = c.serialSize(g)
		lastCount[g] = segs[len(segs)-1].LastCounter
	}
	t1 := time.Now()
	s.restore(c)
	c.waitHosts(90*time.Second, "h1")
	c.waitRunning(120*time.Second, home)
	t.Logf("g1 and g2 back on h1 %v after h1 was restored", time.Since(t1).Round(100*time.Millisecond))
	t2 := time.Now()
	for _, g := range []string{"g1", "g2"} {
		seg := c.waitStamp(g, t2, 30*time.Second)
		if c.restartedBy("on its way home", g, before[g], serial[g]) {
			continue
		}
		if len(c.segments(g)) == before[g] && seg.LastCounter <= lastCount[g] {
			t.Errorf("%s: counter %d after going home, was %d: not the same running guest", g, seg.LastCounter, lastCount[g])
		}
	}
	c.noDoubleRun()
	if got := c.fencedCount("h1", t0); got != s.fences {
		t.Errorf("after h1 came back: h1 fenced %d times, want %d", got, s.fences)
	}
}

// (a) The host running the guests loses power.
func TestPowerLossFailoverAndLiveFailback(t *testing.T) {
	eachHypervisor(t, func(t *testing.T, hv string) {
		powerLoss(t, newCluster(t, options{hypervisor: hv}))
	})
}

func powerLoss(t *testing.T, c *testCluster) {
	runHome(t, c, homeScenario{
		fail: func(c *testCluster) {
			if err := c.bed.PowerOff(c.ctx, "h1"); err != nil {
				t.Fatal(err)
			}
		},
		restore: func(c *testCluster) {
			if err := c.bed.PowerOn(c.ctx, "h1"); err != nil {
				t.Fatal(err)
			}
		},
		fences:         1,
		within:         recoverWithin,
		failoverMetric: true,
		poweredOff:     true,
	})
}

// (b) h1 is cut off from h2 and h3 (2 against 1): the majority sees it gone
// (no heartbeat, its address silent), fences it and starts its guests
// again; had the fence been slower than h1's lease, h1 would have killed
// its own guests first.
func TestPartitionMinorityFailover(t *testing.T) {
	eachHypervisor(t, func(t *testing.T, hv string) {
		partition(t, newCluster(t, options{hypervisor: hv}))
	})
}

func partition(t *testing.T, c *testCluster) {
	runHome(t, c, homeScenario{
		fail: func(c *testCluster) {
			if err := c.bed.Partition(c.ctx, []string{"h1"}, []string{"h2", "h3"}); err != nil {
				t.Fatal(err)
			}
		},
		restore: func(c *testCluster) {
			// The majority saw h1 gone (no heartbeat, its address silent)
			// and fenced (powered off) it, long before h1's own self-fence
			// deadline (its lease TTL less a second).
			if c.node("h1").h.PoweredOn() {
				t.Error("h1 still powered on: the majority did not fence it")
			}
			if err := c.bed.Heal(c.ctx); err != nil {
				t.Fatal(err)
			}
			if err := c.bed.PowerOn(c.ctx, "h1"); err != nil {
				t.Fatal(err)
			}
		},
		fences: 1,
		within: recoverWithin,
	})
}

// (c) Watchdog mode: no fence device; the manager waits out h1's
// self-fence deadline (lease TTL + manager.Timings.WatchdogWait) before
// starting its guests elsewhere.
func TestWatchdogModeFailover(t *testing.T) {
	eachHypervisor(t, func(t *testing.T, hv string) {
		watchdogMode(t, newCluster(t, options{watchdog: true, hypervisor: hv}))
	})
}

func watchdogMode(t *testing.T, c *testCluster) {
	var t0 time.Time
	runHome(t, c, homeScenario{
		fail: func(c *testCluster) {
			t0 = time.Now()
			if err := c.bed.PowerOff(c.ctx, "h1"); err != nil {
				t.Fatal(err)
			}
		},
		restore: func(c *testCluster) {
			// The manager must have waited the deadline: h1 is seen failed
			// no sooner than its lease could expire (TTL after its last
			// keepalive, at most one interval before the plug was
			// pulled), and no guest of h1 starts elsewhere before the
			// watchdog timeout and margin have passed after that.
			tm := manager.DefaultTimings()
			var failedAt time.Time
			for _, e := range c.events() {
				if e.At.After(t0) && e.Kind == "manager" && strings.HasPrefix(e.Msg, "node h1 failed") && failedAt.IsZero() {
					failedAt = e.At
					if d := e.At.Sub(t0); d < store.DefaultLeaseTTL-store.DefaultKeepAlive {
						t.Errorf("h1 seen failed %v after it died: sooner than its lease can expire", d)
					}
				}
				if e.Kind == "manager" && e.At.After(t0) && (e.Guest == "g1" || e.Guest == "g2") && strings.HasPrefix(e.Msg, "start ") {
					wait := tm.WatchdogWait()
					switch d := e.At.Sub(failedAt); {
					case failedAt.IsZero():
						t.Errorf("%s before h1 was seen failed", e.Msg)
					case d < wait:
						t.Errorf("%s %v after h1 was seen failed, before the watchdog deadline %v", e.Msg, d.Round(time.Millisecond), wait)
					default:
						t.Logf("%s %v after h1 died, %v after it was seen failed (deadline %v)", e.Msg, e.At.Sub(t0).Round(time.Millisecond), d.Round(time.Millisecond), wait)
					}
				}
			}
			if err := c.bed.PowerOn(c.ctx, "h1"); err != nil {
				t.Fatal(err)
			}
		},
		fences: 0,
		within: 90 * time.Second,
	})
}

// (e) h1 dies while its fence device fails: its guests wait, fencing. The
// operator, having seen it dark, confirms it off: they run again elsewhere
// at once, and no fence is counted. (The driver plays no part: QEMU only.)
func TestOperatorConfirmsOff(t *testing.T) {
	c := newCluster(t, options{})
	c.domain("h1-first", "h1", "h2", "h3")
	c.guest("g1", "h1-first", "")
	c.waitRunning(120*time.Second, func(g, n string) bool { return n == "h1" })
	if err := c.bed.FenceDeviceFail("h1", true); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := c.bed.PowerOff(c.ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	c.waitHostState("h1", api.HostOffline, 60*time.Second)
	// Its fence keeps failing: g1 runs nowhere.
	c.poll("a failed fence attempt on h1", 30*time.Second, func() bool {
		for _, e := range c.events() {
			if e.At.After(t0) && e.Kind == "fence" && strings.HasPrefix(e.Msg, "fencing h1 failed") {
				return true
			}
		}
		return false
	})
	if on := c.qemuOn("g1"); on != "" {
		t.Fatalf("g1 runs on %s while h1 is not fenced", on)
	}
	t1 := time.Now()
	c.api(func(ctx context.Context, cl *client.Client) error {
		res, err := cl.ConfirmOff(ctx, "h1")
		if err == nil && !res.Done {
			return fmt.Errorf("confirm-off not carried out: %+v", res)
		}
		return err
	})
	on := c.waitRunning(recoverWithin, func(g, n string) bool { return n != "h1" }, "g1")
	seg := c.waitNewBoot("g1", t1, 30*time.Second)
	t.Logf("g1 runs again on %s, writing %v after the operator's confirmation", on["g1"], seg.First.Sub(t1).Round(100*time.Millisecond))
	if got := c.fencedCount("h1", t0); got != 0 {
		t.Errorf("h1 fenced %d times by a failing device", got)
	}
	c.noDoubleRun()
	// Once the device works and h1 is back, g1 goes home.
	if err := c.bed.FenceDeviceFail("h1", false); err != nil {
		t.Fatal(err)
	}
	if err := c.bed.PowerOn(c.ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	c.waitHosts(90*time.Second, "h1")
	c.waitRunning(120*time.Second, func(g, n string) bool { return n == "h1" }, "g1")
	c.noDoubleRun()
}

// (f) Planned work on h1, the preferred host of g1 and g2: maintenance moves
// them away live and brings them back live; a graceful shutdown (policy
// migrate) moves them away live, h1 leaves cleanly and is never fenced, and
// once it is back they go home live. g3 on h3 never notices, and no guest
// restarts at any point.
func TestMaintenanceAndGracefulShutdown(t *testing.T) {
	eachHypervisor(t, func(t *testing.T, hv string) {
		c := newCluster(t, options{hypervisor: hv})
		c.domain("h1-first", "h1", "h2", "h3")
		c.guest("g1", "h1-first", "")
		c.guest("g2", "h1-first", "")
		c.guest("g3", "", "h3")
		home := func(g, n string) bool { return n == map[bool]string{true: "h3", false: "h1"}[g == "g3"] }
		away := func(g, n string) bool { return n != "h1" && (g != "g3" || n == "h3") }
		c.waitRunning(120*time.Second, home)
		boots := map[string]int{}
		serial := map[string]int64{}
		now := time.Now()
		for _, g := range c.guests {
			c.waitStamp(g, now, 60*time.Second)
			boots[g] = len(c.segments(g))
			serial[g] = c.serialSize(g)
		}
		// sameBoots checks that no guest restarted and that each still
		// writes its disk.
		sameBoots := func(step string) {
			t.Helper()
			now := time.Now()
			for _, g := range c.guests {
				c.waitStamp(g, now, 30*time.Second)
				c.restartedBy(step, g, boots[g], serial[g])
				boots[g], serial[g] = len(c.segments(g)), c.serialSize(g)
			}
			c.noDoubleRun()
		}
		t0 := time.Now()

		if err := c.bed.Maintenance(c.ctx, "h1", true); err != nil {
			t.Fatal(err)
		}
		on := c.waitRunning(90*time.Second, away)
		t.Logf("maintenance on h1: guests on %v after %v", on, time.Since(t0).Round(100*time.Millisecond))
		sameBoots("maintenance on")
		if hv == "libvirt" {
			c.libvirtConfined()
		}
		t1 := time.Now()
		if err := c.bed.Maintenance(c.ctx, "h1", false); err != nil {
			t.Fatal(err)
		}
		c.waitRunning(90*time.Second, home)
		t.Logf("maintenance off: g1 and g2 home after %v", time.Since(t1).Round(100*time.Millisecond))
		sameBoots("maintenance off")

		t2 := time.Now()
		if err := c.bed.Shutdown(c.ctx, "h1"); err != nil {
			t.Fatal(err)
		}
		on = c.waitRunning(30*time.Second, away)
		t.Logf("graceful shutdown of h1: it was empty and off after %v; guests on %v", time.Since(t2).Round(100*time.Millisecond), on)
		c.waitHostState("h1", api.HostOffline, 30*time.Second)
		sameBoots("graceful shutdown")
		t3 := time.Now()
		if err := c.bed.PowerOn(c.ctx, "h1"); err != nil {
			t.Fatal(err)
		}
		c.waitHosts(90*time.Second, "h1")
		c.waitRunning(120*time.Second, home)
		t.Logf("h1 back: g1 and g2 home after %v", time.Since(t3).Round(100*time.Millisecond))
		sameBoots("back after shutdown")
		if got := c.fencedCount("h1", t0); got != 0 {
			t.Errorf("h1 fenced %d times during planned work", got)
		}
	})
}

// (g) An upgrade: the agent of a host running guests is stopped (SIGTERM)
// and started again, twice. Its guests keep running, the host never goes
// offline and is not fenced: the new agent resumes the old one's lease. The
// host is h2, a store member but not its leader (whose hand-over would
// restart every lease's countdown): its agent takes seconds to stop while
// other hosts' streams leave its member, and its lease must be renewed
// meanwhile.
func TestAgentRestartKeepsGuests(t *testing.T) {
	eachHypervisor(t, func(t *testing.T, hv string) {
		c := newCluster(t, options{hypervisor: hv})
		c.domain("h2-first", "h2", "h1", "h3")
		c.guest("g1", "h2-first", "")
		c.waitRunning(120*time.Second, func(g, n string) bool { return n == "h2" })
		t0 := time.Now()
		c.waitStamp("g1", t0, 60*time.Second)
		boots := len(c.segments("g1"))
		n := c.node("h2")
		for i := range 2 {
			stopped, ready := c.restartAgent(n, syscall.SIGTERM)
			t.Logf("restart %d: agent stopped in %v, ready again %v after SIGTERM", i+1, stopped.Round(10*time.Millisecond), ready.Round(10*time.Millisecond))
		}
		// Past a lease TTL: had the lease lapsed, h2 would be down by now.
		c.waitStamp("g1", time.Now().Add(store.DefaultLeaseTTL), 60*time.Second)
		c.waitRunning(30*time.Second, func(g, n string) bool { return n == "h2" })
		if got := len(c.segments("g1")); got != boots {
			t.Errorf("g1 restarted by the agent's restart: %d boots, want %d", got, boots)
		}
		for _, e := range c.events() {
			if e.At.After(t0) && (strings.HasPrefix(e.Msg, "node h2 failed") || strings.HasPrefix(e.Msg, "node h2 is offline")) {
				t.Errorf("h2 went down during its agent's restart: %s", e.Msg)
			}
		}
		if got := c.fencedCount("h2", t0); got != 0 {
			t.Errorf("h2 fenced %d times by an agent restart", got)
		}
		c.noDoubleRun()
	})
}
