package manager

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/placement"
)

// Capacity (cluster policy Config.Capacity; all off when zero): what a host
// offers its guests and what a guest takes (docs/manager.md, CPU and host
// reserves).
//
//   - a host's memory for guests is its memory minus MemoryReserve;
//   - a guest counts its memory plus GuestOverhead wherever it counts;
//   - with CPUOvercommit, a host's vCPU capacity is cpus × CPUOvercommit −
//     CPUReserve and a guest counts its cpus: placement takes a host only
//     when both fit;
//   - a guest runs with a CPU model (its own, else the cluster's); a host
//     that reports the models it offers and lacks that one is no candidate.

// guestMem is the memory g counts on a host.
func (s *State) guestMem(g *Guest) int64 { return g.Spec.Memory + s.Config.Capacity.GuestOverhead }

// guestCPUs is what g counts of a host's vCPU capacity, in thousandths (0
// when vCPUs are not counted).
func (s *State) guestCPUs(g *Guest) int64 {
	if !s.Config.Capacity.CPUsOn() {
		return 0
	}
	return int64(max(g.Spec.CPUs, 0)) * 1000
}

// nodeMem is the memory n offers its guests.
func (s *State) nodeMem(n *Node) int64 { return max(n.Memory-s.Config.Capacity.MemoryReserve, 0) }

// nodeCPUs is n's vCPU capacity in thousandths (0 when not counted).
func (s *State) nodeCPUs(n *Node) int64 {
	if !s.Config.Capacity.CPUsOn() {
		return 0
	}
	return s.Config.Capacity.CPUCapacity(n.CPUs)
}

// ClusterCPUModel is the cluster's CPU model now: the configured name, or
// with auto (the default) the newest x86-64 level that every host (not a
// witness) that reported its models offers, as last reported, whether it is
// up or not; "" when no host reported any (no model: no check, the
// drivers' default).
func (s *State) ClusterCPUModel() string {
	switch m := s.Config.Capacity.CPUModel; m {
	case "", model.CPUModelAuto:
		var lists [][]string
		for _, n := range s.Nodes {
			if !n.Witness {
				lists = append(lists, n.CPUModels)
			}
		}
		return model.CommonCPULevel(lists)
	default:
		return m
	}
}

// CPUModel is the CPU model guest g runs with (the one it was started with
// while it runs or is being moved) or would be started with now (its own,
// else the cluster's); "" or host: no model to check.
func (s *State) CPUModel(g *Guest) string {
	if g.CPUModel != "" && (g.Running || g.Op != nil) {
		return g.CPUModel
	}
	return s.startModel(g)
}

// startModel is the CPU model g is started with now: its own, else the
// cluster's.
func (s *State) startModel(g *Guest) string {
	if g.Spec.CPUModel != "" {
		return g.Spec.CPUModel
	}
	return s.ClusterCPUModel()
}

// modelUnfit excludes from requests the nodes that cannot offer their
// guest's CPU model; the cluster's model and each model's nodes are
// computed once per step.
type modelUnfit struct {
	s       *State
	cluster string
	nodes   map[string][]int
}

func (s *State) newModelUnfit() *modelUnfit {
	return &modelUnfit{s: s, cluster: s.ClusterCPUModel(), nodes: map[string][]int{}}
}

func (mu *modelUnfit) apply(g *Guest, r *placement.Request) {
	m := g.Spec.CPUModel
	if g.CPUModel != "" && (g.Running || g.Op != nil) {
		m = g.CPUModel
	} else if m == "" {
		m = mu.cluster
	}
	if m == "" || m == model.CPUModelHost {
		return
	}
	bad, ok := mu.nodes[m]
	if !ok {
		for i, n := range mu.s.Nodes {
			if !offers(n, m) {
				bad = append(bad, i)
			}
		}
		bad = slices.Clip(bad)
		mu.nodes[m] = bad
	}
	if len(bad) > 0 {
		r.NoModel = bad
		r.Unfit = append(slices.Clip(r.Unfit), bad...)
		r.CPUModel = m
	}
}

// offers reports whether node n can run a guest with CPU model m: no model
// (or host) to check, a host that reports no models (unknown), or one that
// lists m.
func offers(n *Node, m string) bool {
	return m == "" || m == model.CPUModelHost || len(n.CPUModels) == 0 || slices.Contains(n.CPUModels, m)
}

// ErrCPUModel and ErrNoCPU refuse an operator's move to a host that cannot
// offer the guest's CPU model, or has not enough free vCPUs.
var (
	ErrCPUModel = fmt.Errorf("node cannot offer the guest's CPU model")
	ErrNoCPU    = fmt.Errorf("not enough free vCPUs on node")
)

// fmtCPU writes thousandths of a vCPU as a number of vCPUs.
func fmtCPU(m int64) string {
	if m%1000 == 0 {
		return fmt.Sprintf("%d", m/1000)
	}
	return strconv.FormatFloat(float64(m)/1000, 'f', -1, 64)
}

// CPUUsage returns the vCPUs (thousandths) counted on each node and each
// node's vCPU capacity (thousandths), by name; nil maps when vCPUs are not
// counted.
func (s *State) CPUUsage() (used, capacity map[string]int64) {
	if !s.Config.Capacity.CPUsOn() {
		return nil, nil
	}
	u := make([]int64, len(s.Nodes))
	s.count(make([]int64, len(s.Nodes)), make([]int, len(s.Nodes)), u)
	used, capacity = map[string]int64{}, map[string]int64{}
	for i, n := range s.Nodes {
		used[n.Name] = u[i]
		capacity[n.Name] = s.nodeCPUs(n)
	}
	return used, capacity
}
