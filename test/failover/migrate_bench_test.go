package failover

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api/client"
)

// BenchmarkLiveMigration moves a running guest between h1 and h2 by live
// migration through the API, b.N times per driver, and times the command
// until the API reports it running on the target. It also reads, from the
// source agent's log, how long the hypervisor's own migration took (the
// QEMU driver's migrate command, libvirt's peer-to-peer
// DomainMigratePerform3, which is what `virsh migrate --live --p2p` calls),
// so the cluster's overhead shows: orders through the store, the target's
// receive phase, the reports.
//
//	go test ./test/failover/ -run '^$' -bench LiveMigration -benchtime 10x
func BenchmarkLiveMigration(b *testing.B) {
	for _, hv := range strings.Split(*hypervisors, ",") {
		b.Run(hv, func(b *testing.B) { liveMigration(b, hv) })
	}
}

var logTime = regexp.MustCompile(`time=(\S+) `)

// guestLog calls fn with the time and text of every line of an agent log
// about guest, in order, until fn returns false.
func guestLog(log, guest string, fn func(at time.Time, line string) bool) {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "guest="+guest+" ") {
			continue
		}
		m := logTime.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			continue
		}
		if !fn(at, line) {
			return
		}
	}
}

// driverMigration finds, in the agent log since offset, when the driver's
// live migration of guest started and completed.
func driverMigration(log, guest string) (took time.Duration, ok bool) {
	var start time.Time
	guestLog(log, guest, func(at time.Time, line string) bool {
		switch {
		case strings.Contains(line, `msg="live migration started"`) || strings.Contains(line, `msg="migration starting"`):
			start = at
		case (strings.Contains(line, `msg="live migration completed"`) || strings.Contains(line, `msg="migration completed"`)) && !start.IsZero():
			took, ok = at.Sub(start), true
			return false
		}
		return true
	})
	return took, ok
}

func liveMigration(b *testing.B, hv string) {
	c := newCluster(b, options{hypervisor: hv})
	c.guest("g1", "", "h1")
	c.waitRunning(120*time.Second, func(g, n string) bool { return n == "h1" })
	var total, drv []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		rows, _ := c.guestRows()
		src := rows["g1"].Node
		dst := map[string]string{"h1": "h2", "h2": "h1"}[src]
		c.waitStamp("g1", time.Now(), 60*time.Second)
		logStart := len(c.logOf(c.node(src)))
		b.StartTimer()
		t0 := time.Now()
		c.api(func(ctx context.Context, cl *client.Client) error {
			_, err := cl.GuestCommand(ctx, "g1", "migrate", dst)
			return err
		})
		var took time.Duration
		c.poll("g1 on "+dst, 60*time.Second, func() bool {
			for time.Since(t0) < 60*time.Second {
				rows, err := c.guestRows()
				if r := rows["g1"]; err == nil && r.Node == dst && r.Running && r.State == "started" && r.Op == nil {
					took = time.Since(t0)
					return true
				}
				time.Sleep(20 * time.Millisecond)
			}
			return false
		})
		b.StopTimer()
		log := c.logOf(c.node(src))
		if len(log) > logStart {
			log = log[logStart:]
		}
		d, ok := driverMigration(log, "g1")
		if ok {
			drv = append(drv, d)
		}
		total = append(total, took)
		b.Logf("round %d: %s -> %s: reported running on the target %v after the command; the driver's migration took %v (cluster overhead %v)",
			i+1, src, dst, took.Round(time.Millisecond), d.Round(time.Millisecond), (took - d).Round(time.Millisecond))
		c.noDoubleRun()
	}
	for _, m := range []struct {
		name string
		ds   []time.Duration
	}{{"migrate", total}, {"driver", drv}} {
		if len(m.ds) == 0 {
			continue
		}
		slices.Sort(m.ds)
		med := m.ds[len(m.ds)/2]
		b.ReportMetric(med.Seconds(), m.name+"-median-s")
		b.Logf("%s: median %v over %d rounds", m.name, med.Round(10*time.Millisecond), len(m.ds))
	}
}
