package manager

import (
	"fmt"
	"slices"
	"strings"

	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/placement"
)

// SetRules replaces the affinity rules after checking them (names unique,
// guests and hosts configured, no hard apart between guests that hard
// together rules bind).
func (s *State) SetRules(rules []model.Rule) error {
	s.forget()
	err := model.CheckRules(rules, func(g string) bool { return s.Guest(g) != nil }, func(h string) bool { return s.node(h) != nil })
	if err != nil {
		return fmt.Errorf("set rules: %w", err)
	}
	s.Rules = slices.Clone(rules)
	s.rules = nil
	return nil
}

// PutRules replaces the affinity rules after checking their structure only
// (kinds, counts, names unique, no hard apart between guests bound by hard
// together rules): guests and hosts that are not configured are ignored by
// the rules until they are (the daemon's rules live apart from its guests).
func (s *State) PutRules(rules []model.Rule) error {
	s.forget()
	if err := model.CheckRules(rules, nil, nil); err != nil {
		return fmt.Errorf("put rules: %w", err)
	}
	s.Rules = slices.Clone(rules)
	s.rules = nil
	return nil
}

// CheckDependencies reports a start-order cycle that spec's after list would
// close (spec replacing the guest of its name): the guests it starts after
// must not, through their own after lists, lead back to it.
func (s *State) CheckDependencies(spec *model.GuestSpec) error {
	if slices.Contains(spec.After, spec.Name) {
		return fmt.Errorf("guest %q: it cannot start after itself", spec.Name)
	}
	after := func(g string) []string {
		if g == spec.Name {
			return spec.After
		}
		if x := s.Guest(g); x != nil {
			return x.Spec.After
		}
		return nil
	}
	// Depth-first from spec, remembering the path to report the cycle.
	seen := map[string]bool{}
	var path []string
	var walk func(g string) []string
	walk = func(g string) []string {
		path = append(path, g)
		for _, d := range after(g) {
			if d == spec.Name {
				return append(slices.Clone(path), d)
			}
			if !seen[d] {
				seen[d] = true
				if c := walk(d); c != nil {
					return c
				}
			}
		}
		path = path[:len(path)-1]
		return nil
	}
	if c := walk(spec.Name); c != nil {
		return fmt.Errorf("start order (after) has a cycle: %s", model.FormatCycle(c))
	}
	return nil
}

// ruleSet is the rules as placement applies them (cached until the rules or
// the nodes change), plus where the guests are in the current step.
type ruleSet struct {
	guest map[string]*placement.Rules
	unfit map[string][]int // hard host rules: nodes a guest may not use
	where map[string][]int // this step's positions, filled on demand
}

// ruleSet returns the step's view of the affinity rules (nil when there are
// none).
func (s *State) ruleSet() *ruleSet {
	if len(s.Rules) == 0 {
		return nil
	}
	if s.rules == nil {
		s.rules = s.buildRules()
	}
	rs := *s.rules
	rs.where = map[string][]int{}
	return &rs
}

// whereFn returns placement's view of where guests count, computed once per
// guest and step.
func (s *State) whereFn(rs *ruleSet) func(string) []int {
	return func(name string) []int {
		if w, ok := rs.where[name]; ok {
			return w
		}
		var w []int
		if g := s.Guest(name); g != nil {
			w = s.countedOn(g)
		}
		rs.where[name] = w
		return w
	}
}

func (s *State) buildRules() *ruleSet {
	rs := &ruleSet{guest: map[string]*placement.Rules{}, unfit: map[string][]int{}}
	get := func(g string) *placement.Rules {
		r := rs.guest[g]
		if r == nil {
			r = &placement.Rules{}
			rs.guest[g] = r
		}
		return r
	}
	others := func(list []string, g string) []string {
		return slices.DeleteFunc(slices.Clone(list), func(x string) bool { return x == g })
	}
	hosts := func(names []string) []int {
		var out []int
		for _, h := range names {
			if i, ok := s.nodeIdx[h]; ok {
				out = append(out, i)
			}
		}
		return out
	}
	groups := model.TogetherGroups(s.Rules)
	members := map[string][]string{}
	for g, grp := range groups {
		members[grp] = append(members[grp], g)
	}
	for g, grp := range groups {
		r := get(g)
		r.Group = grp
		r.With = others(members[grp], g)
		slices.Sort(r.With)
	}
	for _, rule := range s.Rules {
		for _, g := range rule.Guests {
			r := get(g)
			switch {
			case rule.Kind == model.AffinityApart && !rule.Soft:
				r.Apart = append(r.Apart, others(rule.Guests, g)...)
			case rule.Kind == model.AffinityApart:
				r.SoftApart = append(r.SoftApart, others(rule.Guests, g)...)
			case rule.Kind == model.AffinityTogether && rule.Soft:
				r.SoftTogether = append(r.SoftTogether, others(rule.Guests, g)...)
			case rule.Kind == model.AffinityOn && rule.Soft:
				r.SoftOn = append(r.SoftOn, hosts(rule.Hosts)...)
			case rule.Kind == model.AffinityOff && rule.Soft:
				r.SoftOff = append(r.SoftOff, hosts(rule.Hosts)...)
			case rule.Kind == model.AffinityOn:
				in := hosts(rule.Hosts)
				for i := range s.Nodes {
					if !slices.Contains(in, i) {
						rs.unfit[g] = append(rs.unfit[g], i)
					}
				}
			case rule.Kind == model.AffinityOff:
				rs.unfit[g] = append(rs.unfit[g], hosts(rule.Hosts)...)
			}
		}
	}
	return rs
}

// countedOn returns the nodes guest g counts on (as in Usage).
func (s *State) countedOn(g *Guest) []int {
	var out []int
	add := func(node string) {
		if i, ok := s.nodeIdx[node]; ok && node != "" && !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	countedAt(g, add)
	return out
}

// Violation is an affinity rule that the current placement breaks (an
// operator moved a guest, or a rule was added over running guests).
type Violation struct {
	Rule string `json:"rule"`
	Hard bool   `json:"hard"`
	What string `json:"what"`
}

// Violations lists the rules the current placement breaks, in rule order. A
// guest counts where it counts for memory (a migrating guest on both nodes).
func (s *State) Violations() []Violation {
	var out []Violation
	for _, rule := range s.Rules {
		if what := s.broken(rule); len(what) > 0 {
			out = append(out, Violation{Rule: rule.Name, Hard: !rule.Soft, What: strings.Join(what, "; ")})
		}
	}
	return out
}

// at returns up to two nodes guest g counts on (-1: none), without
// allocating.
func (s *State) at(name string) [2]int {
	w := [2]int{-1, -1}
	g := s.Guest(name)
	if g == nil {
		return w
	}
	k := 0
	add := func(node string) {
		if i, ok := s.nodeIdx[node]; ok && node != "" && w[0] != i && k < 2 {
			w[k] = i
			k++
		}
	}
	countedAt(g, add)
	return w
}

func has(w [2]int, n int) bool { return n >= 0 && (w[0] == n || w[1] == n) }

// broken says how the current placement breaks rule (nil: it holds).
func (s *State) broken(rule model.Rule) []string {
	var what []string
	name := func(w [2]int) string {
		out := s.Nodes[w[0]].Name
		if w[1] >= 0 {
			out += "+" + s.Nodes[w[1]].Name
		}
		return out
	}
	switch rule.Kind {
	case model.AffinityApart:
		for i, a := range rule.Guests {
			wa := s.at(a)
			if wa[0] < 0 {
				continue
			}
			for _, b := range rule.Guests[i+1:] {
				wb := s.at(b)
				for _, n := range wa {
					if has(wb, n) {
						what = append(what, fmt.Sprintf("%s and %s are both on %s", a, b, s.Nodes[n].Name))
						break
					}
				}
			}
		}
	case model.AffinityTogether:
		common := [2]int{-1, -1}
		first := true
		var on []string
		for _, g := range rule.Guests {
			w := s.at(g)
			if w[0] < 0 {
				continue
			}
			on = append(on, g+" on "+name(w))
			if first {
				common, first = w, false
				continue
			}
			for k := range common {
				if !has(w, common[k]) {
					common[k] = -1
				}
			}
		}
		if !first && common[0] < 0 && common[1] < 0 {
			what = append(what, "not on one host: "+strings.Join(on, ", "))
		}
	case model.AffinityOn, model.AffinityOff:
		for _, g := range rule.Guests {
			for _, n := range s.at(g) {
				if n < 0 {
					continue
				}
				if slices.Contains(rule.Hosts, s.Nodes[n].Name) != (rule.Kind == model.AffinityOn) {
					what = append(what, fmt.Sprintf("%s is on %s", g, s.Nodes[n].Name))
				}
			}
		}
	}
	return what
}

// reportViolations logs rules that became broken or are kept again.
func (st *stepper) reportViolations() {
	s := st.s
	if len(s.Rules) == 0 && len(s.Broken) == 0 {
		return
	}
	var now []string
	for _, v := range s.Violations() {
		now = append(now, v.Rule)
		if !slices.Contains(s.Broken, v.Rule) {
			h := "soft"
			if v.Hard {
				h = "hard"
			}
			st.logf("rule %s (%s) is broken: %s", v.Rule, h, v.What)
		}
	}
	for _, r := range s.Broken {
		if !slices.Contains(now, r) {
			st.logf("rule %s is kept again", r)
		}
	}
	s.Broken = now
}

// depsMet reports whether every guest g starts after runs (or has been
// stopped or disabled by the operator); otherwise why not. A guest being
// stopped does not count as running.
func (s *State) depsMet(g *Guest) (bool, string) {
	for _, d := range g.Spec.After {
		dg := s.Guest(d)
		switch {
		case dg == nil:
			return false, fmt.Sprintf("waits for %s, which is not configured", d)
		case dg.Spec.State == model.DesiredStopped || dg.Spec.State == model.DesiredDisabled:
		case dg.Running && dg.State == GuestStarted && (dg.Op == nil || dg.Op.Kind != OpStop):
		case dg.State == GuestFailed:
			return false, fmt.Sprintf("waits for %s, which has failed (start or disable it)", d)
		case dg.Op != nil && dg.Op.Kind == OpStart:
			return false, fmt.Sprintf("waits for %s, which is being started", d)
		case dg.Op != nil && dg.Op.Kind == OpStop:
			return false, fmt.Sprintf("waits for %s, which is being stopped", d)
		default:
			return false, fmt.Sprintf("waits for %s to run (it is %s)", d, dg.State)
		}
	}
	return true, ""
}

// depsOK is depsMet without the reason.
func (s *State) depsOK(g *Guest) bool {
	ok, _ := s.depsMet(g)
	return ok
}

// dependentRuns reports a guest that starts after g, runs (or is being
// stopped) and is not to run any more, so g's stop waits for it: stops run
// in the reverse of the start order. Only guests that are themselves going
// down hold g's stop: onNode, when set, limits them to that node (a host
// shutdown), otherwise those whose desired state is not started.
func (s *State) dependentRuns(g *Guest, onNode string) *Guest {
	for _, x := range s.Guests {
		if !slices.Contains(x.Spec.After, g.Spec.Name) || !(x.Running || x.Op != nil) {
			continue
		}
		if onNode != "" {
			if x.Node == onNode {
				return x
			}
			continue
		}
		if x.Spec.State != model.DesiredStarted && x.Spec.State != "" {
			return x
		}
	}
	return nil
}

// setWait records why g waits; a change is logged when a rule or a
// dependency is the reason (plain lack of room is not logged).
func (st *stepper) setWait(g *Guest, why string, log bool) {
	if g.Wait == why {
		return
	}
	g.Wait = why
	if log && why != "" {
		st.logf("%s waits: %s", g.Spec.Name, why)
	}
}
