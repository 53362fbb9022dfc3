// Package sim owns `haven sim`: a simulated cluster (clock, store and
// leases, network with partitions and quorum, hypervisors, fence devices,
// agents) that runs the daemon's manager, its shell (package control) over
// the pure core (package manager), and the agents' self-fencing logic
// (package selffence) against a scenario (package scenario), prints the
// timeline, checks the four invariants after every step and evaluates the
// scenario's expectations. shell.go has what the shell talks to.
package sim

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/control"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/scenario"
	"github.com/haven-ha/haven/internal/selffence"
)

// Fixed durations of the simulated world (SCENARIOS.md).
const (
	GuestStart   = 2 * time.Second
	GuestStop    = 2 * time.Second
	Migration    = 5 * time.Second
	FenceAction  = 2 * time.Second
	Boot         = 10 * time.Second
	AgentRestart = 5 * time.Second
	RebootDown   = 60 * time.Second
)

// Epoch is the wall time the simulated t=0 maps to for the manager.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type power int

const (
	powerOff power = iota
	powerBooting
	powerOn
)

type vmState int

const (
	vmStarting vmState = iota
	vmRunning
	vmStopping
	vmIncoming // migration target, paused until the migration completes
)

type vm struct {
	state     vmState
	order     hostctl.Order // the order it carries out (or last carried out)
	token     uint64
	migrating string // source side: migration target node
	from      string // incoming side: source node

	// Health (health.go): checks run since since; passed: a check passed
	// in this run; the service died or the kernel hung at faultAt; hgen
	// names the current schedule of its checks.
	since     time.Duration
	passed    bool
	svcDead   bool
	hung      bool
	faultAt   time.Duration
	hgen      uint64
	healthWhy string
}

type simNode struct {
	name        string
	memory      int64
	cpus        int
	cpuModels   []string // the CPU models its agent reports (nil: unknown)
	witness     bool
	power       power
	agentUp     bool
	agentDownAt time.Duration // when its agent last went down (agent restart)
	netOff      bool
	group       int
	vms         map[string]*vm
	used        int64
	leaseLive   bool
	hasExpire   bool
	expireAt    time.Duration
	leaseGen    uint64
	bootID      int
	outbox      []control.Input   // reports its agent has not written to the store yet
	queued      bool              // in World.pending
	idx         int               // its place in World.nodes (name order)
	inbox       []storedOrder     // orders in the store its agent has not taken yet
	lastDone    map[string]string // per guest, the ID of the last order its agent took
	// since is the store revision at which its current life in the
	// cluster (its lease) began: its agent does not carry out orders
	// written no later (hostctl.Admit).
	since     int64
	mon       *selffence.Monitor
	sfAt      time.Duration // scheduled self-fence check
	sfSched   bool
	inQ       bool
	shutdown  bool // a graceful shutdown/reboot is in progress
	reboot    bool
	fenceFail bool
	bootedAt  time.Duration
	epoch     int // bumped by fence, self-fence, boot (checker)
	reported  []string
	powerGen  uint64
}

type guestInfo struct {
	spec       model.GuestSpec
	startFail  int
	migFail    int
	stopFails  bool
	guestAgent bool
	health     []guestdef.Check
}

type itemKind int

const (
	itScenario itemKind = iota
	itStartDone
	itStopDone
	itMigrateDone
	itFenceDone
	itBootDone
	itAgentBack
	itLeaseExpire
	itSelfFence
	itTick
	itTimer
	itPowerOn
	itHealthFail
)

type item struct {
	t     time.Duration
	seq   uint64
	kind  itemKind
	node  string
	guest string
	op    uint64
	token uint64
	idx   int
}

type queue []*item

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].t != q[j].t {
		return q[i].t < q[j].t
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*item)) }
func (q *queue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

// Line is one timeline entry.
type Line struct {
	T      time.Duration `json:"-"`
	Source string        `json:"source"`
	Msg    string        `json:"msg"`
}

// Options tune a run.
type Options struct {
	// Timings of the manager and agents; zero means manager.DefaultTimings.
	Timings manager.Timings
	// NoTimeline drops timeline lines (benchmarks, fuzzing).
	NoTimeline bool
	// OnStep, when set, is called after every processed item.
	OnStep func(w *World)
	// RoundTrip persists and restores the manager's state after every
	// step, as if a new manager took over each time (tests persistence).
	RoundTrip bool
	// Stop, when set, is asked before every processed item; true ends the
	// run there (SIGTERM on `haven sim run`).
	Stop func() bool
}

// World is one simulated cluster running one scenario.
type World struct {
	// Stopped is set when Options.Stop ended the run early.
	Stopped bool
	// rev is the store's revision: every order and lease grant moves it.
	rev     int64
	sc      *scenario.Scenario
	opt     Options
	tm      manager.Timings
	now     time.Duration
	end     time.Duration
	q       queue
	seq     uint64
	nodes   []*simNode
	byName  map[string]*simNode
	guests  map[string]*guestInfo
	mgr     *manager.State
	sh      *control.Shell
	mgrNode string
	mq      []mgrIn
	pending []*simNode // nodes that queued reports (report), for deliverOutboxes
	fenceQ  []manager.FenceResult
	reports map[string]map[string]hostctl.Report // the store's latest report per node and guest
	pre     preStep                              // the rules checker's view before a command's step
	token   uint64
	timers  map[time.Duration]bool
	quorate bool
	dirty   bool

	// checker
	live       map[string]int  // counted copies per guest
	stopped    map[string]bool // guests whose copy was stopped, crashed or lost at least once
	unclean    map[string]uncleanEnd
	Violations []string
	seenViol   map[string]bool

	Timeline []Line
	steps    int
}

type uncleanEnd struct {
	node   string
	epoch  int
	safeAt time.Duration
	at     time.Duration
}

// New builds the world of a scenario at t=0.
func New(sc *scenario.Scenario, opt Options) *World {
	tm := opt.Timings
	if tm == (manager.Timings{}) {
		tm = manager.DefaultTimings()
	}
	w := &World{sc: sc, opt: opt, tm: tm, end: sc.End(), byName: map[string]*simNode{}, guests: map[string]*guestInfo{},
		timers: map[time.Duration]bool{}, reports: map[string]map[string]hostctl.Report{}, live: map[string]int{}, stopped: map[string]bool{}, unclean: map[string]uncleanEnd{}}
	w.mgr = manager.New(manager.Config{Fencing: sc.Fencing, ShutdownPolicy: sc.Shutdown, QuorumLoss: sc.QuorumLoss, Preemption: sc.Preemption, Timings: tm, Reserve: sc.Reserve, Balance: sc.Balance, Capacity: sc.Capacity})
	add := make([]manager.NodeConfig, 0, len(sc.Nodes))
	for _, n := range sc.Nodes {
		sn := &simNode{name: n.Name, memory: n.Memory, cpus: n.CPUs, cpuModels: n.CPUModels, witness: n.Witness, agentUp: true, vms: map[string]*vm{}, lastDone: map[string]string{}, mon: w.monitor()}
		if n.Witness {
			sn.memory = 0 // a witness runs no guest: its memory is ignored
		}
		if n.PowerOn {
			sn.power = powerOn
			sn.bootID = 1
		}
		w.nodes = append(w.nodes, sn)
		w.byName[n.Name] = sn
		add = append(add, manager.NodeConfig{Name: n.Name, Memory: sn.memory, CPUs: n.CPUs})
	}
	if err := w.mgr.AddNodes(add); err != nil {
		panic(err)
	}
	for _, n := range sc.Nodes {
		if err := w.mgr.SetWitness(n.Name, n.Witness); err != nil {
			panic(err)
		}
	}
	sort.Slice(w.nodes, func(a, b int) bool { return w.nodes[a].name < w.nodes[b].name })
	for i, n := range w.nodes {
		n.idx = i
	}
	for _, d := range sc.Domains {
		if err := w.mgr.AddDomain(d); err != nil {
			panic(err)
		}
	}
	for _, g := range sc.Guests {
		w.guests[g.Spec.Name] = &guestInfo{spec: g.Spec, startFail: g.Faults.StartFailures, migFail: g.Faults.MigrateFailures, stopFails: g.Faults.StopFails,
			guestAgent: g.GuestAgent, health: g.Health}
		running := g.Spec.Node != "" && g.Spec.State == model.DesiredStarted
		if running {
			n := w.byName[g.Spec.Node]
			// Running since before t=0: past its checks' start grace.
			n.vms[g.Spec.Name] = &vm{state: vmRunning, passed: true}
			n.used += g.Spec.Memory
			w.live[g.Spec.Name]++
		}
		if err := w.mgr.AddGuest(g.Spec, running); err != nil {
			panic(err)
		}
	}
	if err := w.mgr.SetRules(sc.Rules); err != nil {
		panic(err)
	}
	for i := range sc.Events {
		w.push(&item{t: sc.Events[i].At, kind: itScenario, idx: i})
	}
	if tm.Tick > 0 && tm.Tick <= w.end {
		w.push(&item{t: tm.Tick, kind: itTick})
	}
	return w
}

// monitor returns a new self-fence monitor following the cluster's
// quorum_loss policy.
func (w *World) monitor() *selffence.Monitor {
	m := selffence.New(w.tm.LeaseTTL)
	m.SetFreeze(!w.mgr.Config.SelfFences())
	return m
}

func (w *World) push(it *item) {
	w.seq++
	it.seq = w.seq
	heap.Push(&w.q, it)
}

func (w *World) logf(source, format string, a ...any) {
	if w.opt.NoTimeline {
		return
	}
	w.Timeline = append(w.Timeline, Line{T: w.now, Source: source, Msg: fmt.Sprintf(format, a...)})
}

func (w *World) wall() time.Time { return Epoch.Add(w.now) }

// Manager returns the manager's current state (the last persisted one while
// no manager runs).
func (w *World) Manager() *manager.State { return w.mgr }

// Now returns the simulated time.
func (w *World) Now() time.Duration { return w.now }

// Steps returns the number of manager steps taken.
func (w *World) Steps() int { return w.steps }

// Run runs the world to the end, calling at for every time at which
// expectations must be evaluated (before anything later happens) and after
// for every processed item.
func (w *World) run(checkpoints []time.Duration, at func(time.Duration), after func()) {
	w.refresh()
	w.flush()
	w.check()
	after()
	cp := 0
	for len(w.q) > 0 {
		if w.opt.Stop != nil && w.opt.Stop() {
			w.Stopped = true
			break
		}
		next := w.q[0].t
		if next > w.end {
			break
		}
		for cp < len(checkpoints) && checkpoints[cp] < next {
			w.now = checkpoints[cp]
			at(w.now)
			cp++
		}
		it := heap.Pop(&w.q).(*item)
		w.now = it.t
		if it.kind == itScenario {
			batch := []*item{it}
			for len(w.q) > 0 && w.q[0].t == it.t && w.q[0].kind == itScenario {
				batch = append(batch, heap.Pop(&w.q).(*item))
			}
			sort.Slice(batch, func(a, b int) bool { return batch[a].idx < batch[b].idx })
			for _, b := range batch {
				w.scenarioEvent(&w.sc.Events[b.idx])
			}
			w.toManager(mgrIn{tick: true}) // every event is a change the manager steps on
		} else {
			w.handle(it)
		}
		w.refresh()
		w.flush()
		w.check()
		after()
		if w.opt.OnStep != nil {
			w.opt.OnStep(w)
		}
	}
	if w.Stopped {
		return
	}
	for cp < len(checkpoints) {
		w.now = checkpoints[cp]
		at(w.now)
		cp++
	}
	w.now = w.end
}

func (w *World) connected(a, b *simNode) bool {
	return a.power == powerOn && b.power == powerOn && !a.netOff && !b.netOff && a.group == b.group
}

func (w *World) removeVM(n *simNode, g string) {
	v := n.vms[g]
	if v == nil {
		return
	}
	delete(n.vms, g)
	n.used -= w.guests[g].spec.Memory
	if v.state != vmIncoming {
		w.live[g]--
		w.stopped[g] = true
	}
}

// abortMigration ends a migration in flight whose source is n (the source
// keeps running) and reports its failure.
func (w *World) abortMigration(n *simNode, g string, v *vm) {
	if t := w.byName[v.migrating]; t != nil {
		if tv := t.vms[g]; tv != nil && tv.state == vmIncoming {
			w.removeVM(t, g)
		}
	}
	w.reply(n, v.order, hostctl.Running, "migration aborted")
	v.migrating = ""
	w.watchHealth(n, g, v)
}

func (w *World) handle(it *item) {
	n := w.byName[it.node]
	switch it.kind {
	case itTick:
		w.toManager(mgrIn{tick: true})
		if next := it.t + w.tm.Tick; next <= w.end {
			w.push(&item{t: next, kind: itTick})
		}
	case itTimer:
		delete(w.timers, it.t)
		w.toManager(mgrIn{tick: true})
	case itStartDone:
		v := n.vms[it.guest]
		if v == nil || v.token != it.token || v.state != vmStarting {
			return
		}
		gi := w.guests[it.guest]
		if gi.startFail > 0 {
			gi.startFail--
			w.removeVM(n, it.guest)
			w.logf("hypervisor", "%s failed to start on %s", it.guest, n.name)
			w.reply(n, v.order, hostctl.Stopped, "simulated start failure")
			return
		}
		v.state = vmRunning
		w.watchHealth(n, it.guest, v)
		delete(w.unclean, it.guest)
		w.logf("hypervisor", "%s started on %s", it.guest, n.name)
		w.reply(n, v.order, hostctl.Running, "")
	case itStopDone:
		v := n.vms[it.guest]
		if v == nil || v.token != it.token || v.state != vmStopping {
			return
		}
		if w.guests[it.guest].stopFails {
			v.state = vmRunning
			w.watchHealth(n, it.guest, v)
			w.logf("hypervisor", "%s did not stop on %s", it.guest, n.name)
			w.reply(n, v.order, hostctl.Running, "simulated stop failure")
			return
		}
		w.removeVM(n, it.guest)
		w.logf("hypervisor", "%s stopped on %s", it.guest, n.name)
		w.reply(n, v.order, hostctl.Stopped, "")
	case itMigrateDone:
		v := n.vms[it.guest]
		if v == nil || v.token != it.token || v.migrating == "" {
			return
		}
		t := w.byName[v.migrating]
		tv := t.vms[it.guest]
		gi := w.guests[it.guest]
		if tv == nil || tv.token != it.token || !w.connected(n, t) || gi.migFail > 0 {
			if gi.migFail > 0 && tv != nil {
				gi.migFail--
			}
			w.logf("hypervisor", "migration of %s from %s to %s failed; it keeps running on %s", it.guest, n.name, t.name, n.name)
			w.abortMigration(n, it.guest, v)
			return
		}
		// The source stops as the target resumes.
		delete(n.vms, it.guest)
		n.used -= gi.spec.Memory
		tv.state = vmRunning
		tv.from = ""
		// Memory moved: a dead service or hung kernel moved with it.
		tv.svcDead, tv.hung, tv.faultAt = v.svcDead, v.hung, v.faultAt
		w.watchHealth(t, it.guest, tv)
		w.logf("hypervisor", "%s migrated from %s to %s", it.guest, n.name, t.name)
		w.reply(n, v.order, hostctl.Stopped, "")
	case itFenceDone:
		if n.fenceFail {
			w.logf("fence", "fencing %s failed (device error)", n.name)
			w.fenceQ = append(w.fenceQ, manager.FenceResult{Node: n.name, Attempt: it.op, OK: false, Err: "fence device error"})
			return
		}
		if n.power != powerOff {
			w.logf("fence", "%s powered off by its fence device", n.name)
			w.powerOff(n, "fence")
		} else {
			w.logf("fence", "%s confirmed off by its fence device", n.name)
		}
		n.epoch++
		w.fenceQ = append(w.fenceQ, manager.FenceResult{Node: n.name, Attempt: it.op, OK: true, At: w.wall()})
	case itBootDone:
		if n.power != powerBooting {
			return
		}
		n.power = powerOn
		n.bootID++
		n.bootedAt = w.now
		n.outbox = nil // the orders stay in the store: its next life refuses them
		n.epoch++
		n.agentUp = true
		n.mon = w.monitor()
		n.sfSched = false
		w.logf("node", "%s has booted", n.name)
		if n.leaseLive {
			// The old incarnation's lease: the new agent replaces it; the
			// manager sees a NodeUp with a new boot id.
			n.leaseLive, n.hasExpire = false, false
			n.leaseGen++
		}
	case itPowerOn:
		w.powerOn(n)
	case itHealthFail:
		w.healthFail(n, it)
	case itAgentBack:
		if n.power != powerOn || n.agentUp {
			return
		}
		n.agentUp = true
		ad := selffence.Adopt(n.reported, n.running())
		w.logf("node", "agent on %s is back; adopting %d running guests", n.name, len(ad.Running))
		for _, g := range n.running() {
			if v := n.vms[g]; v.state == vmRunning && v.migrating == "" {
				w.watchHealth(n, g, v) // checks start afresh for adopted guests
			}
		}
		w.report(n, control.Input{Inventory: &manager.Inventory{Node: n.name, Running: ad.Running}})
	case itLeaseExpire:
		if !n.leaseLive || !n.hasExpire || it.op != n.leaseGen || n.expireAt != it.t {
			return
		}
		n.leaseLive, n.hasExpire = false, false
		// Its session is gone: queued reports with it. When it rejoins,
		// its inventory (in the NodeUp) says what runs there, and the
		// orders written for this life are refused (hostctl.Admit).
		n.outbox = nil
		w.logf("node", "lease of %s expired", n.name)
		w.leaseGone(n)
	case itSelfFence:
		n.sfSched = false
		if n.power != powerOn {
			return
		}
		if n.mon.Decide(w.wall(), len(n.vms)) == selffence.Fence {
			w.logf("node", "%s lost the quorate side: self-fencing: stopping %d guests and powering off", n.name, len(n.vms))
			w.powerOff(n, "self-fence")
			n.epoch++
		}
	}
}

// running lists the guests running on n (for inventories).
func (n *simNode) running() []string {
	var out []string
	for g, v := range n.vms {
		if v.state == vmRunning || v.state == vmStopping {
			out = append(out, g)
		}
	}
	sort.Strings(out)
	return out
}

func (w *World) powerOn(n *simNode) {
	if n.power != powerOff {
		w.logf("node", "%s is already on", n.name)
		return
	}
	n.power = powerBooting
	n.shutdown, n.reboot = false, false
	n.powerGen++
	w.logf("node", "%s powers on; booting", n.name)
	w.push(&item{t: w.now + Boot, kind: itBootDone, node: n.name})
}

// powerOff cuts a node's power. how: "loss" (power lost), "fence",
// "self-fence", "clean" (graceful, guests already handled).
func (w *World) powerOff(n *simNode, how string) {
	if n.power == powerOff {
		return
	}
	names := make([]string, 0, len(n.vms))
	for g := range n.vms {
		names = append(names, g)
	}
	sort.Strings(names)
	for _, g := range names {
		v := n.vms[g]
		switch {
		case v.state == vmIncoming:
			// The source keeps running; its migration fails.
			if s := w.byName[v.from]; s != nil {
				if sv := s.vms[g]; sv != nil && sv.migrating == n.name {
					w.removeVM(n, g)
					w.abortMigration(s, g, sv)
					continue
				}
			}
		case v.migrating != "":
			if t := w.byName[v.migrating]; t != nil {
				if tv := t.vms[g]; tv != nil && tv.state == vmIncoming {
					w.removeVM(t, g)
				}
			}
		}
		if how == "loss" && v.state != vmIncoming {
			safe := time.Duration(1<<62 - 1)
			if w.sc.Fencing == model.FencingWatchdog {
				// Its watchdog's deadline: it last renewed its lease now, or
				// when it lost the quorate side (its self-fence deadline less
				// a lease TTL); it pets only on a renewal younger than one
				// keepalive, and the watchdog fires a watchdog timeout after
				// the last pet (docs/fencing.md).
				d := w.now
				if dl, cut := n.mon.Deadline(); cut {
					d = min(d, dl.Sub(Epoch)-w.tm.LeaseTTL)
				}
				if !n.agentUp {
					// Its agent (which renews and pets) is down since then.
					d = min(d, n.agentDownAt)
				}
				safe = d + w.tm.Keepalive + w.tm.WatchdogTimeout
			}
			w.unclean[g] = uncleanEnd{node: n.name, epoch: n.epoch, safeAt: safe, at: w.now}
		}
		w.removeVM(n, g)
	}
	n.power = powerOff
	n.agentUp = true
	n.outbox = nil
	n.shutdown = false
	n.powerGen++
}

func (w *World) scenarioEvent(e *scenario.Event) {
	n := w.byName[e.Node]
	switch e.Kind {
	case scenario.PowerOff:
		if n.power == powerOff {
			w.logf("node", "%s is already off", n.name)
			return
		}
		w.logf("node", "%s loses power", n.name)
		w.powerOff(n, "loss")
	case scenario.PowerOn:
		w.powerOn(n)
	case scenario.NetworkOff:
		w.logf("node", "%s is cut off from the network", n.name)
		n.netOff = true
	case scenario.NetworkOn:
		w.logf("node", "%s is reconnected", n.name)
		n.netOff = false
	case scenario.Partition:
		var parts []string
		for _, g := range e.Groups {
			parts = append(parts, strings.Join(g, ","))
		}
		w.logf("node", "network partition: %s / the rest", strings.Join(parts, " / "))
		for _, x := range w.nodes {
			x.group = 0
		}
		for i, grp := range e.Groups {
			for _, name := range grp {
				w.byName[name].group = i + 1
			}
		}
	case scenario.Heal:
		w.logf("node", "network healed")
		for _, x := range w.nodes {
			x.group = 0
			x.netOff = false
		}
	case scenario.Reboot, scenario.Shutdown:
		what := string(e.Kind)
		if n.power != powerOn || n.shutdown {
			w.logf("node", "%s %s: the host is not up; nothing happens", what, n.name)
			return
		}
		n.shutdown, n.reboot = true, e.Kind == scenario.Reboot
		if n.reachable() && w.mgrNode != "" {
			w.logf("node", "%s begins a graceful %s", n.name, what)
			w.toManager(mgrIn{in: control.Input{Shutdown: &manager.NodeShutdown{Node: n.name, Reboot: n.reboot}}})
			return
		}
		w.logf("node", "%s begins a graceful %s without the cluster: stopping its guests locally", n.name, what)
		for _, g := range n.running() {
			w.removeVM(n, g)
		}
		reboot := n.reboot
		w.powerOff(n, "clean")
		if reboot {
			w.push(&item{t: w.now + RebootDown, kind: itPowerOn, node: n.name})
		}
	case scenario.ServiceDies, scenario.Hang:
		w.guestFault(e.Guest, e.Kind == scenario.Hang)
	case scenario.Crash, scenario.Panic:
		reason, how := "", "crashed"
		if e.Kind == scenario.Panic {
			reason, how = "guest panicked", "panicked (pvpanic)"
		}
		for _, x := range w.nodes {
			v := x.vms[e.Guest]
			if v == nil || v.state == vmIncoming || v.state == vmStarting {
				continue
			}
			w.logf("hypervisor", "%s %s on %s", e.Guest, how, x.name)
			if v.migrating != "" {
				if t := w.byName[v.migrating]; t != nil && t.vms[e.Guest] != nil {
					w.removeVM(t, e.Guest)
				}
				w.reply(x, v.order, hostctl.Crashed, "guest crashed")
			}
			w.removeVM(x, e.Guest)
			w.crashed(x, e.Guest, reason)
			return
		}
		w.logf("hypervisor", "%s %s: it is not running; nothing happens", e.Kind, e.Guest)
	case scenario.AgentRestart:
		if n.power != powerOn || !n.agentUp {
			w.logf("node", "agent restart on %s: no agent running; nothing happens", n.name)
			return
		}
		n.agentUp = false
		n.agentDownAt = w.now
		n.reported = n.running()
		w.logf("node", "agent on %s restarts", n.name)
		w.push(&item{t: w.now + AgentRestart, kind: itAgentBack, node: n.name})
	case scenario.FenceFails:
		w.logf("fence", "fence device of %s starts failing", n.name)
		n.fenceFail = true
	case scenario.FenceWorks:
		w.logf("fence", "fence device of %s works again", n.name)
		n.fenceFail = false
	default:
		c := manager.Command{Guest: e.Guest, Node: e.Node}
		switch e.Kind {
		case scenario.MaintenanceOn:
			c.Kind = manager.CmdMaintenanceOn
		case scenario.MaintenanceOff:
			c.Kind = manager.CmdMaintenanceOff
		case scenario.ConfirmOff:
			c.Kind = manager.CmdConfirmOff
		case scenario.Start:
			c.Kind = manager.CmdStart
		case scenario.Stop:
			c.Kind = manager.CmdStop
		case scenario.Disable:
			c.Kind = manager.CmdDisable
		case scenario.Migrate:
			c.Kind = manager.CmdMigrate
		case scenario.Relocate:
			c.Kind = manager.CmdRelocate
		default:
			panic("sim: unknown event kind " + string(e.Kind))
		}
		if w.mgrNode == "" {
			w.logf("manager", "operator: %s: rejected: no quorate side, so no manager; restore quorum first", c)
			return
		}
		if c.Kind == manager.CmdConfirmOff {
			// The operator's word is only as good as the world: a node that
			// is really off has lost the incarnation that ran its guests;
			// one that runs makes the confirmation a lie the checker sees.
			if n := w.byName[c.Node]; n.power == powerOff {
				n.epoch++
				w.logf("node", "operator checked %s: it is off", n.name)
			} else {
				w.logf("node", "operator confirms %s off, but it is not", n.name)
			}
		}
		w.logf("manager", "operator: %s", c)
		w.toManager(mgrIn{in: control.Input{Command: &c}})
	}
}

// refresh recomputes the sides, quorum, leases, the manager's seat and
// self-fence countdowns after any change.
func (w *World) refresh() {
	// A side: a node cut off alone (solo), or a partition group.
	type side struct {
		solo  string
		group int
	}
	key := func(n *simNode) side {
		if n.netOff {
			return side{solo: n.name}
		}
		return side{group: n.group}
	}
	// The nodes that are on, by side; the whole network (group 0) counted
	// apart, without a map: refresh runs after every item.
	whole := 0
	var size map[side]int
	for _, n := range w.nodes {
		switch {
		case n.power != powerOn:
		case !n.netOff && n.group == 0:
			whole++
		default:
			if size == nil {
				size = map[side]int{}
			}
			size[key(n)]++
		}
	}
	var qkey side
	w.quorate = 2*whole > len(w.nodes)
	for k, c := range size {
		if 2*c > len(w.nodes) {
			qkey, w.quorate = k, true
		}
	}
	var store []mgrIn
	wall := w.wall()
	for _, n := range w.nodes {
		n.inQ = n.power == powerOn && w.quorate && key(n) == qkey
		if n.power == powerOn {
			n.mon.Observe(wall, n.inQ)
			if d, cut := n.mon.Deadline(); cut && len(n.vms) > 0 && !n.mon.Freeze() {
				at := d.Sub(Epoch)
				if at < w.now {
					at = w.now
				}
				if !n.sfSched || n.sfAt != at {
					n.sfSched, n.sfAt = true, at
					w.push(&item{t: at, kind: itSelfFence, node: n.name})
				}
			}
		}
		renewing := n.inQ && n.agentUp
		switch {
		case n.leaseLive && renewing:
			n.hasExpire = false
		case n.leaseLive && w.quorate:
			if !n.hasExpire {
				n.hasExpire = true
				n.expireAt = w.now + w.tm.LeaseTTL
				n.leaseGen++
				w.push(&item{t: n.expireAt, kind: itLeaseExpire, node: n.name, op: n.leaseGen})
			}
		case n.leaseLive:
			n.hasExpire = false // no quorum: leases neither renew nor expire
		case renewing:
			n.leaseLive = true
			w.rev++
			n.since = w.rev
			n.hasExpire = false
			r := w.report0(n)
			store = append(store, mgrIn{in: control.Input{NodeUp: &r}})
		}
	}
	// The manager's seat: kept while its node stays in the quorate side with
	// a live agent, else the lowest-named such node.
	seat := ""
	if cur := w.byName[w.mgrNode]; cur != nil && cur.reachable() {
		seat = cur.name
	} else {
		// The lowest-named reachable node that is not a witness; a witness
		// only when no other node of the quorate side is reachable.
		for _, n := range w.nodes {
			if n.reachable() && (seat == "" || w.byName[seat].witness && !n.witness) {
				seat = n.name
			}
		}
	}
	if seat != w.mgrNode {
		if seat == "" {
			w.logf("manager", "no quorate side: no manager; nothing is fenced, placed or recovered")
			w.mgrNode = ""
			return
		}
		if w.mgrNode != "" || w.steps > 0 {
			data, err := json.Marshal(w.mgr)
			if err != nil {
				panic(err)
			}
			st, err := manager.Restore(data)
			if err != nil {
				panic(err)
			}
			w.mgr = st
			w.sh = nil
			w.logf("manager", "manager now runs on %s (state restored from the store)", seat)
		} else {
			w.logf("manager", "manager runs on %s", seat)
		}
		w.mgrNode = seat
		var sync manager.Sync
		for _, n := range w.nodes {
			if n.leaseLive {
				r := w.report0(n)
				sync.Nodes = append(sync.Nodes, r)
				if !r.Stale {
					// Its current inventory is in the Sync: inventories it
					// queued earlier (agent restarts without a manager) are
					// stale and dropped.
					n.outbox = slices.DeleteFunc(n.outbox, func(in control.Input) bool { return in.Inventory != nil })
				}
			}
		}
		w.mq = append(w.takeOver(sync), w.mq...)
	} else {
		w.mq = append(w.mq, store...)
	}
	for _, n := range w.nodes {
		if n.reachable() && len(n.inbox) > 0 && w.mgrNode != "" {
			w.runInbox(n)
		}
	}
}

func (w *World) report0(n *simNode) manager.NodeReport {
	r := manager.NodeReport{Name: n.name, Memory: n.memory, CPUs: n.cpus, CPUModels: n.cpuModels, BootID: fmt.Sprint(n.bootID), BootedAt: Epoch.Add(n.bootedAt), Witness: n.witness}
	if n.reachable() {
		r.Running = n.running()
	} else {
		r.Stale = true
	}
	return r
}
