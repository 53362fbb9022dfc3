package manager

import (
	"errors"
	"fmt"
	"slices"

	"github.com/haven-ha/haven/internal/model"
)

// The functions in this file change the configuration of a running cluster
// (an operator edited a guest or a domain, a host joined). Like Step they are
// pure; the daemon calls them between steps and steps right after, so the
// change takes effect at once. In the simulator the configuration is fixed.

// ErrGuestActive is returned when a guest must be stopped first.
var ErrGuestActive = errors.New("guest is running or has an operation in flight")

// RemoveGuest forgets a guest that is not running and has no operation in
// flight.
func (s *State) RemoveGuest(name string) error {
	s.forget()
	g := s.Guest(name)
	if g == nil {
		return fmt.Errorf("remove guest %q: %w", name, ErrUnknownGuest)
	}
	if g.Running || g.Op != nil || g.State == GuestFencing {
		return fmt.Errorf("remove guest %q (%s on %s): %w: stop or disable it first", name, g.State, g.Node, ErrGuestActive)
	}
	s.Guests = slices.DeleteFunc(s.Guests, func(x *Guest) bool { return x == g })
	s.reindex()
	return nil
}

// UpdateGuestSpec replaces a guest's policy (memory, domain, recovery
// budgets, migratable...). The desired state and the recorded node are the
// manager's and change only through commands; a new domain must exist.
func (s *State) UpdateGuestSpec(spec model.GuestSpec) error {
	s.forget()
	g := s.Guest(spec.Name)
	if g == nil {
		return fmt.Errorf("update guest %q: %w", spec.Name, ErrUnknownGuest)
	}
	if spec.Domain != "" && s.domain(spec.Domain) == nil {
		return fmt.Errorf("update guest %q: domain %q is not configured", spec.Name, spec.Domain)
	}
	if len(spec.After) > 0 {
		if err := s.CheckDependencies(&spec); err != nil {
			return fmt.Errorf("update guest %q: %w", spec.Name, err)
		}
	}
	spec.State, spec.Node = g.Spec.State, g.Spec.Node
	g.Spec = spec
	s.tiers = nil
	return nil
}

// PutDomain adds a failover domain or replaces the one with the same name.
func (s *State) PutDomain(d model.Domain) error {
	s.forget()
	for _, m := range d.Members {
		if s.node(m.Node) == nil {
			return fmt.Errorf("put domain %q: member %q: %w", d.Name, m.Node, ErrUnknownNode)
		}
	}
	for i := range s.Domains {
		if s.Domains[i].Name == d.Name {
			s.Domains[i] = d
			s.tiers = nil
			return nil
		}
	}
	return s.AddDomain(d)
}

// RemoveDomain forgets a failover domain that no guest uses.
func (s *State) RemoveDomain(name string) error {
	s.forget()
	for _, g := range s.Guests {
		if g.Spec.Domain == name {
			return fmt.Errorf("remove domain %q: guest %q uses it", name, g.Spec.Name)
		}
	}
	s.Domains = slices.DeleteFunc(s.Domains, func(d model.Domain) bool { return d.Name == name })
	s.tiers = nil
	return nil
}

// HasNode reports whether a node is configured.
func (s *State) HasNode(name string) bool { return s.node(name) != nil }

// SetNodePools records the storage pools not usable on a node (from its
// agent's checks). Guests needing one of them are not placed there.
func (s *State) SetNodePools(node string, missing []string) error {
	s.forget()
	n := s.node(node)
	if n == nil {
		return fmt.Errorf("set pools of node %q: %w", node, ErrUnknownNode)
	}
	n.MissingPools = slices.Clone(missing)
	slices.Sort(n.MissingPools)
	return nil
}

// hasPools reports whether node n has every pool guest g needs.
func (s *State) hasPools(g *Guest, n *Node) bool {
	for _, p := range g.Spec.Pools {
		if slices.Contains(n.MissingPools, p) {
			return false
		}
	}
	return true
}
