package sim

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
)

func (w *World) violate(key, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if w.seenViol == nil {
		w.seenViol = map[string]bool{}
	}
	if w.seenViol[key] {
		return
	}
	w.seenViol[key] = true
	w.Violations = append(w.Violations, fmt.Sprintf("at %s: %s", fmtT(w.now), msg))
	w.logf("checker", "VIOLATION %s", msg)
}

// checkCopies: invariant 1, when a copy appears.
func (w *World) checkCopies(g string) {
	if w.live[g] > 1 {
		var where []string
		for _, n := range w.nodes {
			if v := n.vms[g]; v != nil && v.state != vmIncoming {
				where = append(where, n.name)
			}
		}
		w.violate("1"+g, "invariant 1: %s runs on %d nodes at once: %v", g, w.live[g], where)
	}
}

// checkStart: invariant 2, when a guest is started on n.
func (w *World) checkStart(g string, n *simNode) {
	rec, ok := w.unclean[g]
	if !ok || rec.node == n.name {
		return
	}
	src := w.byName[rec.node]
	if src.epoch == rec.epoch && w.now < rec.safeAt {
		w.violate("2"+g, "invariant 2: %s is started on %s but %s, where it ran until %s lost power at %s, has not been fenced", g, n.name, rec.node, rec.node, fmtT(rec.at))
	}
}

// check runs the invariants that hold at every step.
func (w *World) check() {
	var frozen, frozenCPUs map[string]int64
	frozenN := map[string]int{}
	w.mgr.Unquiet(func(g *manager.Guest) { // a quiet guest is started
		switch g.State {
		case manager.GuestDisabled:
			if w.live[g.Spec.Name] > 0 {
				w.violate("3"+g.Spec.Name, "invariant 3: %s is disabled but runs", g.Spec.Name)
			}
		case manager.GuestFrozen:
			if frozen == nil {
				frozen, frozenCPUs = map[string]int64{}, map[string]int64{}
			}
			frozen[g.Node] += g.Spec.Memory
			frozenCPUs[g.Node] += int64(g.Spec.CPUs)
			frozenN[g.Node]++
		}
	})
	for _, n := range w.nodes {
		if n.witness && len(n.vms) > 0 {
			w.violate("w"+n.name, "witness %s runs guests", n.name)
		}
		if n.power != powerOn && len(n.vms) > 0 {
			w.violate("3"+n.name, "invariant 3: guests run on %s, which is powered off", n.name)
		}
		if u := n.used + frozen[n.name]; u > n.memory {
			w.violate("4"+n.name, "invariant 4: guests on %s use %d bytes, more than its %d", n.name, u, n.memory)
		}
		w.checkCapacity(n, frozen[n.name], frozenCPUs[n.name], frozenN[n.name])
	}
}

// checkCapacity: invariant 8, with a host reserve, guest overhead or vCPUs
// counted (Haven's capacity keys), the guests on a host (as in invariant 4)
// fit what it offers them: their memory plus the overhead of each at most
// its memory minus memory_reserve, and their vCPUs at most cpus ×
// cpu_overcommit − cpu_reserve. Computed from the copies on the simulated
// hypervisor.
func (w *World) checkCapacity(n *simNode, frozenMem, frozenCPUs int64, frozenN int) {
	c := w.sc.Capacity
	if n.witness || (c.MemoryReserve == 0 && c.GuestOverhead == 0 && !c.CPUsOn()) {
		return
	}
	copies := len(n.vms) + frozenN
	if u := n.used + frozenMem + int64(copies)*c.GuestOverhead; copies > 0 && u > n.memory-c.MemoryReserve {
		w.violate("8m"+n.name, "invariant 8: guests on %s need %d bytes with their overhead, more than its %d minus the %d reserved for the host", n.name, u, n.memory, c.MemoryReserve)
	}
	if !c.CPUsOn() {
		return
	}
	cpus := frozenCPUs
	for g := range n.vms {
		cpus += int64(w.guests[g].spec.CPUs)
	}
	if capa := c.CPUCapacity(n.cpus); cpus*1000 > capa {
		w.violate("8c"+n.name, "invariant 8: guests on %s have %d vCPUs, more than its capacity %s (cpus × cpu_overcommit − cpu_reserve)", n.name, cpus, strconv.FormatFloat(float64(capa)/1000, 'f', -1, 64))
	}
}

// checkCPUModel: invariant 9, a guest is started or migrated only onto a
// host that offers the CPU model it runs with (its agent lists it, or
// reports none).
func (w *World) checkCPUModel(a manager.Action) {
	target := a.Node
	if a.Kind == manager.ActMigrate {
		target = a.Target
	}
	n := w.byName[target]
	if n == nil || a.CPUModel == "" || a.CPUModel == model.CPUModelHost || len(n.cpuModels) == 0 {
		return
	}
	if !slices.Contains(n.cpuModels, a.CPUModel) {
		w.violate("9"+a.Guest+fmtT(w.now), "invariant 9: %s is sent to %s with CPU model %s, which %s does not offer (%s)", a.Guest, n.name, a.CPUModel, n.name, strings.Join(n.cpuModels, ", "))
	}
}

// checkPreempt: a preemption stop happens only with preemption on, for a
// guest of strictly higher priority than the one stopped (SCENARIOS.md,
// Preemption).
func (w *World) checkPreempt(a manager.Action) {
	g := w.mgr.Guest(a.Guest)
	if g == nil || g.Op == nil || g.Op.ID != a.Op || g.Op.Purpose != manager.PurposePreempt {
		return
	}
	if !w.mgr.Config.Preemption {
		w.violate("p"+a.Guest, "%s is preempted although preemption is off", a.Guest)
		return
	}
	by := w.mgr.Guest(g.PreemptedBy)
	if by == nil || by.Spec.Priority <= g.Spec.Priority {
		w.violate("p"+a.Guest, "%s (priority %d) is preempted for %q, which does not have a higher priority", a.Guest, g.Spec.Priority, g.PreemptedBy)
	}
}
