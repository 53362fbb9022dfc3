// Package placement owns the choice of a node for a guest: the pure rules of
// SCENARIOS.md (tiers from failover domains, memory fit, projected use compared
// exactly as fractions, fewest guests, node name). It reads an immutable
// snapshot and returns a plan; it never changes cluster state.
package placement

import (
	"math/bits"
	"sort"

	"github.com/haven-ha/haven/internal/model"
)

// Node is one node as placement sees it.
type Node struct {
	Name     string
	Memory   int64 // bytes available to guests
	Used     int64 // bytes counted on the node (running, starting, frozen, arriving, stopping)
	Guests   int   // guests counted on the node
	Eligible bool  // online, not in maintenance, not shutting down
	// CPUs is the node's vCPU capacity and CPUUsed the vCPUs counted there,
	// in thousandths of a vCPU; they matter only to requests with CPUs > 0.
	CPUs    int64
	CPUUsed int64
}

// Snapshot is the cluster at the moment of planning. Nodes are sorted by name
// in byte order; requests refer to nodes by index into Nodes.
type Snapshot struct {
	Nodes []Node
	// Where returns the nodes a guest named in an affinity rule counts on
	// (running, starting, stopping, frozen, arriving); nil: no rules. It is
	// asked only about the partners of guests being placed.
	Where func(guest string) []int
	// Waiting returns the memory and vCPUs (thousandths) of a guest named
	// in an affinity rule that should run but counts nowhere (0: it runs,
	// or should not). Preemption makes room for a hard together member's
	// waiting partners too, even those that do not ask for a node in this
	// plan. Nil: none wait.
	Waiting func(guest string) (mem, cpus int64)
}

// Request asks for a node for one guest.
type Request struct {
	Guest  string
	Memory int64
	// CPUs are its vCPUs in thousandths; 0: vCPUs are not counted for it.
	CPUs int64
	// Priority orders requests placed together: highest first, then guest
	// name in byte order.
	Priority int
	// Tiers lists node indices, most preferred tier first. Nil means one tier
	// holding every node.
	Tiers [][]int
	// MaxTier, when above zero, keeps only Tiers[:MaxTier] (failback looks
	// only at tiers strictly more preferred than the current node's).
	MaxTier int
	// Optional marks a running guest's move (failback, return, evacuation,
	// rebalancing): when its hard together group cannot move as one, it
	// stays where it runs and the members that need a node are placed
	// beside it.
	Optional bool
	// Tried are nodes already tried in this run of moves. When every
	// candidate has been tried, the list is ignored except for LastFailed.
	Tried      []int
	LastFailed int // -1: none
	// Prefer is taken when it is a candidate (-1: none). With PreferOnly no
	// other node is considered.
	Prefer     int
	PreferOnly bool
	// Reserved is memory (ReservedCPUs: vCPUs) of this guest already
	// counted on Prefer (a place kept for it); it is not counted twice.
	Reserved     int64
	ReservedCPUs int64
	// Unfit are nodes that can never take this guest now (a storage pool it
	// needs is not usable there, a hard host rule), whatever else holds.
	Unfit []int
	// Only, when not nil, are the only nodes that may take it.
	Only []int
	// NoModel are nodes that cannot offer the guest's CPU model CPUModel;
	// the caller lists them in Unfit too (NoModel only explains, see Why).
	NoModel  []int
	CPUModel string
	// Rules are the guest's affinity rules (nil: none); see rules.go.
	Rules *Rules
}

// NewRequest returns a request with no preference and no tried nodes.
func NewRequest(guest string, memory int64, tiers [][]int) Request {
	return Request{Guest: guest, Memory: memory, Tiers: tiers, LastFailed: -1, Prefer: -1}
}

// Assignment is the outcome of one request.
type Assignment struct {
	Guest string
	Node  int // index into Snapshot.Nodes; -1: no candidate
	// ClearedTried reports that every candidate had been tried, so the choice
	// ignored the tried list except for the last failed node.
	ClearedTried bool
}

// Plan places the requests one at a time in placement order (Order), each
// seeing the memory, guest count and rule positions of those placed before
// it; the requests of one hard together group are placed as one unit when the
// first of them comes (see rules.go). The snapshot is not changed.
func Plan(snap *Snapshot, reqs []Request) []Assignment {
	p := NewPlanner(snap)
	p.Requests(reqs)
	out := make([]Assignment, len(reqs))
	for _, i := range Order(reqs) {
		out[i] = p.Place(&reqs[i])
	}
	return out
}

// Order returns the indices of reqs in placement order: highest Priority
// first, then guest name in byte order.
func Order(reqs []Request) []int {
	order := make([]int, len(reqs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		ra, rb := &reqs[order[a]], &reqs[order[b]]
		if ra.Priority != rb.Priority {
			return ra.Priority > rb.Priority
		}
		return ra.Guest < rb.Guest
	})
	return order
}

// Planner places requests one at a time on a working copy of a snapshot,
// each seeing the memory and guests of those placed (or reserved) before.
type Planner struct {
	nodes []Node
	rules
	// released is memory (releasedCPUs: vCPUs) of guests chosen by Preempt
	// in this plan: still counted in Used (they stop later) but no longer
	// available to preempt.
	released     []int64
	releasedCPUs []int64
	// releasedPrio is the highest priority among those guests, per node: a
	// request may count on their room only with a strictly higher priority.
	releasedPrio []int
}

// NewPlanner returns a planner over a copy of snap.
func NewPlanner(snap *Snapshot) *Planner {
	nodes := make([]Node, len(snap.Nodes))
	copy(nodes, snap.Nodes)
	return &Planner{nodes: nodes, rules: rules{snap: snap}, released: make([]int64, len(nodes)), releasedCPUs: make([]int64, len(nodes)), releasedPrio: make([]int, len(nodes))}
}

// Nodes returns the working copy (read only).
func (p *Planner) Nodes() []Node { return p.nodes }

// Place chooses a node for r and counts r there. A member of a hard together
// group is placed with the other members given to Requests (see unit).
func (p *Planner) Place(r *Request) Assignment {
	if r.group() != "" {
		return p.unit(r)
	}
	a := p.choose(p.nodes, r)
	p.take(r, a.Node)
	return a
}

// take counts r on node n (-1: nothing).
func (p *Planner) take(r *Request, n int) {
	if n < 0 {
		return
	}
	if n == r.Prefer && r.Reserved > 0 {
		p.nodes[n].Used += r.Memory - r.Reserved
		p.nodes[n].CPUUsed += r.CPUs - r.ReservedCPUs
	} else {
		p.nodes[n].Used += r.Memory
		p.nodes[n].CPUUsed += r.CPUs
		p.nodes[n].Guests++
	}
	if r.Rules != nil {
		p.placed(r.Guest, n)
	}
}

// Victim is a running guest that preemption may stop.
type Victim struct {
	Guest    string
	Memory   int64
	CPUs     int64 // thousandths of a vCPU (0 when vCPUs are not counted)
	Priority int
}

// Preemption is the outcome of Preempt: stop Victims on Node (indices into
// the candidates given for that node), then start the guest there.
type Preemption struct {
	Node    int // -1: no node can make room
	Victims []int
}

// Preempt finds where stopping running guests of strictly lower priority
// than r would make room for r, for a request that Place could not place.
// victims[i] lists the guests that may be stopped on node i (running, no
// operation in flight, not already chosen); taken marks those chosen by an
// earlier preemption of the same plan. Nodes are looked at in r's tiers from
// the most preferred; a node qualifies when it is eligible, not tried, not
// unfit, and stopping its lowest-priority guests first (ties: name order)
// makes r fit, counting as free the room that stops already decided (in
// this plan, or given to Releasing) will free: with that room alone it
// qualifies with zero stops. In the first tier with such a node, the node
// needing the
// fewest stops wins; ties go by projected memory use after the stops and r's
// start, compared exactly, then fewest guests, then node order (name). The
// chosen node's accounting in the planner counts r there at once, while the
// victims stay counted until they stop (later requests see neither room);
// the victims are marked taken.
func (p *Planner) Preempt(r *Request, victims [][]Victim, taken map[string]bool) Preemption {
	type cand struct {
		node  int
		stops []int
		after Node
	}
	var pinned []int
	if r.group() != "" {
		pinned = p.pinned(r)
	}
	// A member of a hard together group is placed with the members that
	// still need a node: the stops must make room for all of them, or the
	// room they free would only be taken again by their victims.
	need, needCPU := p.unitNeed(r)
	eval := func(i int) (cand, bool) {
		n := &p.nodes[i]
		if !n.Eligible || n.Memory <= 0 || need > n.Memory || (needCPU > 0 && needCPU > n.CPUs) || i == r.LastFailed || contains(r.Tried, i) || contains(r.Unfit, i) ||
			(r.Only != nil && !contains(r.Only, i)) || !p.hardOK(r, i) || (pinned != nil && !contains(pinned, i)) {
			return cand{}, false
		}
		if i >= len(victims) {
			return cand{}, false
		}
		vs := victims[i]
		order := make([]int, 0, len(vs))
		for k, v := range vs {
			if v.Priority < r.Priority && !taken[v.Guest] {
				order = append(order, k)
			}
		}
		sort.SliceStable(order, func(a, b int) bool {
			va, vb := &vs[order[a]], &vs[order[b]]
			if va.Priority != vb.Priority {
				return va.Priority < vb.Priority
			}
			return va.Guest < vb.Guest
		})
		// Guests preempted earlier in this plan will be gone; those still
		// to stop here are counted until then (Place sees them in Used).
		free, freeCPU := n.Memory-n.Used, n.CPUs-n.CPUUsed
		after := *n
		pending := (p.released[i] > 0 || p.releasedCPUs[i] > 0) && p.releasedPrio[i] < r.Priority
		if pending {
			free += p.released[i]
			freeCPU += p.releasedCPUs[i]
			after.Used -= p.released[i]
		}
		enough := func() bool { return free >= need && (needCPU == 0 || freeCPU >= needCPU) }
		var stops []int
		for _, k := range order {
			if enough() {
				break
			}
			free += vs[k].Memory
			freeCPU += vs[k].CPUs
			after.Used -= vs[k].Memory
			after.Guests--
			stops = append(stops, k)
		}
		if !enough() || (len(stops) == 0 && !pending) {
			return cand{}, false
		}
		return cand{node: i, stops: stops, after: after}, true
	}
	tiers := r.Tiers
	if tiers == nil {
		all := make([]int, len(p.nodes))
		for i := range all {
			all[i] = i
		}
		tiers = [][]int{all}
	}
	for _, tier := range tiers {
		var best *cand
		for _, i := range tier {
			c, ok := eval(i)
			if !ok {
				continue
			}
			if best == nil || len(c.stops) < len(best.stops) ||
				(len(c.stops) == len(best.stops) && better(&c.after, c.node, &best.after, best.node, need)) {
				cc := c
				best = &cc
			}
		}
		if best == nil {
			continue
		}
		// r is counted there now; the victims stay counted until they stop.
		n := &p.nodes[best.node]
		n.Used += r.Memory
		n.CPUUsed += r.CPUs
		n.Guests++
		for _, k := range best.stops {
			v := &victims[best.node][k]
			taken[v.Guest] = true
			p.Releasing(best.node, v.Memory, v.CPUs, v.Priority)
		}
		if r.Rules != nil {
			p.placed(r.Guest, best.node)
		}
		return Preemption{Node: best.node, Victims: best.stops}
	}
	return Preemption{Node: -1}
}

// Releasing tells the planner that mem bytes and cpus (thousandths of a
// vCPU) counted on node i belong to a guest of the given priority that a
// preemption is stopping: later
// preemptions for guests of strictly higher priority than every such guest
// there may count on that room (a request that fits once those stops
// complete waits for them, stopping nothing more).
func (p *Planner) Releasing(i int, mem, cpus int64, priority int) {
	if i >= 0 && i < len(p.released) {
		if (p.released[i] == 0 && p.releasedCPUs[i] == 0) || priority > p.releasedPrio[i] {
			p.releasedPrio[i] = priority
		}
		p.released[i] += mem
		p.releasedCPUs[i] += cpus
	}
}

// Choose picks the node for one request over nodes, without changing them.
// Affinity rules see no other guest (see Planner for rules).
func Choose(nodes []Node, r *Request) Assignment {
	return (&Planner{}).choose(nodes, r)
}

func (p *Planner) choose(nodes []Node, r *Request) Assignment {
	a := Assignment{Guest: r.Guest, Node: -1}
	if r.Prefer >= 0 && r.Prefer < len(nodes) && fits(&nodes[r.Prefer], r.Memory-r.Reserved, r.CPUs-r.ReservedCPUs) && !contains(r.Tried, r.Prefer) && r.Prefer != r.LastFailed &&
		!contains(r.Unfit, r.Prefer) && (r.Only == nil || contains(r.Only, r.Prefer)) && p.hardOK(r, r.Prefer) {
		a.Node = r.Prefer
		return a
	}
	if r.PreferOnly {
		return a
	}
	if n := p.pick(nodes, r, true); n >= 0 {
		a.Node = n
		return a
	}
	if len(r.Tried) == 0 {
		return a
	}
	if n := p.pick(nodes, r, false); n >= 0 {
		a.Node = n
		a.ClearedTried = true
	}
	return a
}

// pick returns the best candidate of the most preferred tier that has one:
// fewest soft rules broken, then better (memory use, guests, name).
func (p *Planner) pick(nodes []Node, r *Request, useTried bool) int {
	ok := func(i int) bool {
		if !fits(&nodes[i], r.Memory, r.CPUs) || i == r.LastFailed || contains(r.Unfit, i) || (r.Only != nil && !contains(r.Only, i)) || !p.hardOK(r, i) {
			return false
		}
		return !useTried || !contains(r.Tried, i)
	}
	soft := r.Rules != nil && r.Rules.soft()
	var scores map[int]int
	score := func(i int) int {
		if scores == nil {
			scores = map[int]int{}
		}
		v, seen := scores[i]
		if !seen {
			v = p.softScore(r, i)
			scores[i] = v
		}
		return v
	}
	consider := func(best, i int) int {
		if !ok(i) {
			return best
		}
		if best < 0 {
			return i
		}
		if soft {
			if si, sb := score(i), score(best); si != sb {
				if si < sb {
					return i
				}
				return best
			}
		}
		if better(&nodes[i], i, &nodes[best], best, r.Memory) {
			return i
		}
		return best
	}
	if r.Tiers == nil {
		best := -1
		for i := range nodes {
			best = consider(best, i)
		}
		return best
	}
	tiers := r.Tiers
	if r.MaxTier > 0 && r.MaxTier < len(tiers) {
		tiers = tiers[:r.MaxTier]
	}
	for _, tier := range tiers {
		best := -1
		for _, i := range tier {
			best = consider(best, i)
		}
		if best >= 0 {
			return best
		}
	}
	return -1
}

// fits reports whether mem bytes and cpus thousandths of a vCPU (0: not
// counted) fit on n.
func fits(n *Node, mem, cpus int64) bool {
	return n.Eligible && n.Memory > 0 && mem <= n.Memory-n.Used && (cpus <= 0 || cpus <= n.CPUs-n.CPUUsed)
}

// better reports whether node a (index ia) beats node b (index ib) for a guest
// of mem bytes: lower projected use (Used+mem)/Memory, compared exactly by
// cross-multiplication in 128 bits; then fewer guests; then lower index (name
// byte order).
func better(a *Node, ia int, b *Node, ib int, mem int64) bool {
	if c := CompareFractions(uint64(a.Used+mem), uint64(a.Memory), uint64(b.Used+mem), uint64(b.Memory)); c != 0 {
		return c < 0
	}
	if a.Guests != b.Guests {
		return a.Guests < b.Guests
	}
	return ia < ib
}

// CompareFractions compares an/ad with bn/bd exactly (denominators > 0) and
// returns -1, 0 or +1.
func CompareFractions(an, ad, bn, bd uint64) int {
	h1, l1 := bits.Mul64(an, bd)
	h2, l2 := bits.Mul64(bn, ad)
	switch {
	case h1 < h2 || (h1 == h2 && l1 < l2):
		return -1
	case h1 == h2 && l1 == l2:
		return 0
	}
	return 1
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Tiers turns a failover domain into tiers of node indices, most preferred
// first. index maps a node name to its index (-1: unknown, skipped); n is the
// number of nodes. Unordered: one tier; ordered: one tier per member in list
// order; explicit priorities: higher first, equal priorities share a tier. An
// unrestricted domain gets a last tier of the non-members.
func Tiers(d model.Domain, index func(string) int, n int) [][]int {
	var tiers [][]int
	member := make([]bool, n)
	explicit := false
	for _, m := range d.Members {
		if m.Priority != 0 {
			explicit = true
		}
	}
	switch {
	case d.Ordered:
		for _, m := range d.Members {
			if i := index(m.Node); i >= 0 && !member[i] {
				member[i] = true
				tiers = append(tiers, []int{i})
			}
		}
	case explicit:
		ms := make([]model.DomainMember, len(d.Members))
		copy(ms, d.Members)
		sort.SliceStable(ms, func(a, b int) bool { return ms[a].Priority > ms[b].Priority })
		for k, m := range ms {
			i := index(m.Node)
			if i < 0 || member[i] {
				continue
			}
			member[i] = true
			if k > 0 && len(tiers) > 0 && ms[k-1].Priority == m.Priority {
				tiers[len(tiers)-1] = append(tiers[len(tiers)-1], i)
			} else {
				tiers = append(tiers, []int{i})
			}
		}
	default:
		var t []int
		for _, m := range d.Members {
			if i := index(m.Node); i >= 0 && !member[i] {
				member[i] = true
				t = append(t, i)
			}
		}
		if len(t) > 0 {
			tiers = append(tiers, t)
		}
	}
	for _, t := range tiers {
		sort.Ints(t)
	}
	if !d.Restricted {
		var rest []int
		for i := 0; i < n; i++ {
			if !member[i] {
				rest = append(rest, i)
			}
		}
		if len(rest) > 0 {
			tiers = append(tiers, rest)
		}
	}
	if tiers == nil {
		tiers = [][]int{}
	}
	return tiers
}

// TierOf returns the index of the tier holding node i, or len(tiers) when no
// tier holds it.
func TierOf(tiers [][]int, i int) int {
	for t, tier := range tiers {
		for _, j := range tier {
			if j == i {
				return t
			}
		}
	}
	return len(tiers)
}
