package placement

import (
	"fmt"
	"slices"
	"strings"
)

// Rules are one guest's affinity rules as placement applies them. Hard
// rules filter candidates; soft rules rank the candidates of one tier before
// memory use (fewest soft rules broken first). Guest-to-host hard rules are
// given as Request.Unfit.
type Rules struct {
	// Apart (hard): never on a node where one of these guests counts.
	Apart []string
	// Group names the hard together group (empty: none); With are its
	// other members. A member is placed only on a node where every other
	// member that counts somewhere counts; the members that need a node in
	// one Plan are placed there as one unit.
	Group string
	With  []string
	// Soft rules: each one broken on a node adds one to its score.
	SoftApart    []string // one per such guest counted on the node
	SoftTogether []string // one per such guest counted elsewhere and not on the node
	SoftOn       []int    // one when the node is not among these (if any)
	SoftOff      []int    // one when the node is among these
}

func (r *Rules) soft() bool {
	return len(r.SoftApart)+len(r.SoftTogether)+len(r.SoftOn)+len(r.SoftOff) > 0
}

func (r *Request) group() string {
	if r.Rules == nil {
		return ""
	}
	return r.Rules.Group
}

// rules is the planner's affinity bookkeeping: where the guests named in
// rules count while a plan is made, and the requests of the plan (for hard
// together groups).
type rules struct {
	snap     *Snapshot
	moved    map[string][]int // guests placed in this plan: their nodes now
	reqs     []Request
	byGuest  map[string]int        // guest -> index in reqs
	group    map[string][]int      // group -> indices in reqs, in placement order
	assigned map[string]Assignment // members placed with their group's unit
}

// Requests tells the planner every request of the plan, so that the
// members of a hard together group that need a node are placed as one unit.
// Without it each member is placed alone (still beside the members that
// count somewhere).
func (p *Planner) Requests(reqs []Request) {
	p.reqs = reqs
	for _, i := range Order(reqs) {
		g := reqs[i].group()
		if g == "" {
			continue
		}
		if p.group == nil {
			p.group, p.byGuest = map[string][]int{}, map[string]int{}
		}
		p.group[g] = append(p.group[g], i)
		p.byGuest[reqs[i].Guest] = i
	}
}

// where returns the nodes guest g counts on.
func (p *rules) where(g string) []int {
	if w, ok := p.moved[g]; ok {
		return w
	}
	if p.snap == nil || p.snap.Where == nil {
		return nil
	}
	return p.snap.Where(g)
}

func (p *rules) placed(g string, n int) {
	if p.moved == nil {
		p.moved = map[string][]int{}
	}
	w := slices.Clone(p.where(g))
	if !slices.Contains(w, n) {
		w = append(w, n)
	}
	p.moved[g] = w
}

// hardOK reports whether node i keeps r's hard apart rules.
func (p *rules) hardOK(r *Request, i int) bool {
	if r.Rules == nil {
		return true
	}
	for _, o := range r.Rules.Apart {
		if slices.Contains(p.where(o), i) {
			return false
		}
	}
	return true
}

func (p *rules) softScore(r *Request, i int) int {
	v := 0
	for _, o := range r.Rules.SoftApart {
		if slices.Contains(p.where(o), i) {
			v++
		}
	}
	for _, o := range r.Rules.SoftTogether {
		if w := p.where(o); len(w) > 0 && !slices.Contains(w, i) {
			v++
		}
	}
	if len(r.Rules.SoftOn) > 0 && !slices.Contains(r.Rules.SoftOn, i) {
		v++
	}
	if slices.Contains(r.Rules.SoftOff, i) {
		v++
	}
	return v
}

// pending reports whether group member m still waits for its unit in this
// plan.
func (p *rules) pending(m string) bool {
	if _, ok := p.byGuest[m]; !ok {
		return false
	}
	_, done := p.assigned[m]
	return !done
}

// unitNeed is the memory and vCPUs r's hard together group needs where r
// goes: r's own, plus those of every other member that still needs a node
// (in this plan, placed with r as one unit; or waiting and counted nowhere,
// so bound to follow r there).
func (p *rules) unitNeed(r *Request) (mem, cpus int64) {
	mem, cpus = r.Memory, r.CPUs
	if r.group() == "" {
		return mem, cpus
	}
	for _, m := range r.Rules.With {
		switch {
		case p.pending(m):
			q := &p.reqs[p.byGuest[m]]
			mem += q.Memory
			cpus += q.CPUs
		case len(p.where(m)) == 0 && p.snap != nil && p.snap.Waiting != nil:
			// Waiting, but not asking for a node in this plan (retrying
			// later): it will have to go where r goes.
			wm, wc := p.snap.Waiting(m)
			mem += wm
			cpus += wc
		}
	}
	return mem, cpus
}

// pinned returns the nodes where every other member of r's group that counts
// somewhere and is not placed with r counts (nil: no such member).
func (p *rules) pinned(r *Request) []int {
	var only []int
	some := false
	for _, m := range r.Rules.With {
		if p.pending(m) {
			continue // needs a node in this plan: placed with the unit
		}
		w := p.where(m)
		if len(w) == 0 {
			continue
		}
		if !some {
			only, some = slices.Clone(w), true
			continue
		}
		only = slices.DeleteFunc(only, func(n int) bool { return !slices.Contains(w, n) })
	}
	if some && only == nil {
		only = []int{}
	}
	return only
}

// unit places r's hard together group: every member given to Requests that
// has no node yet, as one. The first in placement order (the lead) gives the
// tiers, the preference and the tried nodes; the memory is the sum; a node
// any member cannot take (Unfit, its last failed node, a hard apart peer
// there) is out; members outside the plan pin it to where they count. All
// get the same node, or none.
func (p *Planner) unit(r *Request) Assignment {
	if a, ok := p.assigned[r.Guest]; ok {
		return a
	}
	lead := r
	var members []*Request
	for _, i := range p.group[r.group()] {
		if m := &p.reqs[i]; p.pending(m.Guest) {
			members = append(members, m)
		}
	}
	if len(members) == 0 || members[0].Guest != r.Guest && !slices.ContainsFunc(members, func(m *Request) bool { return m.Guest == r.Guest }) {
		members = []*Request{r} // not given to Requests: alone
	} else {
		lead = members[0]
	}
	a := p.unitChoose(lead, members)
	if a.Node < 0 {
		// A running member's move that cannot be made does not keep the
		// others from a node: it stays where it runs, and they go beside it.
		var need []*Request
		for _, m := range members {
			if !m.Optional {
				need = append(need, m)
			}
		}
		if len(need) > 0 && len(need) < len(members) {
			if p.assigned == nil {
				p.assigned = map[string]Assignment{}
			}
			for _, m := range members {
				if m.Optional {
					p.assigned[m.Guest] = Assignment{Guest: m.Guest, Node: -1}
				}
			}
			members, lead = need, need[0]
			a = p.unitChoose(lead, members)
		}
	}
	mine := Assignment{Guest: r.Guest, Node: -1} // r stays where it runs (Optional) unless among members
	for _, m := range members {
		got := Assignment{Guest: m.Guest, Node: a.Node, ClearedTried: a.ClearedTried && m == lead}
		if p.assigned == nil {
			p.assigned = map[string]Assignment{}
		}
		p.assigned[m.Guest] = got
		p.take(m, a.Node)
		if m.Guest == r.Guest {
			mine = got
		}
	}
	return mine
}

// unitChoose picks one node for members, a hard together group's members
// that need a node, lead first (see unit).
func (p *Planner) unitChoose(lead *Request, members []*Request) Assignment {
	u := *lead
	u.Rules = &Rules{}
	*u.Rules = *lead.Rules
	u.Unfit = slices.Clone(u.Unfit)
	u.Memory, u.CPUs = 0, 0
	for _, m := range members {
		u.Memory += m.Memory
		u.CPUs += m.CPUs
		if m == lead {
			continue
		}
		u.Unfit = append(u.Unfit, m.Unfit...)
		u.NoModel = append(u.NoModel, m.NoModel...)
		if m.Tiers != nil {
			for i := range p.nodes {
				if TierOf(m.Tiers, i) == len(m.Tiers) {
					u.Unfit = append(u.Unfit, i) // outside its restricted domain
				}
			}
		}
		if m.LastFailed >= 0 {
			u.Unfit = append(u.Unfit, m.LastFailed)
		}
		if m.Rules != nil {
			u.Rules.Apart = append(slices.Clone(u.Rules.Apart), m.Rules.Apart...)
		}
	}
	if len(members) > 1 {
		u.Reserved, u.ReservedCPUs = 0, 0
	}
	if only := p.pinned(&u); only != nil {
		if u.Only != nil {
			only = slices.DeleteFunc(only, func(n int) bool { return !slices.Contains(u.Only, n) })
		}
		u.Only = only
	}
	return p.choose(p.nodes, &u)
}

// Why explains, for an operator, why no node can take the request now.
// ruled reports that an affinity rule is among the reasons.
func Why(snap *Snapshot, r *Request) (why string, ruled bool) {
	pl := &rules{snap: snap}
	var offline, outside, model, unfit, full, cpu, tried, apart, together int
	var peers []string
	for i := range snap.Nodes {
		n := &snap.Nodes[i]
		switch {
		case !n.Eligible || n.Memory <= 0:
			offline++
		case r.Tiers != nil && TierOf(r.Tiers, i) == len(r.Tiers):
			outside++
		case contains(r.NoModel, i):
			model++
		case contains(r.Unfit, i):
			unfit++
		case r.Only != nil && !contains(r.Only, i):
			together++
		case !pl.hardOK(r, i):
			apart++
			for _, p := range r.Rules.Apart {
				if slices.Contains(pl.where(p), i) && !slices.Contains(peers, p) {
					peers = append(peers, p)
				}
			}
		case i == r.LastFailed || contains(r.Tried, i):
			tried++
		case !fits(n, r.Memory, 0):
			full++
		case !fits(n, r.Memory, r.CPUs):
			cpu++
		}
	}
	var parts []string
	add := func(k int, what string) {
		if k > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", k, what))
		}
	}
	add(offline, "offline, in maintenance or shutting down")
	add(outside, "outside its restricted domain")
	if model > 0 {
		parts = append(parts, fmt.Sprintf("%d cannot offer its CPU model %s", model, r.CPUModel))
	}
	add(unfit, "excluded (host rule, storage or pinned)")
	if together > 0 {
		parts = append(parts, fmt.Sprintf("%d not where its hard together partners run", together))
	}
	if apart > 0 {
		slices.Sort(peers)
		parts = append(parts, fmt.Sprintf("%d run a guest it must stay apart from (%s)", apart, strings.Join(peers, ", ")))
	}
	add(tried, "already tried")
	add(full, "without room")
	add(cpu, "without free vCPUs")
	if len(parts) == 0 {
		return "no node", false
	}
	return "no node can take it: " + strings.Join(parts, "; "), together+apart+model > 0 || (unfit > 0 && r.Rules != nil)
}
