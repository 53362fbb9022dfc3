package sim

import (
	"fmt"

	"github.com/haven-ha/haven/internal/manager"
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
	var frozen map[string]int64
	for _, g := range w.mgr.Guests {
		switch g.State {
		case manager.GuestDisabled:
			if w.live[g.Spec.Name] > 0 {
				w.violate("3"+g.Spec.Name, "invariant 3: %s is disabled but runs", g.Spec.Name)
			}
		case manager.GuestFrozen:
			if frozen == nil {
				frozen = map[string]int64{}
			}
			frozen[g.Node] += g.Spec.Memory
		}
	}
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
