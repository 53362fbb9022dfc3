package manager

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/model"
)

// startStorm: 4 nodes and 60 guests that the first step places; returns
// the state after that step and its start actions.
func startStorm(t *testing.T) (*State, []Action) {
	t.Helper()
	s := New(Config{})
	for i := 1; i <= 4; i++ {
		if err := s.AddNode(fmt.Sprintf("n%d", i), 64*model.GiB, 16); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 60; i++ {
		spec := model.DefaultGuestSpec(fmt.Sprintf("g%02d", i))
		spec.Memory = model.GiB
		if err := s.AddGuest(spec, false); err != nil {
			t.Fatal(err)
		}
	}
	var nodes []NodeReport
	for i := 1; i <= 4; i++ {
		nodes = append(nodes, NodeReport{Name: fmt.Sprintf("n%d", i), BootID: "b"})
	}
	var starts []Action
	for _, a := range s.Step(t0, Sync{Nodes: nodes}) {
		if a.Kind == ActStart {
			starts = append(starts, a)
		}
	}
	if len(starts) != 60 {
		t.Fatalf("the first step started %d guests, want 60", len(starts))
	}
	return s, starts
}

// The start results of a cluster's first placement visit only the guests
// that are not quiet (none but the result's), and decide what the full
// step decides: VerifyCalm runs the full step beside each and panics on
// any difference, in the actions or the state.
func TestCalmStartResults(t *testing.T) {
	VerifyCalm = true
	defer func() { VerifyCalm = false }()
	s, starts := startStorm(t)
	now := t0.Add(2e9)
	for i, a := range starts {
		// Step, with a look at the guests it visits.
		r := GuestResult{Guest: a.Guest, Node: a.Node, Op: a.Op, Result: ResultStarted}
		before, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		gs := s.calmFor(r)
		if gs == nil {
			t.Fatalf("result %d (%s): a full step, want one visiting the guests not quiet", i, a.Guest)
		}
		if len(gs) != 1 || gs[0].Spec.Name != a.Guest {
			t.Fatalf("result %d: visits %d guests, want only %s", i, len(gs), a.Guest)
		}
		s.verifyCalm(before, now, r, s.stepWith(now, r, gs))
	}
	if got := s.Unquiet(func(g *Guest) { t.Errorf("%s is not quiet: %s", g.Spec.Name, g.State) }); got != 60 {
		t.Errorf("%d quiet guests, want 60", got)
	}
	used := s.Usage()
	for _, n := range []string{"n1", "n2", "n3", "n4"} {
		if used[n] != 15*model.GiB {
			t.Errorf("%s uses %d GiB, want 15 (placement spreads 60 guests evenly)", n, used[n]/model.GiB)
		}
	}
}

// A quiet guest changed behind the core's back (not through a step or a
// configuration method, which drop calm) is the one thing calm cannot see:
// VerifyCalm finds the difference.
func TestCalmVerifyFindsDivergence(t *testing.T) {
	VerifyCalm = true
	defer func() { VerifyCalm = false }()
	s, starts := startStorm(t)
	for _, a := range starts[:59] {
		s.Step(t0.Add(2e9), GuestResult{Guest: a.Guest, Node: a.Node, Op: a.Op, Result: ResultStarted})
	}
	s.Guest(starts[0].Guest).Spec.State = model.DesiredStopped // bypasses UpdateGuestSpec
	last := starts[59]
	defer func() {
		r := recover()
		if r == nil || !strings.Contains(fmt.Sprint(r), "full step") {
			t.Fatalf("recover() = %v, want VerifyCalm's panic", r)
		}
	}()
	s.Step(t0.Add(2e9), GuestResult{Guest: last.Guest, Node: last.Node, Op: last.Op, Result: ResultStarted})
}

// Every configuration method drops calm: the next step visits every guest.
func TestCalmDroppedByConfiguration(t *testing.T) {
	for name, change := range map[string]func(s *State) error{
		"UpdateGuestSpec": func(s *State) error {
			spec := s.Guest("g00").Spec
			spec.State = model.DesiredStopped
			return s.UpdateGuestSpec(spec)
		},
		"AddGuest": func(s *State) error { return s.AddGuest(model.DefaultGuestSpec("new"), false) },
		"RemoveGuest": func(s *State) error {
			spec := model.DefaultGuestSpec("zz")
			spec.State = model.DesiredStopped
			if err := s.AddGuest(spec, false); err != nil {
				return err
			}
			s.Step(t0, Tick{}) // calm anew
			return s.RemoveGuest("zz")
		},
		"AddNodes":   func(s *State) error { return s.AddNodes([]NodeConfig{{Name: "n9", Memory: model.GiB}}) },
		"SetWitness": func(s *State) error { return s.SetWitness("n4", true) },
		"AddDomain": func(s *State) error {
			return s.AddDomain(model.Domain{Name: "d", Members: []model.DomainMember{{Node: "n1"}}})
		},
		"PutDomain": func(s *State) error {
			return s.PutDomain(model.Domain{Name: "d", Members: []model.DomainMember{{Node: "n1"}}})
		},
		"SetNodePools":  func(s *State) error { return s.SetNodePools("n1", []string{"p"}) },
		"PutRules":      func(s *State) error { return s.PutRules(nil) },
		"SetRules":      func(s *State) error { return s.SetRules(nil) },
		"Config (held)": func(s *State) error { s.Config.Capacity.GuestOverhead = model.MiB; return nil },
	} {
		s, starts := startStorm(t)
		if err := change(s); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		a := starts[1]
		if gs := s.calmFor(GuestResult{Guest: a.Guest, Node: a.Node, Op: a.Op, Result: ResultStarted}); gs != nil {
			t.Errorf("%s: the next step visits %d guests, want every guest", name, len(gs))
		}
	}
}
