package manager

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/model"
)

func policyState(t *testing.T, reserve model.Reserve) *State {
	t.Helper()
	s := New(Config{Reserve: reserve})
	for _, n := range []string{"n1", "n2", "n3"} {
		if err := s.AddNode(n, 8*model.GiB, 8); err != nil {
			t.Fatal(err)
		}
	}
	add := func(name, node string, mem int64, state model.DesiredState, after ...string) {
		spec := model.DefaultGuestSpec(name)
		spec.Node, spec.Memory, spec.State, spec.After = node, mem, state, after
		if err := s.AddGuest(spec, state == model.DesiredStarted); err != nil {
			t.Fatal(err)
		}
	}
	add("a", "n1", 6*model.GiB, model.DesiredStarted)
	add("b", "n2", 6*model.GiB, model.DesiredStarted)
	add("c", "n3", 5*model.GiB, model.DesiredStopped)
	s.Step(t0, Sync{Nodes: []NodeReport{{Name: "n1", BootID: "1", Running: []string{"a"}}, {Name: "n2", BootID: "1", Running: []string{"b"}}, {Name: "n3", BootID: "1"}}})
	return s
}

func TestAdmission(t *testing.T) {
	s := policyState(t, model.Reserve{Hosts: 1})
	a := s.Admission()
	if a.Capacity != 24*model.GiB || a.Reserved != 8*model.GiB || a.Protected != 12*model.GiB || a.Short != 0 {
		t.Fatalf("admission %+v", a)
	}
	err := s.Validate(Command{Kind: CmdStart, Guest: "c"})
	if !errors.Is(err, ErrAdmission) || !strings.Contains(err.Error(), "12GiB protected + 5GiB > 24GiB capacity - 8GiB reserved") {
		t.Fatalf("start c: %v", err)
	}
	// Off: no check.
	if err := policyState(t, model.Reserve{}).Validate(Command{Kind: CmdStart, Guest: "c"}); err != nil {
		t.Fatal(err)
	}
	// A host loss makes it short: reported once.
	acts := s.Step(t0.Add(time.Second), NodeDown{Node: "n3"})
	if !hasLog(acts, "admission control: short by 4GiB") || s.Short != 4*model.GiB {
		t.Fatalf("no shortfall report: %v", acts)
	}
	if acts := s.Step(t0.Add(2*time.Second), Tick{}); hasLog(acts, "admission control") {
		t.Fatalf("reported twice: %v", acts)
	}
	// Percent: 50% of 24GiB = 12GiB.
	if a := policyState(t, model.Reserve{Percent: 50}).Admission(); a.Reserved != 12*model.GiB {
		t.Fatalf("percent: %+v", a)
	}
}

func TestDependencyCycleRefused(t *testing.T) {
	s := policyState(t, model.Reserve{})
	spec := s.Guest("a").Spec
	spec.After = []string{"b"}
	if err := s.UpdateGuestSpec(spec); err != nil {
		t.Fatal(err)
	}
	spec = s.Guest("b").Spec
	spec.After = []string{"a"}
	if err := s.UpdateGuestSpec(spec); err == nil || !strings.Contains(err.Error(), "cycle: b -> a -> b") {
		t.Fatalf("cycle accepted: %v", err)
	}
}

func TestRulesChecked(t *testing.T) {
	s := policyState(t, model.Reserve{})
	if err := s.SetRules([]model.Rule{{Name: "r", Kind: model.AffinityApart, Guests: []string{"a", "zz"}}}); err == nil {
		t.Fatal("unknown guest accepted")
	}
	if err := s.SetRules([]model.Rule{{Name: "r", Kind: model.AffinityApart, Guests: []string{"a", "c"}}}); err != nil {
		t.Fatal(err)
	}
	// Rules put by the daemon may name guests not (or no longer) there.
	if err := s.PutRules([]model.Rule{{Name: "r", Kind: model.AffinityApart, Guests: []string{"a", "zz"}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveGuest("c"); err != nil {
		t.Fatal(err)
	}
	if v := s.Violations(); len(v) != 0 {
		t.Fatalf("violations %+v", v)
	}
}

func hasLog(acts []Action, s string) bool {
	for _, a := range acts {
		if a.Kind == ActLog && strings.Contains(a.Msg, s) {
			return true
		}
	}
	return false
}
