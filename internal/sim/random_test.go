package sim

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/scenario"
)

var (
	simRuns = flag.Int("sim.runs", 2000, "randomized fault-injection runs")
	simSeed = flag.Uint64("sim.seed", 1, "first seed of the randomized runs")
	simShow = flag.Bool("sim.show", false, "print the timeline of every randomized run")
)

// genScenario writes a random scenario as YAML: a random cluster, domains,
// guests and a burst of faults and commands, then a recovery phase (heal,
// fence devices work, every node powered on and out of maintenance) and a
// long settle.
func genScenario(seed uint64) string {
	r := rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15+1))
	var b strings.Builder
	pick := func(s ...string) string { return s[r.IntN(len(s))] }
	nn := 2 + r.IntN(6)
	nodes := make([]string, nn)
	mem := make([]int, nn)
	on := make([]bool, nn)
	// Placement policies come from their own source, so the rest of a
	// seed's scenario is the same with or without them.
	rp := rand.New(rand.NewPCG(seed^0x5eed, seed+7))
	policies := rp.IntN(3) == 0
	reserve := ""
	if policies && rp.IntN(3) == 0 {
		reserve = "  reserve: " + []string{"hosts 1", "percent 25", "hosts 2"}[rp.IntN(3)] + "\n"
	}
	if policies && rp.IntN(2) == 0 {
		reserve += fmt.Sprintf("  balance: %s\n  balance_threshold: %d\n  balance_max_moves: %d\n  balance_cooldown: %ds\n",
			[]string{"auto", "auto", "manual"}[rp.IntN(3)], 5+rp.IntN(30), 1+rp.IntN(3), 30+rp.IntN(600))
	}
	// Capacity keys (host reserves, guest overhead, vCPUs, CPU models)
	// come from a third source, for a quarter of the runs.
	rc := rand.New(rand.NewPCG(seed^0xc9c9, seed+13))
	capOn := rc.IntN(4) == 0
	var capa model.Capacity
	if capOn {
		if rc.IntN(3) > 0 {
			capa.CPUOvercommit = []float64{1, 2, 4, 1.5}[rc.IntN(4)]
			capa.CPUReserve = rc.IntN(2)
			reserve += fmt.Sprintf("  cpu_overcommit: %v\n  cpu_reserve: %d\n", capa.CPUOvercommit, capa.CPUReserve)
		}
		if capa.MemoryReserve = int64(rc.IntN(3)) * 512 * model.MiB; capa.MemoryReserve > 0 {
			reserve += fmt.Sprintf("  memory_reserve: %dMiB\n", capa.MemoryReserve/model.MiB)
		}
		if capa.GuestOverhead = int64(rc.IntN(3)) * 128 * model.MiB; capa.GuestOverhead > 0 {
			reserve += fmt.Sprintf("  guest_overhead: %dMiB\n", capa.GuestOverhead/model.MiB)
		}
		if capa.CPUModel = []string{"", "", "x86-64-v2", "host"}[rc.IntN(4)]; capa.CPUModel != "" {
			reserve += "  cpu_model: " + capa.CPUModel + "\n"
		}
	}
	cpus := make([]int, nn)
	models := make([][]string, nn)
	fencing := pick("agent", "agent", "watchdog")
	quorumLoss := "stop"
	if fencing == "agent" {
		quorumLoss = pick("stop", "freeze")
	}
	fmt.Fprintf(&b, "name: random seed %d\ncluster:\n%s  fencing: %s\n  shutdown_policy: %s\n  quorum_loss: %s\n  preemption: %s\n  settle: 900s\n  nodes:\n",
		seed, reserve, fencing, pick("migrate", "migrate", "stop", "freeze"), quorumLoss, pick("off", "on"))
	for i := range nodes {
		nodes[i] = fmt.Sprintf("n%d", i+1)
		mem[i] = 4 + r.IntN(13)
		on[i] = r.IntN(8) > 0
		p := "on"
		if !on[i] {
			p = "off"
		}
		extra := ""
		if capOn {
			cpus[i] = 2 + rc.IntN(7)
			extra = fmt.Sprintf(", cpus: %d", cpus[i])
			if rc.IntN(3) > 0 {
				models[i] = model.CPULevels[:1+rc.IntN(len(model.CPULevels))]
				extra += ", cpu_models: [" + strings.Join(models[i], ", ") + "]"
			}
		}
		fmt.Fprintf(&b, "    - {name: %s, memory: %dGiB, power: %s%s}\n", nodes[i], mem[i], p, extra)
	}
	// What the capacity keys leave a guest on node i (MiB, thousandths of
	// a vCPU), and the cluster's CPU model.
	nodeMiB := func(i int) int64 { return int64(mem[i])*1024 - capa.MemoryReserve/model.MiB }
	var maxMiB, maxCPU int64
	for i := range nodes {
		maxMiB, maxCPU = max(maxMiB, nodeMiB(i)), max(maxCPU, capa.CPUCapacity(cpus[i]))
	}
	clusterModel := capa.CPUModel
	if clusterModel == "" {
		clusterModel = model.CommonCPULevel(models)
	}
	usedMiB := make([]int64, nn)
	usedCPU := make([]int64, nn)
	// Witnesses: they vote and take no guest; faults and commands may name
	// them like any node.
	all := nodes
	if r.IntN(3) == 0 {
		nw := 1 + r.IntN(2)
		all = append([]string{}, nodes...)
		for i := 0; i < nw; i++ {
			name := fmt.Sprintf("w%d", i+1)
			all = append(all, name)
			fmt.Fprintf(&b, "    - {name: %s, witness: true}\n", name)
		}
	}
	nd := r.IntN(4)
	type dom struct {
		name       string
		members    []int
		restricted bool
	}
	var doms []dom
	if nd > 0 {
		b.WriteString("domains:\n")
	}
	for i := 0; i < nd; i++ {
		perm := r.Perm(nn)[:1+r.IntN(nn)]
		d := dom{name: fmt.Sprintf("d%d", i), members: perm, restricted: r.IntN(3) == 0}
		doms = append(doms, d)
		fmt.Fprintf(&b, "  - name: %s\n    restricted: %v\n    nofailback: %v\n", d.name, d.restricted, r.IntN(4) == 0)
		switch r.IntN(3) {
		case 0:
			var ms []string
			for _, m := range perm {
				ms = append(ms, nodes[m])
			}
			fmt.Fprintf(&b, "    members: [%s]\n", strings.Join(ms, ", "))
		case 1:
			var ms []string
			for _, m := range perm {
				ms = append(ms, nodes[m])
			}
			fmt.Fprintf(&b, "    ordered: true\n    members: [%s]\n", strings.Join(ms, ", "))
		default:
			var ms []string
			for _, m := range perm {
				ms = append(ms, fmt.Sprintf("{node: %s, priority: %d}", nodes[m], r.IntN(3)))
			}
			fmt.Fprintf(&b, "    members: [%s]\n", strings.Join(ms, ", "))
		}
	}
	ng := 1 + r.IntN(14)
	used := make([]int, nn)
	guests := make([]string, ng)
	at := make([]int, ng) // node index of a started guest at t=0, or -1
	b.WriteString("guests:\n")
	for i := range guests {
		guests[i] = fmt.Sprintf("g%02d", i)
		at[i] = -1
		gm := 1 + r.IntN(4)
		gcpus, gmodel := 1, ""
		if capOn {
			for gm > 1 && int64(gm)*1024+capa.GuestOverhead/model.MiB > maxMiB {
				gm--
			}
			gcpus = 1 + rc.IntN(3)
			if capa.CPUsOn() {
				gcpus = min(gcpus, int(maxCPU/1000))
			}
			if rc.IntN(5) == 0 {
				gmodel = []string{"x86-64-v1", "x86-64-v3", "host"}[rc.IntN(3)]
			}
		}
		fmt.Fprintf(&b, "  - name: %s\n    memory: %dGiB\n", guests[i], gm)
		if capOn {
			fmt.Fprintf(&b, "    cpus: %d\n", gcpus)
			if gmodel != "" {
				fmt.Fprintf(&b, "    cpu_model: %s\n", gmodel)
			}
		}
		needMiB := int64(gm)*1024 + capa.GuestOverhead/model.MiB
		effModel := gmodel
		if effModel == "" {
			effModel = clusterModel
		}
		if policies && i > 0 && rp.IntN(4) == 0 {
			fmt.Fprintf(&b, "    after: [%s]\n", guests[rp.IntN(i)])
		}
		di := -1
		if len(doms) > 0 && r.IntN(2) == 0 {
			di = r.IntN(len(doms))
			fmt.Fprintf(&b, "    domain: %s\n", doms[di].name)
		}
		state := pick("started", "started", "started", "started", "stopped", "disabled")
		fmt.Fprintf(&b, "    state: %s\n", state)
		if r.IntN(3) > 0 {
			n := r.IntN(nn)
			ok := on[n] || state != "started"
			if di >= 0 && doms[di].restricted {
				in := false
				for _, m := range doms[di].members {
					in = in || m == n
				}
				ok = ok && in
			}
			if state == "started" && used[n]+gm > mem[n] {
				ok = false
			}
			if capOn && state == "started" && (usedMiB[n]+needMiB > nodeMiB(n) ||
				(capa.CPUsOn() && usedCPU[n]+int64(gcpus)*1000 > capa.CPUCapacity(cpus[n])) ||
				(effModel != "" && effModel != model.CPUModelHost && len(models[n]) > 0 && !slices.Contains(models[n], effModel))) {
				ok = false
			}
			if ok {
				if state == "started" {
					used[n] += gm
					usedMiB[n] += needMiB
					usedCPU[n] += int64(gcpus) * 1000
					at[i] = n
				}
				fmt.Fprintf(&b, "    node: %s\n", nodes[n])
			}
		}
		fmt.Fprintf(&b, "    recovery: %s\n    max_restarts: %d\n    max_relocations: %d\n    migratable: %v\n    restart_window: %s\n    priority: %d\n",
			pick("restart", "restart", "relocate", "disable"), r.IntN(3), r.IntN(3), r.IntN(4) > 0, pick("10m", "30s", "2m"), 100*r.IntN(4))
		if r.IntN(3) == 0 {
			fmt.Fprintf(&b, "    guest_agent: true\n    health: [{tcp: 22, interval: %ds, timeout: 1s, failures: %d, start_grace: %ds}]\n", 2+r.IntN(10), 1+r.IntN(3), r.IntN(60))
		}
		if r.IntN(3) == 0 {
			fmt.Fprintf(&b, "    faults: {start_failures: %d, migrate_failures: %d, stop_fails: %v}\n", r.IntN(3), r.IntN(2), r.IntN(12) == 0)
		}
	}
	if policies {
		writeRules(&b, rp, nodes, guests, at)
	}
	b.WriteString("events:\n")
	ne := 1 + r.IntN(14)
	t := 0
	// off: the node's plug was pulled by an event of this burst and no event
	// since can have powered it on: an operator may confirm it off (the
	// world would catch a confirmation of a node that runs).
	off := map[string]bool{}
	for i := 0; i < ne; i++ {
		t += r.IntN(40)
		n := all[r.IntN(len(all))]
		g := guests[r.IntN(ng)]
		var do string
		switch r.IntN(20) {
		case 0, 1:
			do = "power off " + n
		case 2:
			do = "power on " + n
		case 3:
			do = "network off " + n
		case 4:
			do = "network on " + n
		case 5:
			perm := r.Perm(len(all))
			k := 1 + r.IntN(len(all)-1)
			var a, c []string
			for j, x := range perm {
				if j < k {
					a = append(a, all[x])
				} else {
					c = append(c, all[x])
				}
			}
			do = "partition " + strings.Join(a, ",") + " / " + strings.Join(c, ",")
		case 6:
			do = "heal"
		case 7:
			do = "reboot " + n
		case 8:
			do = "shutdown " + n
		case 9, 10:
			do = "crash " + g
		case 11:
			do = "agent restart " + n
		case 12:
			do = "fence " + n + " " + pick("fails", "works")
		case 13:
			do = "maintenance " + n + " " + pick("on", "off")
		case 14:
			do = pick("start", "stop", "disable", "start") + " " + g
		case 15:
			do = pick("migrate", "relocate") + " " + g + " " + n
		case 16:
			if off[n] {
				do = "confirm off " + n
			} else {
				do = "crash " + g
			}
		case 17:
			// Back before it was fenced: its device fails while it is cut
			// off (or dead), and it comes back before the device works.
			back := pick("network on ", "heal", "power on ")
			cut := "network off "
			if back == "power on " {
				cut = "power off "
			}
			fmt.Fprintf(&b, "  - {at: %ds, do: %q}\n", t, "fence "+n+" fails")
			fmt.Fprintf(&b, "  - {at: %ds, do: %q}\n", t, cut+n)
			t += 5 + r.IntN(40)
			if back == "heal" {
				do = "heal"
			} else {
				do = back + n
			}
		default:
			do = pick("crash ", "crash ", "panic ", "hang ") + g
			if r.IntN(4) == 0 {
				do = "service " + g + " dies"
			}
		}
		if strings.HasPrefix(do, "power off ") && r.IntN(4) == 0 {
			// Its fence device fails as it dies, and the operator, having
			// seen it dark, confirms it off a little later.
			fmt.Fprintf(&b, "  - {at: %ds, do: %q}\n", t, "fence "+n+" fails")
			fmt.Fprintf(&b, "  - {at: %ds, do: %q}\n", t, do)
			t += 12 + r.IntN(20)
			do = "confirm off " + n
		}
		switch {
		case strings.HasPrefix(do, "power off "), strings.HasPrefix(do, "confirm off "):
			off[n] = true
		case strings.HasPrefix(do, "power on "), strings.HasPrefix(do, "reboot "), strings.HasPrefix(do, "shutdown "):
			off[n] = false
		}
		fmt.Fprintf(&b, "  - {at: %ds, do: %q}\n", t, do)
	}
	// Faults stop: everything is repaired.
	t += 30
	fmt.Fprintf(&b, "  - {at: %ds, do: heal}\n", t)
	for _, n := range all {
		fmt.Fprintf(&b, "  - {at: %ds, do: fence %s works}\n", t, n)
	}
	for _, n := range all {
		fmt.Fprintf(&b, "  - {at: %ds, do: power on %s}\n", t+1, n)
	}
	// Again once shutdowns and reboots still in flight are over.
	for _, n := range all {
		fmt.Fprintf(&b, "  - {at: %ds, do: power on %s}\n", t+200, n)
	}
	for _, n := range all {
		fmt.Fprintf(&b, "  - {at: %ds, do: maintenance %s off}\n", t+320, n)
	}
	// Shutdowns that waited for room may complete once maintenance ends.
	for _, n := range all {
		fmt.Fprintf(&b, "  - {at: %ds, do: power on %s}\n", t+500, n)
	}
	return b.String()
}

// writeRules adds random affinity rules that the guests started at t=0 keep
// (at: their node index, -1 when not started or not placed).
func writeRules(b *strings.Builder, r *rand.Rand, nodes, guests []string, at []int) {
	if len(guests) < 2 {
		return
	}
	var rules []model.Rule
	soft := func() bool { return r.IntN(3) == 0 }
	for k := 0; k < 1+r.IntN(3); k++ {
		rule := model.Rule{Name: fmt.Sprintf("r%d", k)}
		switch r.IntN(4) {
		case 0, 1: // apart: guests on distinct nodes at t=0
			rule.Kind, rule.Soft = model.AffinityApart, soft()
			seen := map[int]bool{}
			for _, i := range r.Perm(len(guests))[:2+r.IntN(min(3, len(guests)-1))] {
				if at[i] >= 0 && seen[at[i]] {
					continue
				}
				if at[i] >= 0 {
					seen[at[i]] = true
				}
				rule.Guests = append(rule.Guests, guests[i])
			}
			if len(rule.Guests) < 2 {
				continue
			}
		case 2: // together: soft, or hard between guests not started at t=0
			p := r.Perm(len(guests))[:2]
			rule.Kind, rule.Soft = model.AffinityTogether, !(at[p[0]] < 0 && at[p[1]] < 0 && r.IntN(2) == 0)
			rule.Guests = []string{guests[p[0]], guests[p[1]]}
		default: // on/off hosts, keeping the t=0 node
			i := r.IntN(len(guests))
			hs := r.Perm(len(nodes))[:1+r.IntN(len(nodes)-1)]
			rule.Kind, rule.Soft = []model.AffinityKind{model.AffinityOn, model.AffinityOff}[r.IntN(2)], soft()
			in := false
			for _, h := range hs {
				in = in || h == at[i]
				rule.Hosts = append(rule.Hosts, nodes[h])
			}
			if at[i] >= 0 && in != (rule.Kind == model.AffinityOn) {
				rule.Kind = map[model.AffinityKind]model.AffinityKind{model.AffinityOn: model.AffinityOff, model.AffinityOff: model.AffinityOn}[rule.Kind]
			}
			rule.Guests = []string{guests[i]}
		}
		rules = append(rules, rule)
	}
	if model.CheckRules(rules, nil, nil) != nil {
		// A hard apart between guests bound by hard together rules.
		for i := range rules {
			if rules[i].Kind == model.AffinityApart {
				rules[i].Soft = true
			}
		}
	}
	if len(rules) == 0 {
		return
	}
	b.WriteString("affinity:\n")
	for _, rule := range rules {
		hosts := ""
		if len(rule.Hosts) > 0 {
			hosts = ", hosts: [" + strings.Join(rule.Hosts, ", ") + "]"
		}
		fmt.Fprintf(b, "  - {name: %s, kind: %s, guests: [%s]%s, strength: %s}\n", rule.Name, rule.Kind, strings.Join(rule.Guests, ", "), hosts, rule.Strength())
	}
}

// hardFit reports whether the hard affinity rules let guest g run on node
// now, given where the other guests run (in the hypervisors), and the memory
// g needs there (its hard together partners that run nowhere come with it).
func hardFit(w *World, g *manager.Guest, node string) (bool, []*manager.Guest) {
	runsOn := func(name string) string {
		for _, n := range w.nodes {
			if v := n.vms[name]; v != nil {
				return n.name
			}
		}
		return ""
	}
	need := []*manager.Guest{g}
	for _, rule := range w.sc.Rules {
		if rule.Soft || !slices.Contains(rule.Guests, g.Spec.Name) {
			continue
		}
		switch rule.Kind {
		case model.AffinityOn, model.AffinityOff:
			if slices.Contains(rule.Hosts, node) != (rule.Kind == model.AffinityOn) {
				return false, nil
			}
		case model.AffinityApart:
			for _, o := range rule.Guests {
				if o != g.Spec.Name && runsOn(o) == node {
					return false, nil
				}
			}
		case model.AffinityTogether:
			for _, o := range rule.Guests {
				if o == g.Spec.Name {
					continue
				}
				switch on := runsOn(o); {
				case on != "" && on != node:
					return false, nil
				case on == "" && w.mgr.Guest(o).Spec.State == model.DesiredStarted:
					if !allowedIn(w.mgr, w.mgr.Guest(o), node) {
						return false, nil
					}
					if og := w.mgr.Guest(o); !slices.Contains(need, og) {
						need = append(need, og)
					}
				}
			}
		}
	}
	return true, need
}

// capFit reports whether the guests of need fit on n beside its copies and
// the memory frozen there, with the scenario's capacity keys (host memory
// reserve, guest overhead, vCPUs, CPU models), computed from the world.
func capFit(w *World, n *simNode, frozen int64, need []*manager.Guest) bool {
	c := w.sc.Capacity
	mem := n.used + frozen + int64(len(n.vms))*c.GuestOverhead
	var cpus int64
	for name := range n.vms {
		cpus += int64(w.guests[name].spec.CPUs) * 1000
	}
	for _, g := range w.mgr.Guests {
		if g.State == manager.GuestFrozen && g.Node == n.name {
			mem += c.GuestOverhead
			cpus += int64(g.Spec.CPUs) * 1000
		}
	}
	for _, g := range need {
		mem += g.Spec.Memory + c.GuestOverhead
		cpus += int64(g.Spec.CPUs) * 1000
		m := g.Spec.CPUModel
		if m == "" {
			m = w.mgr.ClusterCPUModel()
		}
		if m != "" && m != model.CPUModelHost && len(n.cpuModels) > 0 && !slices.Contains(n.cpuModels, m) {
			return false
		}
	}
	return mem <= n.memory-c.MemoryReserve && (!c.CPUsOn() || cpus <= c.CPUCapacity(n.cpus))
}

// depsRun reports whether every guest g starts after is met as
// docs/manager.md says: started and running on a simulated hypervisor, or
// stopped or disabled by the operator (a failed guest, even one still
// running after a failed stop, is not).
func depsRun(w *World, g *manager.Guest) bool {
	for _, d := range g.Spec.After {
		dg := w.mgr.Guest(d)
		if dg.Spec.State != model.DesiredStarted {
			continue
		}
		runs := false
		for _, n := range w.nodes {
			if v := n.vms[d]; v != nil && v.state == vmRunning {
				runs = true
			}
		}
		if !runs || dg.State != manager.GuestStarted {
			return false
		}
	}
	return true
}

// liveness checks that once faults stopped and the cluster settled every
// guest that should run runs, unless no node has room for it, and that the
// manager's view matches the hypervisors.
func liveness(w *World, expects *[]string) []string {
	var bad []string
	m := w.Manager()
	if w.mgrNode == "" {
		return []string{"no manager at the end although every node is on"}
	}
	frozen := map[string]int64{}
	for _, g := range m.Guests {
		if g.State == manager.GuestFrozen {
			frozen[g.Node] += g.Spec.Memory
		}
	}
	for _, g := range m.Guests {
		name := g.Spec.Name
		where := ""
		for _, n := range w.nodes {
			if v := n.vms[name]; v != nil && v.state == vmRunning {
				where = n.name
			}
		}
		switch g.State {
		case manager.GuestStarted:
			if g.Op == nil && where != g.Node {
				bad = append(bad, fmt.Sprintf("%s is started on %s for the manager but runs on %q", name, g.Node, where))
			}
			continue
		case manager.GuestFailed, manager.GuestDisabled, manager.GuestStopped:
			if g.State != manager.GuestFailed && where != "" {
				bad = append(bad, fmt.Sprintf("%s is %s but runs on %s", name, g.State, where))
			}
			continue
		}
		if g.Spec.State != model.DesiredStarted {
			continue
		}
		if n := m.Node(g.Node); g.State == manager.GuestFrozen && n != nil && n.Shutdown != nil {
			continue // its node's shutdown waits for a guest that would not stop
		}
		// recovering, fencing or frozen after everything was repaired:
		// acceptable only when no node can take it.
		room := false
		if !depsRun(w, g) {
			continue // it waits for a guest it starts after
		}
		for _, n := range w.nodes {
			mn := m.Node(n.name)
			if mn.Status != manager.NodeOnline || mn.Maintenance || mn.Shutdown != nil {
				continue
			}
			if !allowedIn(m, g, n.name) || (g.Need == manager.NeedMove && n.name == g.Node) {
				continue
			}
			if ok, need := hardFit(w, g, n.name); ok && capFit(w, n, frozen[n.name], need) {
				room = true
			}
		}
		if room || g.State == manager.GuestFencing {
			bad = append(bad, fmt.Sprintf("%s should run but is %s on %s (room exists)", name, g.State, g.Node))
			*expects = append(*expects, fmt.Sprintf("  - {at: end, guest: %s, state: started}\n", name))
		}
	}
	for _, n := range w.nodes {
		if mn := m.Node(n.name); mn.Status == manager.NodeOnline && n.power != powerOn {
			bad = append(bad, fmt.Sprintf("node %s is online for the manager but powered off", n.name))
		}
		for name, v := range n.vms {
			if g := m.Guest(name); v.state == vmRunning && !(g.Running && g.Node == n.name) {
				bad = append(bad, fmt.Sprintf("%s runs on %s but the manager has it %s on %s (running %v)", name, n.name, g.State, g.Node, g.Running))
			}
		}
		if mn := m.Node(n.name); mn.Reported() == "offline" && n.power == powerOn && n.inQ {
			bad = append(bad, fmt.Sprintf("node %s is %s (%s) although it is powered on and connected", n.name, mn.Reported(), mn.Status))
			*expects = append(*expects, fmt.Sprintf("  - {at: end, node: %s, state: online}\n", n.name))
		}
	}
	return bad
}

func allowedIn(m *manager.State, g *manager.Guest, node string) bool {
	if g.Spec.Domain == "" {
		return true
	}
	for _, d := range m.Domains {
		if d.Name != g.Spec.Domain {
			continue
		}
		if !d.Restricted {
			return true
		}
		for _, mb := range d.Members {
			if mb.Node == node {
				return true
			}
		}
		return false
	}
	return true
}

// TestRandomFaults is a CTS-like randomized test: random clusters, domains,
// guests and fault sequences; the four invariants at every step; and, once
// the faults stop, every guest that should run runs where room exists. A
// failing seed prints a scenario file reproducing it.
func TestRandomFaults(t *testing.T) {
	runs := *simRuns
	if testing.Short() {
		runs = 200
	} else if raceEnabled && !flagSet("sim.runs") {
		runs = 1000
	}
	failed := 0
	for i := 0; i < runs && failed < 3; i++ {
		seed := *simSeed + uint64(i)
		src := genScenario(seed)
		sc, err := scenario.Parse(fmt.Sprintf("seed-%d.yaml", seed), []byte(src))
		if err != nil {
			t.Fatalf("seed %d: generated scenario does not load: %v\n%s", seed, err, src)
		}
		w := New(sc, Options{NoTimeline: !*simShow})
		if p := runSafe(w); p != "" {
			failed++
			tl := w.Timeline
			if len(tl) > 80 {
				tl = tl[len(tl)-80:]
			}
			for _, l := range tl {
				t.Logf("%s %s %s", fmtT(l.T), l.Source, l.Msg)
			}
			t.Errorf("seed %d panicked: %s\nreproduce with this scenario:\n%s", seed, p, src)
			continue
		}
		if *simShow {
			r := &Result{Scenario: sc, Timeline: w.Timeline}
			var buf strings.Builder
			r.WriteText(&buf)
			t.Log(buf.String())
		}
		problems := append([]string{}, w.Violations...)
		var expects []string
		problems = append(problems, liveness(w, &expects)...)
		if len(expects) > 0 {
			src += "expect:\n" + strings.Join(expects, "")
		}
		if len(problems) > 0 {
			failed++
			t.Errorf("seed %d failed:\n  %s\nreproduce with this scenario (haven sim run FILE):\n%s", seed, strings.Join(problems, "\n  "), src)
		}
	}
}

func runSafe(w *World) (msg string) {
	defer func() {
		if p := recover(); p != nil {
			msg = fmt.Sprint(p)
		}
	}()
	w.run(nil, func(time.Duration) {}, func() {})
	return ""
}

// TestRoundTripIsInvisible: persisting and restoring the manager's state
// after every step (a new manager each time) changes nothing in what
// happens, so everything the manager needs is in its persisted state.
func TestRoundTripIsInvisible(t *testing.T) {
	runs := 100
	if testing.Short() || raceEnabled {
		runs = 25
	}
	for i := 0; i < runs; i++ {
		seed := *simSeed + uint64(i)
		src := genScenario(seed)
		sc, err := scenario.Parse("rt.yaml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		a := Run(sc, Options{})
		b := Run(sc, Options{RoundTrip: true})
		var x, y strings.Builder
		a.WriteText(&x)
		b.WriteText(&y)
		if x.String() != y.String() {
			t.Fatalf("seed %d: timelines differ with a restore after every step:\n%s\nscenario:\n%s", seed, diff(x.String(), y.String()), src)
		}
	}
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
