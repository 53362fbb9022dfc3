package failover

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// figures are one failover's times, measured from the moment the plug was
// pulled.
type figures struct {
	detect  time.Duration // the manager decided to fence (the node's lease expired)
	fenced  time.Duration // the fence device confirmed the host off
	started time.Duration // the manager ordered the guest started elsewhere
	running time.Duration // the guest wrote its disk from its new host
}

// BenchmarkHostPowerLoss pulls the plug on the host running a guest, with
// default timings and fence devices (fence_testbed), b.N times, and reports
// the median and worst times: detection, fencing, the guest's start order
// and the guest running again (its first disk write from the new host).
// Between rounds the host comes back and the guest goes home. It runs per
// driver of -failover.hypervisors (sub-benchmarks qemu and libvirt).
//
//	scripts/bench-failover.sh [ROUNDS] [DRIVERS]
func BenchmarkHostPowerLoss(b *testing.B) {
	for _, hv := range strings.Split(*hypervisors, ",") {
		b.Run(hv, func(b *testing.B) { hostPowerLoss(b, hv) })
	}
}

func hostPowerLoss(b *testing.B, hv string) {
	c := newCluster(b, options{hypervisor: hv})
	c.domain("h1-first", "h1", "h2", "h3")
	c.guest("g1", "h1-first", "")
	home := func(g, n string) bool { return n == "h1" }
	c.waitRunning(120*time.Second, home)
	var all []figures
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c.waitRunning(120*time.Second, home)
		c.waitStamp("g1", time.Now(), 60*time.Second)
		b.StartTimer()
		t0 := time.Now()
		if err := c.bed.PowerOff(c.ctx, "h1"); err != nil {
			b.Fatal(err)
		}
		seg := c.waitNewBoot("g1", t0, recoverWithin)
		b.StopTimer()
		f := figures{running: seg.First.Sub(t0)}
		for _, e := range c.events() {
			if !e.At.After(t0) {
				continue
			}
			switch {
			case f.detect == 0 && e.Kind == "fence" && strings.HasPrefix(e.Msg, "fence h1 "):
				f.detect = e.At.Sub(t0)
			case f.fenced == 0 && e.Kind == "fence" && strings.HasPrefix(e.Msg, "fenced h1:"):
				f.fenced = e.At.Sub(t0)
			case f.started == 0 && e.Guest == "g1" && strings.HasPrefix(e.Msg, "start g1 on "):
				f.started = e.At.Sub(t0)
			}
		}
		b.Logf("round %d: detected %v, fenced %v, start ordered %v, running %v", i+1,
			f.detect.Round(time.Millisecond), f.fenced.Round(time.Millisecond), f.started.Round(time.Millisecond), f.running.Round(time.Millisecond))
		all = append(all, f)
		c.noDoubleRun()
		if err := c.bed.PowerOn(c.ctx, "h1"); err != nil {
			b.Fatal(err)
		}
		c.waitHosts(90*time.Second, "h1")
	}
	if len(all) == 0 {
		return
	}
	for _, m := range []struct {
		name string
		get  func(figures) time.Duration
	}{
		{"detect", func(f figures) time.Duration { return f.detect }},
		{"fenced", func(f figures) time.Duration { return f.fenced }},
		{"started", func(f figures) time.Duration { return f.started }},
		{"running", func(f figures) time.Duration { return f.running }},
	} {
		var ds []time.Duration
		for _, f := range all {
			ds = append(ds, m.get(f))
		}
		slices.Sort(ds)
		med, worst := ds[len(ds)/2], ds[len(ds)-1]
		b.ReportMetric(med.Seconds(), m.name+"-median-s")
		b.ReportMetric(worst.Seconds(), m.name+"-worst-s")
		b.Logf("%-8s median %v worst %v over %d rounds", m.name, med.Round(10*time.Millisecond), worst.Round(10*time.Millisecond), len(ds))
	}
}
