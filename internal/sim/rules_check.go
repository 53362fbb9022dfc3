package sim

import (
	"slices"

	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
)

// The checks of the placement policies, after every manager step
// (invariants 5 to 7 of docs/scenarios.md). They read the manager's view
// right after the step: they judge its decisions.

// preStep is what the checker notes before a step.
type preStep struct {
	start string // guest of an operator start command that is not protected yet
}

func (w *World) beforeStep(ev manager.Event) preStep {
	var p preStep
	if c, ok := ev.(manager.Command); ok && c.Kind == manager.CmdStart && w.sc.Reserve.On() {
		if g := w.mgr.Guest(c.Guest); g != nil && !g.Protected() {
			p.start = c.Guest
		}
	}
	return p
}

// counted returns the nodes a guest counts on in the manager's view:
// running (or frozen) on its node, starting there, or arriving by migration.
func counted(g *manager.Guest) []string {
	var out []string
	add := func(n string) {
		if n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if g.Running || g.State == manager.GuestFrozen {
		add(g.Node)
	} else if g.Op != nil && g.Op.Kind == manager.OpStart {
		add(g.Op.Node)
	}
	if g.Op != nil && g.Op.Target != "" {
		add(g.Op.Target)
	}
	return out
}

func (w *World) checkDecisions(pre preStep, acts []manager.Action) {
	rejected := false
	for _, a := range acts {
		switch a.Kind {
		case manager.ActReject:
			rejected = true
		case manager.ActStart, manager.ActMigrate:
			target := a.Node
			if a.Kind == manager.ActMigrate {
				target = a.Target
			}
			if a.Msg != "operator" && a.Msg != "unfreeze" {
				w.checkHardRules(a.Guest, target)
			}
			if a.Kind == manager.ActStart {
				w.checkDeps(a.Guest)
			}
		}
	}
	if pre.start != "" && !rejected {
		w.checkAdmission(pre.start)
	}
}

// checkHardRules: invariant 5, a start or migration the manager decided
// keeps every hard affinity rule. A frozen guest's start on its node is not
// a choice (only an operator's relocate can have changed that node).
func (w *World) checkHardRules(guest, target string) {
	for _, r := range w.sc.Rules {
		if r.Soft || !slices.Contains(r.Guests, guest) {
			continue
		}
		switch r.Kind {
		case model.AffinityOn, model.AffinityOff:
			if slices.Contains(r.Hosts, target) != (r.Kind == model.AffinityOn) {
				w.violate("5"+r.Name+guest+target, "invariant 5: the manager put %s on %s, breaking hard rule %s (%s %v)", guest, target, r.Name, r.Kind, r.Hosts)
			}
		case model.AffinityApart:
			for _, o := range r.Guests {
				if o != guest && slices.Contains(counted(w.mgr.Guest(o)), target) {
					w.violate("5"+r.Name+guest+target, "invariant 5: the manager put %s on %s, where %s is, breaking hard rule %s (apart)", guest, target, o, r.Name)
				}
			}
		case model.AffinityTogether:
			for _, o := range r.Guests {
				if c := counted(w.mgr.Guest(o)); o != guest && len(c) > 0 && !slices.Contains(c, target) {
					w.violate("5"+r.Name+guest+target, "invariant 5: the manager put %s on %s while %s is on %v, breaking hard rule %s (together)", guest, target, o, c, r.Name)
				}
			}
		}
	}
}

// checkDeps: invariant 6, a guest is started only when every guest it
// starts after is known to run: its start (or arrival) was reported and no
// stop, crash or node failure since (the manager's view right after the
// step; a node whose lease outlived a quorum loss is believed as it was last
// reported), or it was stopped or disabled by the operator.
func (w *World) checkDeps(guest string) {
	g := w.mgr.Guest(guest)
	for _, d := range g.Spec.After {
		dg := w.mgr.Guest(d)
		if dg.Spec.State != model.DesiredStarted {
			continue
		}
		if !dg.Running || dg.State != manager.GuestStarted || (dg.Op != nil && dg.Op.Kind == manager.OpStop) {
			w.violate("6"+guest+d+fmtT(w.now), "invariant 6: %s is started while %s, which it starts after, is %s (running %v)", guest, d, dg.State, dg.Running)
		}
	}
}

// checkAdmission: invariant 7, an operator start that admission control
// accepted leaves the protected guests' memory within the capacity minus the
// reserve, computed here from the nodes' memory.
func (w *World) checkAdmission(guest string) {
	c := w.sc.Capacity
	var sizes, cpuSizes []int64
	for _, n := range w.mgr.Nodes {
		if n.Status == manager.NodeOnline && !n.Maintenance && n.Shutdown == nil && !n.Witness {
			sizes = append(sizes, n.Memory-c.MemoryReserve)
			if c.CPUsOn() {
				cpuSizes = append(cpuSizes, c.CPUCapacity(n.CPUs))
			}
		}
	}
	capacity, reserved := w.reserved(sizes)
	cpuCapacity, cpuReserved := w.reserved(cpuSizes)
	var protected, cpus int64
	for _, g := range w.mgr.Guests {
		desired := g.Spec.State == model.DesiredStarted
		if g.Running || (desired && g.State != manager.GuestFailed && g.State != manager.GuestStopped && g.State != manager.GuestDisabled) {
			protected += g.Spec.Memory + c.GuestOverhead
			cpus += int64(g.Spec.CPUs) * 1000
		}
	}
	if protected > capacity-reserved {
		w.violate("7"+guest+fmtT(w.now), "invariant 7: start %s was admitted but protected guests need %d bytes, more than capacity %d minus reserve %d", guest, protected, capacity, reserved)
	}
	if c.CPUsOn() && cpus > cpuCapacity-cpuReserved {
		w.violate("7c"+guest+fmtT(w.now), "invariant 7: start %s was admitted but protected guests need %d thousandths of a vCPU, more than capacity %d minus reserve %d", guest, cpus, cpuCapacity, cpuReserved)
	}
}

// reserved returns the total of the hosts' sizes and the part the
// scenario's reserve keeps: the largest N, or P% rounded up.
func (w *World) reserved(sizes []int64) (total, kept int64) {
	for _, v := range sizes {
		total += v
	}
	if k := w.sc.Reserve.Hosts; k > 0 {
		slices.Sort(sizes)
		slices.Reverse(sizes)
		for i := 0; i < k && i < len(sizes); i++ {
			kept += sizes[i]
		}
	} else {
		kept = (total*int64(w.sc.Reserve.Percent) + 99) / 100
	}
	return total, kept
}
