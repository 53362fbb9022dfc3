package failover

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api/client"
)

// BenchmarkGuestCrash kills a running guest's QEMU with SIGKILL, b.N times,
// and times how long until the API reports it running again on its host
// (running, since after the kill), per driver of -failover.hypervisors.
// Each round is a first crash: the guest's restart window is 5 s, and a
// round starts once the manager has cleared its restart count after 5 s
// without trouble (further restarts in a window wait longer: the restart
// delay doubles). Each round is also split into stages by the host
// agent's log (crashStages).
//
//	go test ./test/failover/ -run '^$' -bench GuestCrash -benchtime 10x
func BenchmarkGuestCrash(b *testing.B) {
	for _, hv := range strings.Split(*hypervisors, ",") {
		b.Run(hv, func(b *testing.B) { guestCrash(b, hv) })
	}
}

func guestCrash(b *testing.B, hv string) {
	c := newCluster(b, options{hypervisor: hv})
	c.guest("g1", "", "h2")
	c.api(func(ctx context.Context, cl *client.Client) error {
		_, err := cl.EditGuest(ctx, "g1", map[string]any{"max_restarts": 3, "restart_window": "5s"})
		return err
	})
	c.waitRunning(120*time.Second, func(g, n string) bool { return n == "h2" })
	var ds []time.Duration
	stages := map[string][]time.Duration{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c.waitRunning(60*time.Second, func(g, n string) bool { return n == "h2" })
		c.poll("g1's restart count cleared", 60*time.Second, func() bool { return c.restarts("g1") == 0 })
		pid := c.qemuPID("g1", "h2")
		logStart := len(c.logOf(c.node("h2")))
		b.StartTimer()
		t0 := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		var took time.Duration
		c.poll("g1 running again", 30*time.Second, func() bool {
			for time.Since(t0) < 30*time.Second {
				var ok bool
				_ = c.tryAPI(func(ctx context.Context, cl *client.Client) error {
					gi, err := cl.Guest(ctx, "g1")
					if err == nil {
						// Running since after the kill (one clock: the bed's
						// hosts share the machine's): the restart count alone
						// can be cleared again (5 s without trouble) before a
						// slow poll sees it grown.
						ok = gi.Runtime.Running && gi.Runtime.State == "started" && gi.Runtime.RunningSince.After(t0)
					}
					return err
				})
				if ok {
					took = time.Since(t0)
					return true
				}
				time.Sleep(20 * time.Millisecond)
			}
			return false
		})
		b.StopTimer()
		log := c.logOf(c.node("h2"))
		if len(log) > logStart {
			log = log[logStart:]
		}
		st := crashStages(log, "g1", t0, took)
		for _, s := range st {
			stages[s.name] = append(stages[s.name], s.d)
		}
		b.Logf("round %d: kill -9 of QEMU (pid %d) → reported running again %v (%s)", i+1, pid, took.Round(time.Millisecond), st)
		ds = append(ds, took)
	}
	for _, name := range crashStageNames {
		if s := stages[name]; len(s) > 0 {
			slices.Sort(s)
			b.Logf("stage %s: median %v over %d rounds", name, s[len(s)/2].Round(time.Millisecond), len(s))
		}
	}
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	med, worst := ds[len(ds)/2], ds[len(ds)-1]
	b.ReportMetric(med.Seconds(), "running-median-s")
	b.ReportMetric(worst.Seconds(), "running-worst-s")
	b.Logf("crash → running again: median %v worst %v over %d rounds", med.Round(10*time.Millisecond), worst.Round(10*time.Millisecond), len(ds))
}

func (c *testCluster) restarts(guest string) int {
	c.t.Helper()
	var n int
	c.api(func(ctx context.Context, cl *client.Client) error {
		gi, err := cl.Guest(ctx, guest)
		if err == nil {
			n = gi.Runtime.Restarts
		}
		return err
	})
	return n
}

// qemuPID is the pid of guest's QEMU on host.
func (c *testCluster) qemuPID(guest, host string) int {
	c.t.Helper()
	disk := filepath.Join(c.bed.SharedDir(), guest+".img")
	asDrive, asBlockdev := []byte("file="+disk+","), []byte(`"filename":"`+disk+`"`)
	pids, _ := c.node(host).h.PIDs()
	for _, pid := range pids {
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmd, []byte("qemu")) {
			continue
		}
		if bytes.Contains(cmd, asDrive) || bytes.Contains(cmd, asBlockdev) {
			return pid
		}
	}
	c.t.Fatalf("no QEMU of %s on %s", guest, host)
	return 0
}

// crashStageNames are the stages of a crash and restart on its host, as
// its agent's log shows them (crashStages).
var crashStageNames = []string{"seen", "to-start", "start", "report"}

type crashStage struct {
	name string
	d    time.Duration
}

type crashStageList []crashStage

func (l crashStageList) String() string {
	var parts []string
	for _, s := range l {
		parts = append(parts, s.name+" "+s.d.Round(time.Millisecond).String())
	}
	return strings.Join(parts, ", ")
}

// crashStages splits the time from the kill at t0 to the API's report
// (took) by the host agent's log: the crash seen by the agent ("seen"),
// from there to the hypervisor start call ("to-start": the manager's
// restart delay and order, through the store), the start itself ("start":
// the QEMU driver's exec until its QMP monitor answers, or libvirt's
// domain start) and from the start order done to the API's report
// ("report"). A stage whose log lines are missing is left out.
func crashStages(log, guest string, t0 time.Time, took time.Duration) crashStageList {
	var crashed, started, done time.Time
	guestLog(log, guest, func(at time.Time, line string) bool {
		switch {
		case crashed.IsZero() && strings.Contains(line, `msg="guest event" component=host`) && strings.Contains(line, "kind=crashed"):
			crashed = at
		case !crashed.IsZero() && started.IsZero() && (strings.Contains(line, `msg="qemu started"`) || strings.Contains(line, `msg="starting guest"`)):
			started = at
		case !crashed.IsZero() && done.IsZero() && strings.Contains(line, `msg="order done"`) && strings.Contains(line, "op=start"):
			done = at
		}
		return true
	})
	var out crashStageList
	if crashed.IsZero() || done.IsZero() {
		return out
	}
	out = append(out, crashStage{"seen", crashed.Sub(t0)})
	if !started.IsZero() {
		out = append(out, crashStage{"to-start", started.Sub(crashed)}, crashStage{"start", done.Sub(started)})
	}
	out = append(out, crashStage{"report", t0.Add(took).Sub(done)})
	return out
}
