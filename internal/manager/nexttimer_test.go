package manager

import (
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/model"
)

// A recovering guest whose restart delay has passed but that still cannot
// start (here: a guest it must start after cannot run anywhere) waits for a change,
// not for time: NextTimer must not keep returning its past restart moment,
// or the shell, which wakes at NextTimer, would step every millisecond.
func TestNextTimerForgetsPassedRestartDelay(t *testing.T) {
	s := small(t)
	db := model.DefaultGuestSpec("db")
	db.Memory = 64 * model.GiB // no node has room
	app := model.DefaultGuestSpec("app")
	app.Node, app.Memory, app.After = "n3", model.GiB, []string{"db"}
	for _, spec := range []model.GuestSpec{db, app} {
		if err := s.AddGuest(spec, spec.Name == "app"); err != nil {
			t.Fatal(err)
		}
	}
	s.Step(t0.Add(time.Second), NodeUp{NodeReport: NodeReport{Name: "n3", BootID: "c", Running: []string{"app"}}})
	if g := s.Guest("app"); !g.Running || g.Node != "n3" {
		t.Fatalf("app not running on n3: %+v", g)
	}
	at := t0.Add(2 * time.Second)
	s.Step(at, GuestCrashed{Guest: "app", Node: "n3"})
	retry, ok := s.NextTimer()
	if g := s.Guest("app"); g.State != GuestRecovering || !ok || !retry.After(at) {
		t.Fatalf("after the crash: state %s, next timer %v %v", g.State, retry, ok)
	}
	acts := s.Step(retry, Tick{})
	if hasKind(acts, ActStart) {
		t.Fatalf("app started before db runs: %v", acts)
	}
	if g := s.Guest("app"); g.Wait == "" {
		t.Errorf("app waits without saying why: %+v", g)
	}
	if next, ok := s.NextTimer(); ok && !next.After(retry) {
		t.Fatalf("next timer %v: not after the step at %v that used it up", next, retry)
	}
}
