package sim

import (
	"flag"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/scenario"
)

// bigScenario: hosts nodes with perHost 1 GiB guests each, running at t=0
// (placed: started by the manager at t=0, as scenario files that name no
// node for their guests have them); node 0 loses power at 30s; the run
// settles 60s later.
func bigScenario(hosts, perHost int, placed bool) *scenario.Scenario {
	sc := &scenario.Scenario{File: "bench", Name: "host failure", Fencing: model.FencingAgent, Shutdown: model.ShutdownMigrate, Settle: 60 * time.Second,
		Nodes: make([]scenario.Node, 0, hosts), Guests: make([]scenario.Guest, 0, hosts*perHost)}
	for i := 0; i < hosts; i++ {
		sc.Nodes = append(sc.Nodes, scenario.Node{Name: fmt.Sprintf("n%04d", i), Memory: int64(perHost*2) * model.GiB, CPUs: 64, PowerOn: true})
	}
	for i := 0; i < hosts*perHost; i++ {
		spec := model.DefaultGuestSpec(fmt.Sprintf("g%06d", i))
		if !placed {
			spec.Node = fmt.Sprintf("n%04d", i%hosts)
		}
		sc.Guests = append(sc.Guests, scenario.Guest{Spec: spec})
	}
	sc.Events = []scenario.Event{{At: 30 * time.Second, Kind: scenario.PowerOff, Node: "n0000", Do: "power off n0000"}}
	for i := 0; i < perHost; i++ {
		sc.Expects = append(sc.Expects, scenario.Expect{Kind: scenario.ExpectGuest, By: true, At: 30*time.Second + 60*time.Second,
			Guest: fmt.Sprintf("g%06d", i*hosts), State: "started", Times: -1})
	}
	return sc
}

// benchSim runs the scenario b.N times and returns the process's CPU time
// (user and system, every thread: the collector's too) over the runs.
func benchSim(b *testing.B, hosts, perHost int, placed bool) time.Duration {
	sc := bigScenario(hosts, perHost, placed)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	defer func() { b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op") }()
	for i := 0; i < b.N; i++ {
		r := Run(sc, Options{NoTimeline: true})
		if r.Failed() > 0 {
			for _, e := range r.Expects {
				if !e.OK {
					b.Fatalf("%s: saw %s", e.Text, e.Seen)
				}
			}
		}
		b.ReportMetric(float64(r.World.Steps()), "steps/op")
	}
	return cpuTime(b) - cpu0
}

// cpuTime is the CPU time this process has used so far: on a shared
// machine the run's CPU time says more than its wall time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSimHostFailure64x8000 is a full simulated run: 64 hosts, 8,000
// guests, one host loses power, its 125 guests are fenced and recovered.
func BenchmarkSimHostFailure64x8000(b *testing.B) { benchSim(b, 64, 125, false) }

// BenchmarkSimHostFailure1000x50000 is the same at 1,000 hosts and 50,000
// guests.
func BenchmarkSimHostFailure1000x50000(b *testing.B) { benchSim(b, 1000, 50, false) }

var scaleFlag = flag.Int("sim.scale", 0, "BenchmarkSimScale: this many hosts only (beyond the scenario limit of 1,000 too)")

// BenchmarkSimScale runs the host-failure scenario at growing sizes (10
// guests per host, up to the scenario limits), with the guests running at
// t=0 (running) and started by the manager at t=0 (placed: a step per
// start result, as many steps as guests): near-linear when ns/guest stays
// about flat from one size to the next (cpu-ns/guest, the process's CPU
// time, is the steadier figure on a busy machine).
func BenchmarkSimScale(b *testing.B) {
	sizes := []int{125, 250, 500, 1000}
	if *scaleFlag > 0 {
		sizes = []int{*scaleFlag}
	}
	for _, placed := range []bool{false, true} {
		for _, hosts := range sizes {
			name := fmt.Sprintf("running/hosts=%d", hosts)
			if placed {
				name = fmt.Sprintf("placed/hosts=%d", hosts)
			}
			b.Run(name, func(b *testing.B) {
				cpu := benchSim(b, hosts, 10, placed)
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*hosts*10), "ns/guest")
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*hosts*10), "cpu-ns/guest")
			})
		}
	}
}
