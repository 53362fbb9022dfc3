package manager

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/placement"
)

// reconcile runs after every event: fencing, restart windows, convergence to
// the desired state, shutdown stops, unfreezing, placement, shutdown
// readiness.
func (st *stepper) reconcile() {
	s := st.s
	now := st.now
	for _, n := range s.Nodes {
		if n.Status != NodeFailed || n.Fence == nil {
			continue
		}
		if s.Config.Fencing == model.FencingWatchdog {
			if !now.Before(n.Fence.DeadlineAt) {
				st.fenced(n, true)
			}
			continue
		}
		if !n.Fence.InFlight && !now.Before(n.Fence.RetryAt) {
			n.Fence.Attempt = st.newID()
			n.Fence.InFlight = true
			st.acts = append(st.acts, Action{Kind: ActFence, Node: n.Name, Op: n.Fence.Attempt})
		}
	}
	for _, g := range st.gs {
		if (g.Restarts > 0 || g.Moves > 0 || len(g.Tried) > 0) && g.Running && g.State == GuestStarted &&
			!g.RunningSince.IsZero() && now.Sub(g.RunningSince) >= g.Spec.RestartWindow {
			g.Restarts, g.Moves, g.Tried = 0, 0, nil
			st.logf("%s ran %s without trouble: restart and move counts cleared", g.Spec.Name, g.Spec.RestartWindow)
		}
		if g.Op != nil {
			continue
		}
		desired := g.Spec.State
		if desired == "" {
			desired = model.DesiredStarted
		}
		n := s.node(g.Node)
		switch {
		case g.Running && g.State == GuestStarted && desired != model.DesiredStarted:
			if s.dependentRuns(g, "") != nil {
				continue // stops run in the reverse of the start order
			}
			st.stop(g, PurposeDesired, "", false)
		case !g.Running && desired != model.DesiredStarted && (g.State == GuestRecovering || g.State == GuestFrozen || g.State == GuestStarted):
			st.settleDesired(g)
		case g.Running && g.State == GuestStarted && n != nil && n.Shutdown != nil && !n.Shutdown.Ready &&
			n.Status == NodeOnline && n.Shutdown.Policy != model.ShutdownMigrate:
			if s.dependentRuns(g, n.Name) != nil {
				continue // stops run in the reverse of the start order
			}
			p := PurposeShutdown
			if n.Shutdown.Policy == model.ShutdownFreeze {
				p = PurposeFreeze
			}
			st.stop(g, p, "", false)
		case g.State == GuestFrozen && n != nil && n.Status == NodeOnline && n.Shutdown == nil && st.depsReady(g):
			id := st.newID()
			g.Op = &Op{ID: id, Kind: OpStart, Node: n.Name, Purpose: PurposeUnfreeze}
			g.State = GuestStarted
			if g.CPUModel == "" {
				g.CPUModel = s.startModel(g)
			}
			st.acts = append(st.acts, Action{Kind: ActStart, Guest: g.Spec.Name, Node: n.Name, Op: id, Msg: "unfreeze", CPUModel: g.CPUModel})
		}
	}
	st.place()
	st.balance()
	for _, n := range s.Nodes {
		if n.Shutdown == nil || n.Shutdown.Ready || n.Status != NodeOnline || !st.empty(n.Name) {
			continue
		}
		n.Shutdown.Ready = true
		st.acts = append(st.acts, Action{Kind: ActShutdownReady, Node: n.Name})
	}
}

func (st *stepper) stop(g *Guest, p Purpose, target string, force bool) {
	if p != PurposePreempt {
		g.PreemptedBy = ""
	}
	id := st.newID()
	g.Op = &Op{ID: id, Kind: OpStop, Node: g.Node, Target: target, Purpose: p, Force: force}
	msg := string(p)
	if target != "" {
		msg += ", to start on " + target
	}
	st.acts = append(st.acts, Action{Kind: ActStop, Guest: g.Spec.Name, Node: g.Node, Op: id, Force: force, Msg: msg})
}

// empty reports whether nothing runs on node and no operation involves it
// (frozen guests do not count).
func (st *stepper) empty(node string) bool {
	for _, g := range st.s.Guests {
		if g.Running && g.Node == node {
			return false
		}
		if op := g.Op; op != nil && (op.Node == node || op.Target == node) {
			return false
		}
	}
	return true
}

type want struct {
	g        *Guest
	purpose  Purpose
	move     bool // a running guest moves (migrate or stop+start)
	reserved bool // its preemption's victims have stopped: it takes the room kept for it
}

// place gathers every guest that needs a node in this step, places them one
// at a time in name order, and issues the operations.
func (st *stepper) place() {
	s := st.s
	if st.calm && !slices.ContainsFunc(st.gs, func(g *Guest) bool { return !s.quiet(g) }) {
		return // quiet guests only: nothing to place (calm.go)
	}
	used := make([]int64, len(s.Nodes))
	cnt := make([]int, len(s.Nodes))
	cpus := make([]int64, len(s.Nodes))
	if st.calm {
		s.countCalm(st.gs, used, cnt, cpus)
	} else {
		s.count(used, cnt, cpus)
	}
	snap := placement.Snapshot{Nodes: make([]placement.Node, len(s.Nodes))}
	for i, n := range s.Nodes {
		snap.Nodes[i] = placement.Node{
			Name: n.Name, Memory: s.nodeMem(n), Used: used[i], Guests: cnt[i],
			Eligible: n.Status == NodeOnline && !n.Maintenance && n.Shutdown == nil && !n.Witness,
			CPUs:     s.nodeCPUs(n), CPUUsed: cpus[i],
		}
	}
	idx := func(name string) int {
		if i, ok := s.nodeIdx[name]; ok {
			return i
		}
		return -1
	}
	// A guest waiting out its restart delay keeps its place on its node (not
	// one that, the delay over, waits for a guest it starts after: that can
	// last, and the room is free for others meanwhile); one for which
	// guests are being preempted has its place where they stop.
	for _, g := range st.gs {
		if g.PreemptOn != "" {
			if i := idx(g.PreemptOn); g.State != GuestRecovering || g.Op != nil || g.Spec.State != model.DesiredStarted || i < 0 || !snap.Nodes[i].Eligible {
				g.PreemptOn, g.PreemptVictims = "", nil
			} else {
				snap.Nodes[i].Used += s.guestMem(g)
				snap.Nodes[i].CPUUsed += s.guestCPUs(g)
				snap.Nodes[i].Guests++
			}
		}
		if g.State == GuestRecovering && g.Need == NeedRestart && g.Op == nil && g.Spec.State == model.DesiredStarted && (st.now.Before(g.RetryAt) || st.s.depsOK(g)) {
			if i := idx(g.Node); i >= 0 {
				snap.Nodes[i].Used += s.guestMem(g)
				snap.Nodes[i].CPUUsed += s.guestCPUs(g)
				snap.Nodes[i].Guests++
			}
		}
	}
	rs := s.ruleSet()
	if rs != nil {
		snap.Where = s.whereFn(rs)
		snap.Waiting = func(name string) (int64, int64) {
			g := s.Guest(name)
			if g == nil || g.Running || g.Op != nil || (g.Spec.State != model.DesiredStarted && g.Spec.State != "") {
				return 0, 0
			}
			return s.guestMem(g), s.guestCPUs(g)
		}
	}
	var reqs []placement.Request
	var wants []want
	for _, g := range st.gs {
		if g.State != GuestRecovering {
			g.Wait = ""
		}
		backoff := st.now.Before(g.MoveRetryAt())
		if !backoff {
			g.MoveFailedAt = time.Time{} // its backoff is over (MoveFails stays)
		}
		if g.Op != nil || (g.Spec.State != model.DesiredStarted && g.Spec.State != "") {
			g.ReturnTo = ""
			continue
		}
		r := placement.NewRequest(g.Spec.Name, s.guestMem(g), s.tiersOf(g))
		r.Priority = g.Spec.Priority
		r.CPUs = s.guestCPUs(g)
		if rs != nil {
			r.Rules = rs.guest[g.Spec.Name]
			r.Unfit = append(r.Unfit, rs.unfit[g.Spec.Name]...)
		}
		if len(g.Spec.Pools) > 0 || (g.Spec.Pinned && g.Node != "") {
			for i, n := range s.Nodes {
				if !s.hasPools(g, n) || (g.Spec.Pinned && g.Node != "" && n.Name != g.Node) {
					r.Unfit = append(r.Unfit, i)
				}
			}
		}
		for _, t := range g.Tried {
			if i := idx(t); i >= 0 {
				r.Tried = append(r.Tried, i) // not tried again in this run of moves
			}
		}
		switch {
		case g.State == GuestRecovering:
			if st.now.Before(g.RetryAt) {
				continue
			}
			// Its restart delay is over: from here it waits for a change
			// (room, a dependency), not for time, and NextTimer must not
			// offer that passed moment again.
			g.RetryAt = time.Time{}
			if !st.depsReady(g) {
				continue
			}
			p := PurposePlace
			if g.PreemptOn != "" {
				if st.preempting(g) {
					continue // it starts once its victims have stopped
				}
				// They have stopped: it starts there (its place was kept);
				// if that node cannot take it after all, it is placed
				// afresh (and may preempt again from the next change).
				r.Prefer, r.Reserved, r.ReservedCPUs = idx(g.PreemptOn), s.guestMem(g), s.guestCPUs(g)
				g.PreemptOn, g.PreemptVictims = "", nil
				if g.Need == NeedMove {
					r.LastFailed = idx(g.Node)
					p = PurposeMove
				}
				reqs = append(reqs, r)
				wants = append(wants, want{g: g, purpose: p, reserved: true})
				continue
			}
			switch g.Need {
			case NeedRestart:
				i := idx(g.Node)
				if i >= 0 && snap.Nodes[i].Eligible {
					r.Prefer, r.PreferOnly, r.Tried, r.Reserved, r.ReservedCPUs = i, true, nil, s.guestMem(g), s.guestCPUs(g)
					p = PurposeRestart
				} else {
					g.Need = NeedPlace
				}
			case NeedNode:
				if i := idx(g.Node); i >= 0 && s.allowed(g, g.Node) {
					r.Prefer = i
				}
			case NeedMove:
				r.LastFailed = idx(g.Node)
				p = PurposeMove
			}
			reqs = append(reqs, r)
			wants = append(wants, want{g: g, purpose: p})
		case g.State == GuestStarted && g.Running:
			n := s.node(g.Node)
			if n == nil {
				continue
			}
			switch {
			case n.Maintenance || (n.Shutdown != nil && n.Shutdown.Policy == model.ShutdownMigrate && n.Status == NodeOnline):
				if backoff {
					st.backoffWait(g)
					continue
				}
				r.Optional = true
				reqs = append(reqs, r)
				wants = append(wants, want{g: g, purpose: PurposeEvacuate, move: true})
			case g.ReturnTo != "":
				if backoff {
					st.backoffWait(g) // ReturnTo is kept: it returns once the backoff is over
					continue
				}
				if i := idx(g.ReturnTo); i >= 0 && g.ReturnTo != g.Node {
					r.Prefer, r.PreferOnly = i, true
					r.Optional = true
					reqs = append(reqs, r)
					wants = append(wants, want{g: g, purpose: PurposeReturn, move: true})
				}
				g.ReturnTo = ""
			case r.Tiers != nil && !g.OperatorPlaced && !(g.FailbackBlocked && g.BlockedSeq == s.UpSeq) && !s.domain(g.Spec.Domain).NoFailback:
				cur := placement.TierOf(r.Tiers, idx(g.Node))
				if cur > 0 {
					if backoff {
						st.backoffWait(g)
						continue
					}
					r.MaxTier = cur
					r.Optional = true
					reqs = append(reqs, r)
					wants = append(wants, want{g: g, purpose: PurposeFailback, move: true})
				}
			}
		default:
			g.ReturnTo = ""
		}
	}
	if len(reqs) == 0 {
		return
	}
	mu := s.newModelUnfit()
	for i := range reqs {
		mu.apply(wants[i].g, &reqs[i])
	}
	planner := placement.NewPlanner(&snap)
	planner.Requests(reqs)
	// Room that preemption stops already in flight will free.
	for _, g := range st.gs {
		if op := g.Op; op != nil && op.Kind == OpStop && op.Purpose == PurposePreempt {
			if i := idx(op.Node); i >= 0 {
				planner.Releasing(i, s.guestMem(g), s.guestCPUs(g), g.Spec.Priority)
			}
		}
	}
	var victims [][]placement.Victim
	taken := map[string]bool{}
	type start struct {
		w      want
		a      placement.Assignment
		target string
	}
	var starts []start
	for _, i := range placement.Order(reqs) {
		w := wants[i]
		g := w.g
		if g.Op != nil {
			continue // preempted earlier in this step: it is being stopped
		}
		a := planner.Place(&reqs[i])
		if a.Node < 0 && s.Config.Preemption && !w.move && !w.reserved && w.purpose != PurposeRestart && g.PreemptOn == "" && !g.Preempted {
			if victims == nil {
				victims = st.victims()
			}
			if pr := planner.Preempt(&reqs[i], victims, taken); pr.Node >= 0 {
				st.preempt(g, s.Nodes[pr.Node].Name, victims[pr.Node], pr.Victims)
				continue
			}
		}
		if a.Node < 0 {
			if g.State == GuestRecovering {
				why, rule := placement.Why(&snap, &reqs[i])
				st.setWait(g, why, rule)
			}
			if w.purpose == PurposeRestart {
				// Its node cannot take it back: place it, preferring that node.
				g.Need = NeedNode
				st.logf("%s cannot restart on %s now; placing it", g.Spec.Name, g.Node)
			}
			if w.purpose == PurposeReturn {
				st.logf("%s stays on %s: %s cannot take it", g.Spec.Name, g.Node, s.Nodes[reqs[i].Prefer].Name)
			}
			continue
		}
		target := s.Nodes[a.Node].Name
		g.PreemptOn, g.PreemptVictims = "", nil
		g.Wait = ""
		taken[g.Spec.Name] = true // it moves or starts: no victim of a later preemption
		if w.move {
			st.move(g, target, w.purpose)
			continue
		}
		starts = append(starts, start{w, a, target})
	}
	// Starts go out once every move of this step is decided: a guest whose
	// dependency is being stopped (moved by stop and start) waits.
	for _, x := range starts {
		w, a, target, g := x.w, x.a, x.target, x.w.g
		if !st.depsReady(g) {
			continue
		}
		if a.ClearedTried {
			g.Tried = []string{g.Node}
			st.logf("%s: every candidate was tried; trying them again except %s", g.Spec.Name, g.Node)
		}
		if w.purpose == PurposeMove {
			g.Moves++
			st.logf("%s moves to %s (move %d of %d)", g.Spec.Name, target, g.Moves, g.Spec.MaxRelocations)
		}
		if target != g.Node {
			g.Restarts = 0
		}
		id := st.newID()
		g.CPUModel = g.Spec.CPUModel // startModel, with the cluster's model computed once a step
		if g.CPUModel == "" {
			g.CPUModel = mu.cluster
		}
		g.Op = &Op{ID: id, Kind: OpStart, Node: target, Purpose: w.purpose}
		g.Node = target
		g.State = GuestStarted
		g.Need = ""
		g.RetryAt = time.Time{}
		st.acts = append(st.acts, Action{Kind: ActStart, Guest: g.Spec.Name, Node: target, Op: id, Msg: string(w.purpose), CPUModel: g.CPUModel})
	}
}

// preempting reports whether a stop of one of g's preemption victims is
// still in flight.
func (st *stepper) preempting(g *Guest) bool {
	for _, name := range g.PreemptVictims {
		if v := st.s.Guest(name); v != nil && v.Op != nil && v.Op.Kind == OpStop && v.Op.Purpose == PurposePreempt {
			return true
		}
	}
	return false
}

// victims lists, per node index, the guests preemption may stop there:
// started, running, with no operation in flight.
func (st *stepper) victims() [][]placement.Victim {
	s := st.s
	out := make([][]placement.Victim, len(s.Nodes))
	// A guest that a guest not running yet starts after is not stopped: it
	// would hold that one back (start order).
	needed := map[string]bool{}
	for _, g := range s.Guests {
		if !g.Running && (g.Spec.State == model.DesiredStarted || g.Spec.State == "") {
			for _, d := range g.Spec.After {
				needed[d] = true
			}
		}
	}
	for _, g := range s.Guests {
		if !g.Running || g.State != GuestStarted || g.Op != nil || needed[g.Spec.Name] {
			continue
		}
		if i, ok := s.nodeIdx[g.Node]; ok {
			out[i] = append(out[i], placement.Victim{Guest: g.Spec.Name, Memory: s.guestMem(g), CPUs: s.guestCPUs(g), Priority: g.Spec.Priority})
		}
	}
	return out
}

// preempt stops the chosen victims on node to make room for g, which starts
// there once they have stopped.
func (st *stepper) preempt(g *Guest, node string, cands []placement.Victim, chosen []int) {
	g.PreemptOn = node
	g.PreemptVictims = nil
	if len(chosen) == 0 {
		// The room comes from guests already being stopped there by an
		// earlier preemption: it waits for them, stopping nothing more.
		var names []string
		for _, v := range st.s.Guests {
			if op := v.Op; op != nil && op.Kind == OpStop && op.Purpose == PurposePreempt && op.Node == node {
				g.PreemptVictims = append(g.PreemptVictims, v.Spec.Name)
				names = append(names, v.Spec.Name)
			}
		}
		st.logf("preemption: %s (priority %d) has no room; it waits for the room that stopping %s frees on %s, stopping nothing more", g.Spec.Name, g.Spec.Priority, strings.Join(names, ", "), node)
		return
	}
	var names []string
	for _, k := range chosen {
		v := st.s.Guest(cands[k].Guest)
		g.PreemptVictims = append(g.PreemptVictims, v.Spec.Name)
		names = append(names, fmt.Sprintf("%s (priority %d)", v.Spec.Name, v.Spec.Priority))
	}
	st.logf("preemption: %s (priority %d) has no room; stopping %s on %s to make room for it", g.Spec.Name, g.Spec.Priority, strings.Join(names, ", "), node)
	for _, name := range g.PreemptVictims {
		v := st.s.Guest(name)
		v.PreemptedBy = g.Spec.Name
		st.stop(v, PurposePreempt, "", false)
	}
}

// depsReady reports whether g's start dependencies are met, recording why it
// waits when they are not.
func (st *stepper) depsReady(g *Guest) bool {
	ok, why := st.s.depsMet(g)
	if !ok {
		st.setWait(g, why, true)
	}
	return ok
}

// Migration backoff: after n migrations of a guest failed in a row, the
// manager starts none of its own (evacuation, return, failback, rebalancing)
// before the last failure plus moveBackoff(n); an operator's migrate goes at
// once. docs/manager.md states the rule.
const moveBackoffFirst = time.Second

// moveBackoff is the wait after n failed migrations in a row: 1 s, doubled
// for each further one, at most 32 s (restartDelay's growth); 0 for n = 0 (a
// state saved before the backoff existed: MoveFailedAt without MoveFails).
func moveBackoff(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	return restartDelay(moveBackoffFirst, n)
}

// MoveRetryAt is the moment from which the manager may migrate g of its own
// accord again after failed migrations; zero when it does not wait.
func (g *Guest) MoveRetryAt() time.Time {
	if g.MoveFailedAt.IsZero() {
		return time.Time{}
	}
	return g.MoveFailedAt.Add(moveBackoff(g.MoveFails))
}

// backoffWait says, in g's Wait, that a move of g waits out its backoff.
func (st *stepper) backoffWait(g *Guest) {
	what := "its last migration failed"
	if g.MoveFails > 1 {
		what = fmt.Sprintf("its last %d migrations failed", g.MoveFails)
	}
	at := g.MoveRetryAt()
	st.setWait(g, fmt.Sprintf("%s; next try in %s (at %s UTC)", what, at.Sub(st.now), at.UTC().Format(time.TimeOnly)), false)
}

// move moves a running guest: live if migratable, else stop then start.
func (st *stepper) move(g *Guest, target string, p Purpose) {
	if g.Spec.Migratable {
		id := st.newID()
		g.Op = &Op{ID: id, Kind: OpMigrate, Node: g.Node, Target: target, Purpose: p, TargetBoot: st.s.node(target).BootID}
		st.acts = append(st.acts, Action{Kind: ActMigrate, Guest: g.Spec.Name, Node: g.Node, Target: target, Op: id, Msg: string(p), CPUModel: st.s.CPUModel(g)})
		return
	}
	st.stop(g, p, target, false)
}
