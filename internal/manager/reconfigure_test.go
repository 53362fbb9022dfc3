package manager

import (
	"errors"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/model"
)

func TestReconfigure(t *testing.T) {
	s := New(Config{})
	for _, n := range []string{"a", "b"} {
		if err := s.AddNode(n, 8*model.GiB, 4); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Unix(0, 0)
	s.Step(now, Sync{Nodes: []NodeReport{{Name: "a"}, {Name: "b"}}})
	spec := model.DefaultGuestSpec("vm")
	spec.Node = "a"
	if err := s.AddGuest(spec, true); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveGuest("vm"); !errors.Is(err, ErrGuestActive) {
		t.Fatalf("RemoveGuest of a running guest = %v, want ErrGuestActive", err)
	}
	if err := s.PutDomain(model.Domain{Name: "pref-b", Members: []model.DomainMember{{Node: "b"}}}); err != nil {
		t.Fatal(err)
	}
	spec.Domain = "pref-b"
	spec.State = model.DesiredStopped // ignored: desired state changes by command only
	if err := s.UpdateGuestSpec(spec); err != nil {
		t.Fatal(err)
	}
	if g := s.Guest("vm"); g.Spec.State != model.DesiredStarted || g.Spec.Domain != "pref-b" {
		t.Fatalf("after update: %+v", g.Spec)
	}
	// The new domain prefers b: the manager fails the guest back there.
	acts := s.Step(now, Tick{})
	var migrated bool
	for _, a := range acts {
		if a.Kind == ActMigrate && a.Guest == "vm" && a.Target == "b" {
			migrated = true
		}
	}
	if !migrated {
		t.Fatalf("after moving vm to a domain preferring b, actions %v lack a migration to b", acts)
	}
	if err := s.RemoveDomain("pref-b"); err == nil {
		t.Fatal("RemoveDomain of a domain in use succeeded")
	}
	if err := s.PutDomain(model.Domain{Name: "x", Members: []model.DomainMember{{Node: "zz"}}}); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("PutDomain with an unknown member = %v", err)
	}
}
