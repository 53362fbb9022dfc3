package sim

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/control"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/manager"
)

// The manager runs the daemon's own shell (control.Shell) over the core:
// the same translation of actions into orders (a live migration is a
// receive order to the target, then, once it is ready, a migrate order to
// the source), the same receive timeouts, abandoned migrations, order IDs
// and "left or failed" decision. What the simulator provides is what the
// shell talks to: an in-memory store (simStore: orders, reports, the saved
// state), fence devices on the simulated clock (simFencer), and the agents,
// which take orders from the store and carry them out on the simulated
// hypervisor (agentDo).

// mgrIn is one thing for the manager's shell: an input from the store, a
// fence result, a timer tick, or the Sync that starts a term.
type mgrIn struct {
	in    control.Input
	fence *manager.FenceResult
	tick  bool
	sync  *manager.Sync
}

var quiet = slog.New(slog.DiscardHandler)

// newShell is a manager term's shell over st.
func (w *World) newShell(st *manager.State) *control.Shell {
	return control.New(control.Config{
		State:  st,
		Writer: simStore{w},
		Fencer: simFencer{w},
		Defs:   simDefs{},
		Logger: quiet,
		Now:    w.wall,
		OnStep: w.onStep,
		// The timeline has the hypervisor's own lines for these.
		OnDone: func(time.Time, string, string, string) {},
	})
}

// takeOver starts a term on the current state, as the daemon's RunManager
// does after loading the store: the shell carries on the migrations in
// flight and is fed again the stored reports about operations in flight,
// after the Sync.
func (w *World) takeOver(sync manager.Sync) []mgrIn {
	w.sh = w.newShell(w.mgr)
	var reports []control.NodeReport
	for _, n := range w.nodes {
		for _, g := range slices.Sorted(maps.Keys(w.reports[n.name])) {
			reports = append(reports, control.NodeReport{Node: n.name, Report: w.reports[n.name][g]})
		}
	}
	out := []mgrIn{{sync: &sync}}
	for _, in := range w.sh.TakeOver(w.wall(), reports, func(node string) bool { return w.byName[node].leaseLive }) {
		out = append(out, mgrIn{in: in})
	}
	return out
}

func (w *World) toManager(m mgrIn) { w.mq = append(w.mq, m) }

// leaseGone is a node's lease ending: its reports leave the store and the
// shell decides whether it left cleanly or failed.
func (w *World) leaseGone(n *simNode) {
	delete(w.reports, n.name)
	w.toManager(mgrIn{in: control.Input{NodeGone: n.name}})
}

// flush delivers pending inputs to the manager's shell, one at a time,
// until nothing is pending.
func (w *World) flush() {
	for i := 0; i < 1000000; i++ {
		if w.mgrNode == "" {
			w.mq = w.mq[:0]
			return
		}
		if len(w.mq) == 0 {
			if len(w.fenceQ) > 0 {
				for _, fr := range w.fenceQ {
					w.mq = append(w.mq, mgrIn{fence: &fr})
				}
				w.fenceQ = w.fenceQ[:0]
				continue
			}
			if w.dirty {
				w.dirty = false
				w.refresh()
				continue
			}
			w.deliverOutboxes()
			if len(w.mq) == 0 {
				w.scheduleTimer()
				return
			}
		}
		m := w.mq[0]
		w.mq = w.mq[1:]
		ctx, now := context.Background(), w.wall()
		var err error
		switch {
		case m.sync != nil:
			err = w.sh.Start(ctx, now, *m.sync)
		case m.fence != nil:
			err = w.sh.HandleFence(ctx, now, *m.fence)
		case m.tick:
			err = w.sh.HandleTick(ctx, now)
		default:
			if m.in.Command != nil {
				w.pre = w.beforeStep(*m.in.Command)
			}
			err = w.sh.Handle(ctx, now, m.in)
		}
		if err != nil {
			// The simulated store never refuses a write: this is the core
			// failing an invariant (a bug), which the daemon resigns on.
			panic(err)
		}
		if w.opt.RoundTrip {
			data, err := json.Marshal(w.mgr)
			if err != nil {
				panic(err)
			}
			if w.mgr, err = manager.Restore(data); err != nil {
				panic(err)
			}
			ms := w.sh.Migrations()
			w.sh = w.newShell(w.mgr)
			w.sh.Resume(ms)
		}
	}
	panic("sim: the manager does not settle")
}

func (w *World) scheduleTimer() {
	t, ok := w.sh.NextTimer()
	if !ok {
		return
	}
	d := t.Sub(Epoch)
	if d <= w.now || w.timers[d] {
		return
	}
	w.timers[d] = true
	w.push(&item{t: d, kind: itTimer})
}

// deliverOutboxes writes the reports of the agents that reach the store.
// Only the nodes that queued a report since (w.pending) are looked at, in
// name order, as if every node were.
func (w *World) deliverOutboxes() {
	if len(w.pending) == 0 {
		return
	}
	slices.SortFunc(w.pending, func(a, b *simNode) int { return a.idx - b.idx })
	waiting := w.pending[:0]
	for _, n := range w.pending {
		if len(n.outbox) > 0 && !n.reachable() {
			waiting = append(waiting, n) // kept until it reaches the store
			continue
		}
		n.queued = false
		if len(n.outbox) == 0 {
			continue
		}
		for _, in := range n.outbox {
			if r := in.Report; r != nil {
				if w.reports[n.name] == nil {
					w.reports[n.name] = map[string]hostctl.Report{}
				}
				w.reports[n.name][r.Report.Guest] = r.Report
			}
			w.mq = append(w.mq, mgrIn{in: in})
		}
		n.outbox = n.outbox[:0]
	}
	w.pending = waiting
}

func (n *simNode) reachable() bool { return n.power == powerOn && n.inQ && n.agentUp }

// onStep sees every step of the core: the timeline and the checks of the
// manager's decisions.
func (w *World) onStep(_ time.Time, acts []manager.Action) {
	w.steps++
	w.checkDecisions(w.pre, acts)
	w.pre = preStep{}
	for _, a := range acts {
		switch a.Kind {
		case manager.ActPersist:
			continue
		case manager.ActLog:
			w.logf("manager", "%s", a.Msg)
			continue
		case manager.ActReject:
			w.logf("manager", "rejected: %s", a.Msg)
			continue
		}
		w.logf("manager", "%s", a)
		switch a.Kind {
		case manager.ActStop:
			w.checkPreempt(a)
		case manager.ActStart, manager.ActMigrate:
			w.checkCPUModel(a)
		case manager.ActFence:
			if n := w.byName[a.Node]; n != nil && n.witness {
				w.violate("wf"+n.name, "witness %s is fenced", n.name)
			}
		}
	}
}

// simStore is the store as the manager's shell writes to it.
type simStore struct{ w *World }

// PutOrder puts an order where the node's agent takes it: at once if the
// agent reaches the store, else when it does again.
func (s simStore) PutOrder(_ context.Context, node string, o hostctl.Order) error {
	w := s.w
	n := w.byName[node]
	if _, phase, _ := strings.Cut(o.ID, "-"); phase == "clean" {
		w.logf("manager", "kill what is left of %s's incoming migration on %s", o.Guest, node)
	}
	if n == nil {
		return nil
	}
	// The store keeps it, whatever the node's state: a node powered off
	// or cut off finds it when it comes back, in a new life, and refuses
	// it (hostctl.Admit).
	w.rev++
	n.inbox = append(n.inbox, storedOrder{Order: o, rev: w.rev})
	if n.reachable() {
		w.runInbox(n)
	}
	return nil
}

// SaveState keeps nothing: the state object itself is what a new term
// restores from (through JSON, as from the daemon's store).
func (simStore) SaveState(context.Context, *manager.State) error { return nil }

// ShutdownReady lets the node's graceful shutdown proceed: it powers off,
// revoking its lease.
func (s simStore) ShutdownReady(_ context.Context, node string) error {
	w := s.w
	n := w.byName[node]
	if n.power != powerOn {
		return nil
	}
	w.logf("node", "%s powers off (graceful %s)", n.name, map[bool]string{true: "reboot", false: "shutdown"}[n.reboot])
	w.powerOff(n, "clean")
	n.leaseLive, n.hasExpire = false, false
	n.leaseGen++
	w.leaseGone(n)
	if n.reboot {
		w.push(&item{t: w.now + RebootDown, kind: itPowerOn, node: n.name})
	}
	w.dirty = true // the sides and the manager's seat change once this is handled
	return nil
}

func (simStore) CommandDone(context.Context, string, error) error { return nil }

// simFencer is the fence devices, on the simulated clock.
type simFencer struct{ w *World }

func (f simFencer) Fence(context.Context, string) error {
	panic("sim: fences are started, not called")
}

func (f simFencer) StartFence(node string, attempt uint64) {
	f.w.push(&item{t: f.w.now + FenceAction, kind: itFenceDone, node: node, op: attempt})
}

// simDefs gives every guest a definition with its name only: the simulated
// hypervisor needs nothing else.
type simDefs struct{}

func (simDefs) Definition(guest, node string) (guestdef.Definition, error) {
	return guestdef.Definition{Name: guest}, nil
}

// storedOrder is an order in the store and the revision that wrote it.
type storedOrder struct {
	hostctl.Order
	rev int64
}

// runInbox has n's agent take the orders in the store, once its lease is
// live (a life in the cluster).
func (w *World) runInbox(n *simNode) {
	if !n.leaseLive {
		return
	}
	for len(n.inbox) > 0 {
		o := n.inbox[0]
		n.inbox = n.inbox[1:]
		w.agentTake(n, o)
	}
}

// agentTake carries out an order as the daemon's agent does
// (hostctl.Admit): once, and not at all when written for an earlier life
// of the node.
func (w *World) agentTake(n *simNode, o storedOrder) {
	switch hostctl.Admit(o.Order, o.rev, n.since, n.lastDone[o.Guest]) {
	case hostctl.EarlierLife:
		w.logf("node", "agent on %s refuses order %s (%s %s): written before its current life in the cluster", n.name, o.ID, o.Op, o.Guest)
		return
	case hostctl.Repeated:
		w.logf("node", "agent on %s ignores order %s (%s %s): it took it already", n.name, o.ID, o.Op, o.Guest)
		return
	}
	n.lastDone[o.Guest] = o.ID
	w.agentDo(n, o.Order)
}

func (w *World) report(n *simNode, in control.Input) {
	n.outbox = append(n.outbox, in)
	if !n.queued {
		n.queued = true
		w.pending = append(w.pending, n)
	}
}

// reply is the agent's report of an order's outcome: failed when why is set.
func (w *World) reply(n *simNode, o hostctl.Order, st hostctl.GuestState, why string) {
	w.replyTo(n, o, st, why, hypervisor.MigrationTarget{})
}

func (w *World) replyTo(n *simNode, o hostctl.Order, st hostctl.GuestState, why string, target hypervisor.MigrationTarget) {
	r := hostctl.Report{Guest: o.Guest, State: st, OrderID: o.ID, Op: o.Op, Result: hostctl.ResultOK, Target: target, At: w.wall()}
	if why != "" {
		r.Result, r.Error = hostctl.ResultFailed, why
	}
	w.report(n, control.Input{Report: &control.NodeReport{Node: n.name, Report: r}})
}

// crashed is the agent's report that a guest died by itself.
func (w *World) crashed(n *simNode, guest, reason string) {
	r := hostctl.Report{Guest: guest, State: hostctl.Crashed, Reason: reason, At: w.wall()}
	w.report(n, control.Input{Report: &control.NodeReport{Node: n.name, Report: r}})
}

// dropIncoming kills a copy waiting for (or in) an incoming migration; a
// source sending to it fails its migration and keeps the guest.
func (w *World) dropIncoming(n *simNode, guest string, v *vm) {
	if s := w.byName[v.from]; s != nil {
		if sv := s.vms[guest]; sv != nil && sv.migrating == n.name {
			w.abortMigration(s, guest, sv)
		}
	}
	w.removeVM(n, guest)
}

// migrationURI names the simulated receiver of a migration on node.
func migrationURI(node string) string { return "sim://" + node }

// agentDo carries out one order on node n's hypervisor.
func (w *World) agentDo(n *simNode, o hostctl.Order) {
	if !n.reachable() {
		w.violate("cut"+n.name+o.Guest, "%s acted on %s %s while it is not in the quorate side", n.name, o.Op, o.Guest)
	}
	if n.witness && (o.Op == hostctl.OpStart || o.Op == hostctl.OpReceive) {
		w.violate("w"+n.name+o.Guest, "witness %s was told to run %s", n.name, o.Guest)
	}
	gi := w.guests[o.Guest]
	w.token++
	tok := w.token
	switch o.Op {
	case hostctl.OpStart:
		if v := n.vms[o.Guest]; v != nil && v.state == vmIncoming {
			// A copy waiting for a migration that will not come: the start
			// replaces it, as hostctl's does.
			w.dropIncoming(n, o.Guest, v)
		}
		if v := n.vms[o.Guest]; v != nil {
			if v.state == vmRunning {
				w.reply(n, o, hostctl.Running, "")
			}
			return
		}
		w.checkStart(o.Guest, n)
		n.vms[o.Guest] = &vm{state: vmStarting, order: o, token: tok}
		n.used += gi.spec.Memory
		w.live[o.Guest]++
		w.checkCopies(o.Guest)
		w.push(&item{t: w.now + GuestStart, kind: itStartDone, node: n.name, guest: o.Guest, token: tok})
	case hostctl.OpStop, hostctl.OpKill:
		v := n.vms[o.Guest]
		if v == nil {
			w.reply(n, o, hostctl.Stopped, "")
			return
		}
		if v.state == vmIncoming {
			// What is left of an incoming migration: gone at once.
			w.dropIncoming(n, o.Guest, v)
			w.reply(n, o, hostctl.Stopped, "")
			return
		}
		if v.migrating != "" {
			w.abortMigration(n, o.Guest, v)
		}
		v.state, v.order, v.token = vmStopping, o, tok
		w.unwatchHealth(v)
		w.push(&item{t: w.now + GuestStop, kind: itStopDone, node: n.name, guest: o.Guest, token: tok})
	case hostctl.OpReceive:
		if n.vms[o.Guest] != nil {
			w.reply(n, o, hostctl.Stopped, "the guest is already here")
			return
		}
		n.vms[o.Guest] = &vm{state: vmIncoming, order: o, token: tok}
		n.used += gi.spec.Memory
		w.replyTo(n, o, hostctl.Incoming, "", hypervisor.MigrationTarget{Node: n.name, URI: migrationURI(n.name)})
	case hostctl.OpMigrate:
		v := n.vms[o.Guest]
		if v == nil || v.state != vmRunning || v.migrating != "" {
			w.reply(n, o, hostctl.Stopped, "not running here")
			return
		}
		t := w.byName[strings.TrimPrefix(o.Target.URI, migrationURI(""))]
		var tv *vm
		if t != nil {
			tv = t.vms[o.Guest]
		}
		if t == nil || t.power != powerOn || !w.connected(n, t) || tv == nil || tv.state != vmIncoming || tv.from != "" {
			w.reply(n, o, hostctl.Running, "target unreachable")
			return
		}
		v.migrating, v.order, v.token = t.name, o, tok
		w.unwatchHealth(v)
		tv.from, tv.token = n.name, tok
		w.push(&item{t: w.now + Migration, kind: itMigrateDone, node: n.name, guest: o.Guest, token: tok})
	}
}
