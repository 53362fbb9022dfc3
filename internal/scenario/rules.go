package scenario

import (
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/haven-ha/haven/internal/model"
)

// names reads a list of names.
func (p *parser) names(v *yaml.Node, key string) []string {
	var out []string
	seen := map[string]bool{}
	for _, it := range p.seq(v, key) {
		n := p.name(it, key)
		if n == "" {
			continue
		}
		if seen[n] {
			p.errf(it, key, "%q is listed twice", n)
			continue
		}
		seen[n] = true
		out = append(out, n)
	}
	return out
}

// reserve reads cluster.reserve: off, "hosts N" or "percent P".
func (p *parser) reserve(v *yaml.Node, key string) model.Reserve {
	s := strings.Fields(p.str(v, key))
	bad := func() model.Reserve {
		p.errf(v, key, "%q is not off, hosts N (N >= 1) or percent P (1..100)", v.Value)
		return model.Reserve{}
	}
	if len(s) == 1 && (s[0] == "off" || s[0] == "false") {
		return model.Reserve{}
	}
	if len(s) != 2 {
		return bad()
	}
	n, err := strconv.Atoi(s[1])
	if err != nil {
		return bad()
	}
	switch {
	case s[0] == "hosts" && n >= 1:
		return model.Reserve{Hosts: n}
	case s[0] == "percent" && n >= 1 && n <= 100:
		return model.Reserve{Percent: n}
	}
	return bad()
}

// dependencies checks the guests' after lists: known guests, not itself, no
// cycle.
func (p *parser) dependencies(sc *Scenario, guests map[string]*Guest) {
	after := map[string][]string{}
	ok := true
	for _, g := range sc.Guests {
		for _, d := range g.Spec.After {
			if guests[d] == nil {
				p.errf(&yaml.Node{Line: g.afterLine}, "guests.after", "guest %q: unknown guest %q", g.Spec.Name, d)
				ok = false
			}
			if d == g.Spec.Name {
				p.errf(&yaml.Node{Line: g.afterLine}, "guests.after", "guest %q cannot start after itself", g.Spec.Name)
				ok = false
			}
		}
		after[g.Spec.Name] = g.Spec.After
	}
	if !ok {
		return
	}
	if c := model.DependencyCycle(after); c != nil {
		p.errf(&yaml.Node{Line: guests[c[0]].afterLine}, "guests.after", "start order has a cycle: %s", model.FormatCycle(c))
	}
}

// affinity reads the affinity rules.
func (p *parser) affinity(sc *Scenario, n *yaml.Node, nodes map[string]*Node, guests map[string]*Guest) {
	seen := map[string]bool{}
	lines := map[string]int{}
	start := len(p.errs)
	for _, it := range p.seq(n, "affinity") {
		var r model.Rule
		var kindN, hostsN *yaml.Node
		f := p.fields(it, "affinity", []string{"name", "kind", "guests", "hosts", "strength"}, func(key string, k, v *yaml.Node) {
			ck := "affinity." + key
			switch key {
			case "name":
				r.Name = p.name(v, ck)
			case "kind":
				kindN = v
				switch s := p.str(v, ck); s {
				case "together", "apart", "on", "off":
					r.Kind = model.AffinityKind(s)
				default:
					p.errf(v, ck, "%q is not together, apart, on or off", s)
				}
			case "guests":
				r.Guests = p.names(v, ck)
				for i, g := range r.Guests {
					if guests[g] == nil {
						p.errf(v.Content[i], ck, "unknown guest %q", g)
					}
				}
			case "hosts":
				hostsN = v
				r.Hosts = p.names(v, ck)
				for i, h := range r.Hosts {
					if nodes[h] == nil {
						p.errf(v.Content[i], ck, "unknown node %q", h)
					}
				}
			case "strength":
				switch s := p.str(v, ck); s {
				case "hard":
				case "soft":
					r.Soft = true
				default:
					p.errf(v, ck, "%q is not hard or soft", s)
				}
			}
		})
		if it.Kind != yaml.MappingNode {
			continue
		}
		for _, k := range []string{"name", "kind", "guests"} {
			if f[k] == nil {
				p.errf(it, "affinity."+k, "required")
			}
		}
		if f["name"] != nil && seen[r.Name] {
			p.errf(f["name"], "affinity.name", "duplicate rule %q", r.Name)
		}
		seen[r.Name] = true
		lines[r.Name] = it.Line
		if kindN == nil || f["guests"] == nil {
			continue
		}
		switch r.Kind {
		case model.AffinityTogether, model.AffinityApart:
			if hostsN != nil {
				p.errf(hostsN, "affinity.hosts", "%s rules take no hosts (hosts are for on and off)", r.Kind)
			}
			if len(r.Guests) < 2 {
				p.errf(f["guests"], "affinity.guests", "%s needs at least 2 guests", r.Kind)
			}
		case model.AffinityOn, model.AffinityOff:
			if len(r.Hosts) == 0 {
				p.errf(it, "affinity.hosts", "required for %s: at least 1 node", r.Kind)
			}
			if len(r.Guests) == 0 {
				p.errf(f["guests"], "affinity.guests", "at least 1 guest")
			}
		}
		sc.Rules = append(sc.Rules, r)
	}
	if len(p.errs) > start {
		return
	}
	if err := model.CheckRules(sc.Rules, nil, nil); err != nil {
		p.errf(n, "affinity", "%v", err)
		return
	}
	// Started guests at t=0 must keep the hard rules.
	groups := model.TogetherGroups(sc.Rules)
	at := map[string]string{}
	for _, g := range sc.Guests {
		if g.Spec.Node != "" && g.Spec.State == model.DesiredStarted {
			at[g.Spec.Name] = g.Spec.Node
		}
	}
	for _, r := range sc.Rules {
		if r.Soft {
			continue
		}
		for i, a := range r.Guests {
			switch r.Kind {
			case model.AffinityApart:
				for _, b := range r.Guests[i+1:] {
					if at[a] != "" && at[a] == at[b] {
						p.errf(&yaml.Node{Line: lines[r.Name]}, "affinity", "rule %q: %s and %s both start on %s at t=0", r.Name, a, b, at[a])
					}
				}
			case model.AffinityOn, model.AffinityOff:
				if at[a] == "" {
					continue
				}
				in := false
				for _, h := range r.Hosts {
					in = in || h == at[a]
				}
				if in != (r.Kind == model.AffinityOn) {
					p.errf(&yaml.Node{Line: lines[r.Name]}, "affinity", "rule %q: %s starts on %s at t=0", r.Name, a, at[a])
				}
			}
		}
	}
	first := map[string]string{}
	for _, g := range sc.Guests {
		grp, ok := groups[g.Spec.Name]
		if !ok || at[g.Spec.Name] == "" {
			continue
		}
		if f, ok := first[grp]; ok && at[f] != at[g.Spec.Name] {
			p.errf(&yaml.Node{Line: g.Line}, "guests.node", "guest %q starts on %s at t=0, but hard together rules keep it with %s on %s", g.Spec.Name, at[g.Spec.Name], f, at[f])
			continue
		}
		first[grp] = g.Spec.Name
	}
}
