package manager

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/model"
)

func TestWhatIfNodeDown(t *testing.T) {
	s := policyState(t, model.Reserve{Hosts: 1})
	if err := s.SetRules([]model.Rule{{Name: "rep", Kind: model.AffinityApart, Guests: []string{"a", "b"}}}); err != nil {
		t.Fatal(err)
	}
	before, _ := json.Marshal(s)
	w, err := RunWhatIf(s, t0.Add(time.Minute), []string{"n1"}, false, DefaultWhatIfDurations())
	if err != nil {
		t.Fatal(err)
	}
	after, _ := json.Marshal(s)
	if string(before) != string(after) {
		t.Fatal("RunWhatIf changed the state")
	}
	// a (6GiB, on n1) goes to n3 (n2 holds b, its apart partner) about 12 s
	// after the failure: lease 8 s + fence 2 s + start 2 s.
	if len(w.Guests) != 1 || w.Guests[0].Guest != "a" || w.Guests[0].To != "n3" || w.Guests[0].After != 12*time.Second || w.Recovered != 12*time.Second {
		t.Fatalf("what-if %+v", w)
	}
	if w.Admission.Short != 4*model.GiB {
		t.Fatalf("admission %+v", w.Admission)
	}
	// Both other nodes gone too: a waits, with the reason.
	w, err = RunWhatIf(s, t0.Add(time.Minute), []string{"n1", "n3"}, false, DefaultWhatIfDurations())
	if err != nil {
		t.Fatal(err)
	}
	if w.Waiting != 1 || !strings.Contains(w.Guests[0].Wait, "apart") {
		t.Fatalf("what-if %+v", w.Guests)
	}
	if _, err := RunWhatIf(s, t0, []string{"zz"}, false, DefaultWhatIfDurations()); err == nil {
		t.Fatal("unknown node accepted")
	}
}

func TestWhatIfMaintenance(t *testing.T) {
	s := policyState(t, model.Reserve{})
	w, err := RunWhatIf(s, t0.Add(time.Minute), []string{"n2"}, true, DefaultWhatIfDurations())
	if err != nil {
		t.Fatal(err)
	}
	if !w.Evacuated || len(w.Guests) != 1 || w.Guests[0].To != "n3" || !w.Guests[0].Moved || w.Guests[0].After != 5*time.Second || w.Recovered != 0 {
		t.Fatalf("what-if %+v", w)
	}
	// n2 and n3 in maintenance: b (6GiB) cannot fit on n1 beside a.
	w, err = RunWhatIf(s, t0.Add(time.Minute), []string{"n2", "n3"}, true, DefaultWhatIfDurations())
	if err != nil {
		t.Fatal(err)
	}
	if w.Evacuated {
		t.Fatalf("evacuation reported possible: %+v", w)
	}
}
