package manager

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/model"
)

// stepper carries one step's time and output.
type stepper struct {
	s     *State
	now   time.Time
	gs    []*Guest // the guests reconcile visits: all, or those not quiet (calm)
	calm  bool     // gs are not all guests: calm counts the others
	acts  []Action
	quiet bool // nodeDown logs nothing (rebooted said it)
}

func (st *stepper) logf(format string, a ...any) {
	st.acts = append(st.acts, Action{Kind: ActLog, Msg: fmt.Sprintf(format, a...)})
}

func (st *stepper) newID() uint64 {
	id := st.s.NextID
	st.s.NextID++
	return id
}

// Step applies one event at time now, then reconciles: it fences failed
// nodes, places guests that need a node, evacuates, fails back, and returns
// the actions for the caller to carry out, in order. The state is changed in
// place (it is the new view). Step ends with ActPersist: the caller saves the
// state before executing the other actions' effects it cannot undo.
//
// A Command that Validate rejects yields an ActReject and changes nothing.
func (s *State) Step(now time.Time, ev Event) []Action {
	gs := s.calmFor(ev)
	if gs == nil || !VerifyCalm {
		return s.stepWith(now, ev, gs)
	}
	before, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	acts := s.stepWith(now, ev, gs)
	s.verifyCalm(before, now, ev, acts)
	return acts
}

// stepWith is Step visiting the guests gs (nil: every guest; see calm).
func (s *State) stepWith(now time.Time, ev Event, gs []*Guest) []Action {
	st := &stepper{s: s, now: now, gs: gs, calm: gs != nil}
	if gs == nil {
		st.gs = s.Guests
	}
	switch e := ev.(type) {
	case Tick:
	case Sync:
		st.sync(e)
	case NodeUp:
		st.nodeUp(e.NodeReport, true)
	case NodeDown:
		st.nodeDown(e.Node)
	case NodeLeft:
		st.nodeLeft(e.Node)
	case NodeShutdown:
		st.nodeShutdown(e)
	case Inventory:
		st.inventory(map[string][]string{e.Node: e.Running}, nil)
	case GuestResult:
		st.result(e)
	case GuestCrashed:
		st.crashed(e)
	case FenceResult:
		st.fenceResult(e)
	case Command:
		st.command(e)
	default:
		panic(fmt.Sprintf("manager: unknown event %T", ev))
	}
	st.reconcile()
	st.reportViolations()
	st.reportAdmission()
	s.checkInvariants(st.gs)
	s.remember(gs)
	st.acts = append(st.acts, Action{Kind: ActPersist})
	return st.acts
}

func (st *stepper) sync(e Sync) {
	up := make(map[string]NodeReport, len(e.Nodes))
	for _, r := range e.Nodes {
		up[r.Name] = r
	}
	inv := make(map[string][]string, len(e.Nodes))
	fenced := map[string][]string{}
	for _, n := range st.s.Nodes {
		r, ok := up[n.Name]
		switch {
		case ok && n.Status == NodeOnline && r.BootID != "" && n.BootID != "" && r.BootID != n.BootID:
			// It rebooted while no manager watched: it failed and is back.
			st.rebooted(n.Name)
			st.nodeUp(r, false)
		case ok && n.Status != NodeOnline:
			st.nodeUp(r, false)
		case ok:
			n.Witness = r.Witness
		case n.Status == NodeOnline || (n.Status == NodeOffline && st.runsGuests(n.Name)):
			// Down, or never seen up while guests are recorded running on
			// it: they must be fenced before they run anywhere else.
			st.nodeDown(n.Name)
		}
		if ok && !r.Stale && n.Status == NodeOnline {
			inv[n.Name] = r.Running
			fenced[n.Name] = r.SelfFenced
		}
	}
	st.inventory(inv, fenced)
}

func (st *stepper) nodeUp(r NodeReport, withInventory bool) {
	n := st.s.node(r.Name)
	if n == nil {
		st.logf("node %s is not configured; ignoring it", r.Name)
		return
	}
	if r.Memory > 0 {
		n.Memory = r.Memory
	}
	if r.CPUs > 0 {
		n.CPUs = r.CPUs
	}
	if r.CPUModels != nil {
		n.CPUModels = r.CPUModels
	}
	n.Witness = r.Witness
	if n.Status == NodeOnline && r.BootID != "" && n.BootID != "" && r.BootID != n.BootID {
		st.rebooted(n.Name) // a new boot: the old incarnation failed
	}
	if n.Status == NodeFailed && n.Fence != nil && n.Fence.InFlight {
		rc := r
		n.Fence.Rejoin = &rc
		st.logf("node %s is back while it is being fenced; it counts as online only if that fence fails", n.Name)
		return
	}
	prev := n.Status
	n.Status = NodeOnline
	n.DownAt = time.Time{}
	running := map[string]bool{}
	for _, g := range r.Running {
		running[g] = true
	}
	if prev == NodeFailed {
		if r.Stale {
			// Its inventory is unknown: it may still run its guests.
			n.Status = NodeFailed
			return
		}
		// Its agent's inventory says what survived: the rest is gone.
		if n.BootID != "" && r.BootID != "" && n.BootID != r.BootID {
			st.logf("node %s is back with a new boot before it was fenced; no fence needed: the guests of its old boot died with it and are recovered", n.Name)
		} else {
			st.logf("node %s is back before it was fenced; no fence needed: the guests it still runs stay there", n.Name)
		}
		n.Fence = nil
		for _, g := range st.s.Guests {
			if g.State != GuestFencing || (g.Node != n.Name && g.AlsoOn != n.Name) {
				continue
			}
			if running[g.Spec.Name] {
				g.State = GuestStarted // still running there; a stop follows if it should not run
				g.Running = true
				g.Node = n.Name
				g.AlsoOn = ""
				continue
			}
			if g.AlsoOn == n.Name {
				g.AlsoOn = ""
			}
			if st.awaitsFence(g) {
				continue // the other node that may hold it is not fenced yet
			}
			st.afterFence(g)
		}
	} else if prev != NodeOnline {
		st.logf("node %s is online", n.Name)
	}
	n.BootID = r.BootID
	if !r.Stale && withInventory {
		st.inventory(map[string][]string{n.Name: r.Running}, map[string][]string{n.Name: r.SelfFenced})
	}
	st.s.UpSeq++ // failed failbacks may be tried again
	if sd := n.Shutdown; sd != nil && prev != NodeOnline {
		n.Shutdown = nil
		if sd.Policy == model.ShutdownMigrate && !n.Maintenance {
			// In maintenance, its guests come back when it ends.
			st.markReturns(n.Name)
		}
	}
}

// markReturns asks every guest that the maintenance or shutdown of node
// moved away to come back, once.
func (st *stepper) markReturns(node string) {
	for _, g := range st.s.Guests {
		if g.EvacuatedFrom == node {
			g.EvacuatedFrom = ""
			if g.Running && !g.OperatorPlaced {
				g.ReturnTo = node
			}
		}
	}
}

// runsGuests reports whether a guest is recorded running or starting on node.
func (st *stepper) runsGuests(node string) bool {
	for _, g := range st.s.Guests {
		if (g.Running && g.Node == node) || (g.Op != nil && g.Op.Kind == OpStart && g.Op.Node == node) {
			return true
		}
	}
	return false
}

// rebooted: node reports a new boot while the manager had it online; its
// old boot failed (handled as a node failure, logged as such) and the new
// one is back at once.
func (st *stepper) rebooted(name string) {
	st.logf("node %s reports a new boot: its old boot failed", name)
	st.quiet = true
	st.nodeDown(name)
	st.quiet = false
}

func (st *stepper) nodeDown(name string) {
	n := st.s.node(name)
	if n == nil || (n.Status != NodeOnline && n.Status != NodeOffline) {
		return
	}
	n.Status = NodeOffline
	n.DownAt = st.now
	n.Shutdown = nil
	needFence := false
	for _, g := range st.s.Guests {
		if g.ReturnTo == name {
			g.ReturnTo = ""
		}
		if g.EvacuatedFrom == name && !n.Maintenance {
			// Its maintenance (still on) brings it back when it ends.
			g.EvacuatedFrom = ""
		}
		op := g.Op
		switch {
		case g.Node == name && g.Running:
			// Running there (incl. a stop or the source of a migration).
			if op != nil && op.Kind == OpMigrate && op.Target != "" {
				// It may have resumed on the target already, with the
				// result lost with this node: recovered only once the
				// target is fenced too, or reports it running or gone.
				g.AlsoOn = op.Target
				st.alsoFence(op.Target)
			}
			g.State = GuestFencing
			g.Op = nil
			needFence = true
		case op != nil && op.Kind == OpMigrate && op.Target == name:
			// Arriving there by live migration: it may run there now, so
			// the node is fenced like one running it. The source's result
			// still decides where it runs if the source stays up.
			g.AlsoOn = name
			needFence = true
		case g.AlsoOn == name && g.State == GuestFencing:
			needFence = true
		case op != nil && op.Kind == OpStart && op.Node == name:
			g.State = GuestFencing
			g.Node = name
			g.Op = nil
			needFence = true
		case op != nil && op.Kind == OpStop && op.Target == name:
			// A relocation towards the failed node: start elsewhere after the stop.
			op.Target = ""
			op.Purpose = PurposePlace
		case g.State == GuestRecovering && g.Node == name && (g.Need == NeedRestart || g.Need == NeedNode):
			g.Need = NeedPlace
		}
	}
	if !needFence {
		if !st.quiet {
			st.logf("node %s is offline; nothing ran there, no fence needed", name)
		}
		return
	}
	n.Status = NodeFailed
	t := st.s.Config.Timings
	n.Fence = &Fence{RetryAt: st.now, DeadlineAt: st.now.Add(t.WatchdogWait())}
	switch {
	case st.quiet:
	case st.s.Config.Fencing == model.FencingWatchdog:
		st.logf("node %s failed; its guests count as fenced once its watchdog deadline passes at %s", name, fmtDur(n.Fence.DeadlineAt.Sub(st.now)))
	default:
		st.logf("node %s failed; fencing it before its guests run elsewhere", name)
	}
}

func fmtDur(d time.Duration) string { return "+" + d.String() }

func (st *stepper) nodeLeft(name string) {
	n := st.s.node(name)
	if n == nil || n.Status != NodeOnline {
		return
	}
	// Anything still running there cannot be: treat it as a failure.
	for _, g := range st.s.Guests {
		if (g.Node == name && g.Running) || (g.Op != nil && g.Op.Kind == OpStart && g.Op.Node == name) {
			st.logf("node %s left while %s was on it; handling it as a failed node", name, g.Spec.Name)
			sd := n.Shutdown
			st.nodeDown(name)
			n.Shutdown = sd
			return
		}
	}
	n.Status = NodeGone
	n.DownAt = st.now
	st.logf("node %s left the cluster cleanly", name)
	for _, g := range st.s.Guests {
		if g.ReturnTo == name {
			g.ReturnTo = ""
		}
	}
}

func (st *stepper) nodeShutdown(e NodeShutdown) {
	n := st.s.node(e.Node)
	if n == nil || n.Status != NodeOnline {
		return
	}
	n.Shutdown = &Shutdown{Policy: st.s.Config.ShutdownPolicy, Reboot: e.Reboot}
	what := "shutdown"
	if e.Reboot {
		what = "reboot"
	}
	st.logf("node %s: graceful %s with policy %s", n.Name, what, n.Shutdown.Policy)
}

// inventory reconciles the manager's view with agents' lists of running
// guests, for the online nodes in inv (node -> guests running there);
// selfFenced lists, per node, the guests its self-fence killed
// (NodeReport.SelfFenced).
func (st *stepper) inventory(inv, selfFenced map[string][]string) {
	for node, list := range inv {
		if n := st.s.node(node); n == nil || n.Status != NodeOnline {
			delete(inv, node)
		} else if n.Witness && len(list) > 0 {
			st.logf("witness %s reports guests running (%s); a witness runs no guest: ignored", node, strings.Join(list, ", "))
			delete(inv, node)
		}
	}
	if len(inv) == 0 {
		return
	}
	total := 0
	for _, list := range inv {
		total += len(list)
	}
	where := make(map[string]string, total)
	for node, list := range inv {
		for _, g := range list {
			where[g] = node
		}
	}
	for _, g := range st.s.Guests {
		name := g.Spec.Name
		at, reported := where[name]
		if _, listed := inv[g.Node]; listed && g.Running && at != g.Node {
			if g.Op != nil && g.Op.Kind == OpMigrate {
				continue // the migration's result decides
			}
			if !reported && g.Op != nil && g.Op.Kind == OpStop && g.Op.Node == g.Node {
				// Its stop completed while the result was lost (no
				// manager then): a stop, not a crash, so a preemption's
				// victim leaves its room to the guest it was stopped for.
				st.logf("%s is no longer running on %s: its stop completed", name, g.Node)
				st.result(GuestResult{Guest: name, Node: g.Node, Op: g.Op.ID, Result: ResultStopped})
				continue
			}
			if !reported {
				st.logf("%s is no longer running on %s", name, g.Node)
				st.crashed(GuestCrashed{Guest: name, Node: g.Node, SelfFence: slices.Contains(selfFenced[g.Node], name)})
				continue
			}
		}
		if !reported || (g.Node == at && g.Running) {
			continue
		}
		if g.Op != nil && (g.Op.Node == at || g.Op.Target == at) {
			continue
		}
		if g.Running && g.State != GuestFencing {
			st.logf("%s reported running on %s but it runs on %s", name, at, g.Node)
			continue
		}
		if g.State == GuestFencing {
			// It left its failed node before the node failed (a migration
			// whose result was lost with the node): it runs here.
			st.logf("%s, waiting for %s to be fenced, runs on %s", name, g.Node, at)
		}
		st.logf("adopting %s running on %s", name, at)
		g.Running = true
		g.Node = at
		g.Op = nil
		g.AlsoOn = ""
		g.State = GuestStarted
		g.RunningSince = st.now
	}
}

func (st *stepper) fenceResult(e FenceResult) {
	n := st.s.node(e.Node)
	if n == nil || n.Status != NodeFailed || n.Fence == nil || n.Fence.Attempt != e.Attempt || !n.Fence.InFlight {
		return
	}
	if !e.OK && n.Fence.Rejoin != nil {
		r := *n.Fence.Rejoin
		n.Fence.InFlight = false
		n.Fence.Rejoin = nil
		st.nodeUp(r, true)
		return
	}
	if !e.OK {
		n.Fence.InFlight = false
		n.Fence.RetryAt = st.now.Add(st.s.Config.Timings.FenceRetry)
		st.logf("fencing %s failed (%s); retrying in %s", n.Name, e.Err, st.s.Config.Timings.FenceRetry)
		return
	}
	rejoin := n.Fence.Rejoin
	st.fenced(n, true)
	if rejoin == nil {
		return
	}
	// It reported in while the attempt was in flight. If it booted before
	// the device acted, the fence powered that incarnation off: wait for it
	// to boot again. Otherwise (or when the times are unknown) trust its
	// lease; if the fence did power it off, the lease expires.
	if !e.At.IsZero() && !rejoin.BootedAt.IsZero() && !rejoin.BootedAt.After(e.At) {
		st.logf("node %s rejoined before the fence acted; the fence powered it off", n.Name)
		return
	}
	st.nodeUp(*rejoin, true)
}

// fenced: the failed node is off. count says whether a fence (a device, or
// the watchdog deadline) did it, rather than the operator's word.
func (st *stepper) fenced(n *Node, count bool) {
	n.Status = NodeFenced
	n.Fence = nil
	if count {
		n.Fences++
	}
	st.logf("node %s is fenced", n.Name)
	for _, g := range st.s.Guests {
		if g.State != GuestFencing || (g.Node != n.Name && g.AlsoOn != n.Name) {
			if g.AlsoOn == n.Name {
				g.AlsoOn = "" // it cannot run there any more
			}
			continue
		}
		if g.AlsoOn == n.Name {
			g.AlsoOn = ""
		}
		if st.awaitsFence(g) {
			continue
		}
		st.afterFence(g)
	}
}

// alsoFence makes sure node, which may hold a guest that was migrating to
// it, is fenced before that guest runs elsewhere: a node already counted
// down with nothing on it is failed now.
func (st *stepper) alsoFence(node string) {
	t := st.s.node(node)
	if t == nil || t.Status != NodeOffline {
		return
	}
	t.Status = NodeFailed
	tm := st.s.Config.Timings
	t.Fence = &Fence{RetryAt: st.now, DeadlineAt: t.DownAt.Add(tm.WatchdogWait())}
	st.logf("node %s may hold a guest migrating to it; fencing it", node)
}

// awaitsFence reports whether a fencing guest still waits for a failed
// node that may hold it (its node, or the target of its lost migration).
// When only the other node is left, the guest is recorded on that one.
func (st *stepper) awaitsFence(g *Guest) bool {
	failed := func(name string) bool {
		n := st.s.node(name)
		return name != "" && n != nil && n.Status == NodeFailed
	}
	switch {
	case failed(g.Node):
		return true
	case failed(g.AlsoOn):
		g.Node, g.AlsoOn = g.AlsoOn, ""
		return true
	}
	return false
}

// afterFence: the guest's failed node is fenced (or came back empty).
func (st *stepper) afterFence(g *Guest) {
	g.Running = false
	g.Op = nil
	g.AlsoOn = ""
	switch g.Spec.State {
	case model.DesiredStopped:
		g.State = GuestStopped
	case model.DesiredDisabled:
		g.State = GuestDisabled
	default:
		g.State = GuestRecovering
		g.Need = NeedPlace
		g.RetryAt = time.Time{}
	}
}

func (st *stepper) result(e GuestResult) {
	g := st.s.Guest(e.Guest)
	if g == nil || g.Op == nil || g.Op.ID != e.Op {
		return
	}
	op := g.Op
	switch e.Result {
	case ResultStarted:
		g.Op = nil
		g.Preempted = false
		g.Running = true
		g.Node = op.Node
		g.State = GuestStarted
		g.RunningSince = st.now
		g.MoveFails, g.MoveFailedAt = 0, time.Time{}
		st.moved(g, op)
	case ResultStartFailed:
		g.Op = nil
		st.logf("%s failed to start on %s: %s", g.Spec.Name, op.Node, e.Err)
		st.trouble(g, op.Node)
	case ResultStopped:
		g.Op = nil
		g.Running = false
		g.MoveFails, g.MoveFailedAt = 0, time.Time{}
		st.stopped(g, op)
	case ResultStopFailed:
		g.Op = nil
		st.unpreempt(g)
		g.State = GuestFailed
		g.Running = true
		st.logf("%s could not be stopped on %s (%s): failed, still running there; it runs nowhere else until the node is fenced or a stop succeeds", g.Spec.Name, op.Node, e.Err)
	case ResultMigrated:
		g.Op = nil
		g.AlsoOn = ""
		g.Running = true
		g.Node = op.Target
		g.State = GuestStarted
		g.MoveFails, g.MoveFailedAt = 0, time.Time{}
		st.moved(g, op)
		if t := st.s.node(op.Target); t.Status != NodeOnline || t.BootID != op.TargetBoot {
			st.lateArrival(g, t, op.TargetBoot)
		} else if op.TargetCrashed {
			st.logf("%s crashed on %s after its migration", g.Spec.Name, op.Target)
			st.trouble(g, op.Target)
		}
	case ResultMigrateFailed:
		g.Op = nil
		g.AlsoOn = ""
		g.MoveFailedAt = st.now
		g.MoveFails++
		g.Running = true
		g.Node = op.Node
		wait := fmt.Sprintf("the manager moves it no sooner than %s from now (failed migrations in a row: %d)", moveBackoff(g.MoveFails), g.MoveFails)
		if op.Purpose == PurposeFailback {
			g.FailbackBlocked = true
			g.BlockedSeq = st.s.UpSeq
			st.logf("failback of %s to %s failed (%s); it stays on %s until a node comes up or leaves maintenance, and %s", g.Spec.Name, op.Target, e.Err, op.Node, wait)
		} else {
			st.logf("migration of %s to %s failed (%s); it keeps running on %s; %s", g.Spec.Name, op.Target, e.Err, op.Node, wait)
		}
	default:
		panic(fmt.Sprintf("manager: unknown result %q", e.Result))
	}
}

// moved records why a guest now runs where it does.
func (st *stepper) moved(g *Guest, op *Op) {
	src := op.From
	if op.Kind == OpMigrate {
		src = op.Node
	}
	switch op.Purpose {
	case PurposeOperator:
		g.OperatorPlaced = true
		g.EvacuatedFrom = ""
	case PurposeEvacuate:
		g.OperatorPlaced = false
		g.EvacuatedFrom = src
	case PurposeRestart, PurposeUnfreeze:
	default:
		if src != "" || op.Kind == OpStart {
			g.OperatorPlaced = false
			g.EvacuatedFrom = ""
		}
	}
}

// stopped handles a stop that succeeded.
func (st *stepper) stopped(g *Guest, op *Op) {
	from := op.Node
	g.PreemptedBy = ""
	if op.Purpose == PurposePreempt && g.Spec.State == model.DesiredStarted {
		// Stopped to make room: it waits for room like any recovering
		// guest; this is no crash (no restart or move is counted).
		g.State = GuestRecovering
		g.Need = NeedPlace
		g.RetryAt = time.Time{}
		g.Preempted = true
		st.logf("%s stopped on %s to make room; it is placed again when there is room (it preempts no other guest)", g.Spec.Name, from)
		return
	}
	if op.Purpose == PurposeFreeze {
		if g.Spec.State == model.DesiredStarted {
			g.State = GuestFrozen
			return
		}
	}
	if g.Spec.State != model.DesiredStarted {
		st.settleDesired(g)
		return
	}
	switch {
	case op.Target != "":
		// Relocation: start on the target if it can still take it.
		t := st.s.node(op.Target)
		if t != nil && t.Status == NodeOnline && !t.Maintenance && t.Shutdown == nil && st.depsReady(g) {
			id := st.newID()
			g.Op = &Op{ID: id, Kind: OpStart, Node: op.Target, From: from, Purpose: op.Purpose}
			g.State = GuestStarted
			g.Node = op.Target
			g.CPUModel = st.s.startModel(g)
			st.acts = append(st.acts, Action{Kind: ActStart, Guest: g.Spec.Name, Node: op.Target, Op: id, Msg: string(op.Purpose), CPUModel: g.CPUModel})
			return
		}
		g.State = GuestRecovering
		g.Need = NeedPlace
	default:
		// Shutdown with policy stop, or an evacuation target that vanished.
		g.State = GuestRecovering
		g.Need = NeedPlace
	}
}

// unpreempt: g's preemption stop did not happen (it failed, or g is gone
// from its node); the guest it made room for no longer waits for it and is
// placed afresh.
func (st *stepper) unpreempt(g *Guest) {
	if g.PreemptedBy == "" {
		return
	}
	if p := st.s.Guest(g.PreemptedBy); p != nil && p.PreemptOn != "" {
		st.logf("%s could not be preempted; %s is placed afresh", g.Spec.Name, p.Spec.Name)
		p.PreemptOn, p.PreemptVictims = "", nil
	}
	g.PreemptedBy = ""
}

// settleDesired puts a guest that is not running into its desired state.
func (st *stepper) settleDesired(g *Guest) {
	switch g.Spec.State {
	case model.DesiredStopped:
		g.State = GuestStopped
	case model.DesiredDisabled:
		g.State = GuestDisabled
	}
	g.Need = ""
	g.RetryAt = time.Time{}
}

func (st *stepper) crashed(e GuestCrashed) {
	g := st.s.Guest(e.Guest)
	if g != nil && g.Op != nil && g.Op.Kind == OpMigrate && g.Op.Target == e.Node {
		// It resumed on the target and died there; the source's result
		// (migrated) is still on its way.
		g.Op.TargetCrashed = true
		return
	}
	if g == nil || !g.Running || g.Node != e.Node {
		return
	}
	op := g.Op
	g.Running = false
	g.Op = nil
	switch {
	case e.SelfFence:
		st.logf("%s was killed by %s's self-fence (it lost the quorate side): recovered as after a node failure, no restart counted", g.Spec.Name, e.Node)
	case e.Reason != "":
		st.logf("%s crashed on %s: %s", g.Spec.Name, e.Node, e.Reason)
	default:
		st.logf("%s crashed on %s", g.Spec.Name, e.Node)
	}
	if op != nil && op.Kind == OpStop && op.Purpose == PurposeFreeze && g.Spec.State == model.DesiredStarted {
		g.State = GuestFrozen
		return
	}
	if g.State == GuestFailed {
		if g.Spec.State != model.DesiredStarted {
			st.settleDesired(g)
		}
		return
	}
	if e.SelfFence {
		g.Node = e.Node
		st.afterFence(g)
		return
	}
	st.trouble(g, e.Node)
}

// restartDelay is the pause before restart number n (1 for the first since
// the counts were last cleared): delay for the first, doubling with each
// further restart up to 32 times delay. A crash loop is bounded by the
// restart budget (max_restarts in restart_window); the growing pause keeps
// a looping guest from hogging its host meanwhile.
func restartDelay(delay time.Duration, n int) time.Duration {
	return delay << min(max(n-1, 0), 5)
}

// trouble handles a crash or a failed start of g on a healthy node.
func (st *stepper) trouble(g *Guest, node string) {
	g.Running = false
	g.Node = node
	if g.Spec.State != model.DesiredStarted {
		st.settleDesired(g)
		return
	}
	if !slices.Contains(g.Tried, node) {
		g.Tried = append(g.Tried, node)
	}
	switch g.Spec.Recovery {
	case model.RecoveryDisable:
		g.Spec.State = model.DesiredDisabled
		g.State = GuestDisabled
		st.logf("%s is disabled (recovery: disable)", g.Spec.Name)
		return
	case model.RecoveryRelocate:
	default:
		if g.Restarts < g.Spec.MaxRestarts {
			g.Restarts++
			g.State = GuestRecovering
			g.Need = NeedRestart
			g.RetryAt = st.now.Add(restartDelay(st.s.Config.Timings.RestartDelay, g.Restarts))
			st.logf("%s will restart on %s (restart %d of %d)", g.Spec.Name, node, g.Restarts, g.Spec.MaxRestarts)
			return
		}
	}
	if g.Moves >= g.Spec.MaxRelocations {
		g.State = GuestFailed
		g.Need = ""
		st.logf("%s failed: restarts and moves used up (restarts %d, moves %d); start or disable it to clear", g.Spec.Name, g.Restarts, g.Moves)
		return
	}
	g.State = GuestRecovering
	g.Need = NeedMove
	g.RetryAt = time.Time{}
}

// lateArrival handles a migration that completed onto node t after t failed
// or rebooted (the result was delayed): the guest ran there.
func (st *stepper) lateArrival(g *Guest, t *Node, boot string) {
	switch {
	case t.Status == NodeOnline || t.BootID != boot:
		// t rebooted since: the guest died with the old incarnation.
		st.logf("%s arrived on %s, which has rebooted since; it is not running", g.Spec.Name, t.Name)
		st.afterFence(g)
	case t.Status == NodeFenced:
		st.logf("%s arrived on %s, which has been fenced since; it is not running", g.Spec.Name, t.Name)
		st.afterFence(g)
	default:
		st.logf("%s arrived on %s, which has failed since; fencing it", g.Spec.Name, t.Name)
		g.State = GuestFencing
		if t.Status != NodeFailed {
			tm := st.s.Config.Timings
			t.Status = NodeFailed
			t.Fence = &Fence{RetryAt: st.now, DeadlineAt: t.DownAt.Add(tm.WatchdogWait())}
		}
	}
}
