package manager

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/placement"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// bigState builds a cluster of hosts nodes with perHost 1 GiB guests on each,
// all running, and makes node 0 fail and its fence attempt be in flight.
// It returns the state and the fence result that triggers recovery.
func bigState(tb testing.TB, hosts, perHost int) (*State, FenceResult) {
	s := New(Config{})
	var up []NodeReport
	for i := 0; i < hosts; i++ {
		name := fmt.Sprintf("n%04d", i)
		if err := s.AddNode(name, int64(perHost*2)*model.GiB, 64); err != nil {
			tb.Fatal(err)
		}
		up = append(up, NodeReport{Name: name, BootID: "1"})
	}
	for i := 0; i < hosts*perHost; i++ {
		spec := model.DefaultGuestSpec(fmt.Sprintf("g%06d", i))
		spec.Node = fmt.Sprintf("n%04d", i%hosts)
		if err := s.AddGuest(spec, true); err != nil {
			tb.Fatal(err)
		}
	}
	for i := range up {
		for j := i; j < hosts*perHost; j += hosts {
			up[i].Running = append(up[i].Running, fmt.Sprintf("g%06d", j))
		}
	}
	s.Step(t0, Sync{Nodes: up})
	s.Step(t0.Add(time.Second), NodeDown{Node: "n0000"})
	n := s.Node("n0000")
	if n.Fence == nil || !n.Fence.InFlight {
		tb.Fatalf("n0000 is not being fenced: %+v", n)
	}
	return s, FenceResult{Node: "n0000", Attempt: n.Fence.Attempt, OK: true}
}

func benchRecovery(b *testing.B, hosts, perHost int) {
	s, ev := bigState(b, hosts, perHost)
	data, err := json.Marshal(s)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		st, err := Restore(data)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		acts := st.Step(t0.Add(3*time.Second), ev)
		starts := 0
		for _, a := range acts {
			if a.Kind == ActStart {
				starts++
			}
		}
		if starts != perHost {
			b.Fatalf("%d starts, want %d", starts, perHost)
		}
	}
}

// BenchmarkRecoveryStep64x8000 is the manager step that plans the recovery
// of one failed host's 125 guests in a 64-host, 8,000-guest cluster (target:
// under 50 ms on one core).
func BenchmarkRecoveryStep64x8000(b *testing.B) { benchRecovery(b, 64, 125) }

// BenchmarkRecoveryStep1000x50000 is the same at 1,000 hosts and 50,000
// guests (50 guests on the failed host).
func BenchmarkRecoveryStep1000x50000(b *testing.B) { benchRecovery(b, 1000, 50) }

// BenchmarkPlacementPlan125on64 is placement alone: 125 guests over 64 nodes.
func BenchmarkPlacementPlan125on64(b *testing.B) {
	snap := placement.Snapshot{}
	for i := 0; i < 64; i++ {
		snap.Nodes = append(snap.Nodes, placement.Node{Name: fmt.Sprintf("n%02d", i), Memory: 256 * model.GiB, Used: int64(i%7) * model.GiB * 10, Guests: 125, Eligible: i != 0})
	}
	var reqs []placement.Request
	for i := 0; i < 125; i++ {
		reqs = append(reqs, placement.NewRequest(fmt.Sprintf("g%03d", i), model.GiB, nil))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		placement.Plan(&snap, reqs)
	}
}

// BenchmarkStateJSON is persisting and restoring the 64x8000 state.
func BenchmarkStateJSON(b *testing.B) {
	s, _ := bigState(b, 64, 125)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		data, err := json.Marshal(s)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Restore(data); err != nil {
			b.Fatal(err)
		}
	}
}

// withRules adds every policy to a bigState: hard apart pairs (guests on
// different hosts), a soft together and a host rule per 50 guests, a start
// dependency for every 10th guest, admission control (reserve hosts 1), and
// CPU in placement (vCPUs, reserves, overhead, CPU models).
func withRules(tb testing.TB, s *State, hosts, perHost int) {
	var rules []model.Rule
	n := hosts * perHost
	for i := 0; i+1 < n; i += 2 {
		rules = append(rules, model.Rule{Name: fmt.Sprintf("apart%06d", i), Kind: model.AffinityApart, Guests: []string{fmt.Sprintf("g%06d", i), fmt.Sprintf("g%06d", i+1)}})
	}
	for i := 0; i+2 < n; i += 50 {
		rules = append(rules, model.Rule{Name: fmt.Sprintf("near%06d", i), Kind: model.AffinityTogether, Soft: true, Guests: []string{fmt.Sprintf("g%06d", i), fmt.Sprintf("g%06d", i+2)}})
		rules = append(rules, model.Rule{Name: fmt.Sprintf("host%06d", i), Kind: model.AffinityOff, Guests: []string{fmt.Sprintf("g%06d", i+1)}, Hosts: []string{"n0001"}})
	}
	if err := s.SetRules(rules); err != nil {
		tb.Fatal(err)
	}
	for i := 10; i < n; i += 10 {
		spec := s.Guest(fmt.Sprintf("g%06d", i)).Spec
		spec.After = []string{fmt.Sprintf("g%06d", i-1)}
		if err := s.UpdateGuestSpec(spec); err != nil {
			tb.Fatal(err)
		}
	}
	s.Config.Reserve = model.Reserve{Hosts: 1}
	// CPU in placement: vCPUs counted (4 per host CPU, 1 reserved), host
	// memory reserve and guest overhead, and the CPU model: half the hosts
	// offer x86-64-v3, the others v2, so the cluster's model is v2 and
	// every tenth guest asks for v3 (half the hosts are no candidate).
	s.Config.Capacity = model.Capacity{CPUOvercommit: 4, CPUReserve: 1, MemoryReserve: model.GiB, GuestOverhead: 64 * model.MiB, CPUModel: model.CPUModelAuto}
	for i, nd := range s.Nodes {
		nd.CPUModels = model.CPULevels[:2+(i+1)%2]
	}
	for i := 5; i < n; i += 10 {
		g := s.Guest(fmt.Sprintf("g%06d", i))
		if g.Node != "n0000" && slices.Contains(s.Node(g.Node).CPUModels, "x86-64-v3") {
			spec := g.Spec
			spec.CPUModel = "x86-64-v3"
			if err := s.UpdateGuestSpec(spec); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

func benchRecoveryRules(b *testing.B, hosts, perHost int) {
	s, ev := bigState(b, hosts, perHost)
	withRules(b, s, hosts, perHost)
	data, err := json.Marshal(s)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		st, err := Restore(data)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		acts := st.Step(t0.Add(3*time.Second), ev)
		starts := 0
		for _, a := range acts {
			if a.Kind == ActStart {
				starts++
			}
		}
		if starts != perHost {
			b.Fatalf("%d starts, want %d", starts, perHost)
		}
	}
}

// BenchmarkRecoveryStepRules64x8000 is BenchmarkRecoveryStep64x8000 with
// every placement policy in use (target: under 50 ms).
func BenchmarkRecoveryStepRules64x8000(b *testing.B) { benchRecoveryRules(b, 64, 125) }

// BenchmarkRecoveryStepRules1000x50000: the same at 1,000 hosts and 50,000
// guests (target: under 1 s).
func BenchmarkRecoveryStepRules1000x50000(b *testing.B) { benchRecoveryRules(b, 1000, 50) }
