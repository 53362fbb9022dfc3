package failover

import (
	"testing"
	"time"
)

// Default timings: a dead host's guests must run again well under this.
const recoverWithin = 60 * time.Second

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
		seg := c.waitStamp(g, t0, 30*time.Second)
		if seg.First.Before(t0) {
			t.Errorf("%s: latest writer %s started before the fault: not restarted?", g, seg.BootID)
		}
	}
	c.noDoubleRun()
	if got := len(c.segments("g3")); got != g3Boots {
		t.Errorf("g3 on h3 was restarted (%d boots, want %d)", got, g3Boots)
	}
	if got := c.fencedCount("h1", t0); got != s.fences {
		t.Errorf("h1 fenced %d times, want %d", got, s.fences)
	}

	// h1 comes back: g1 and g2 go home live.
	before := map[string]int{}
	lastCount := map[string]uint64{}
	for _, g := range []string{"g1", "g2"} {
		segs := c.segments(g)
		before[g] = len(segs)
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
		segs := c.segments(g)
		if len(segs) != before[g] {
			t.Errorf("%s restarted on its way home: %d boots, want %d (segments %+v)", g, len(segs), before[g], segs)
		} else if seg.LastCounter <= lastCount[g] {
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
	c := newCluster(t, options{})
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
		fences: 1,
		within: recoverWithin,
	})
}
