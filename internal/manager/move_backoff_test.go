package manager

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/model"
)

// The tests move guest a (6 GiB) of policyState: n1 in maintenance sends it
// to n3, the only node with room.

// migrateOp returns the migration of a among acts (nil: none).
func migrateOp(acts []Action) *Action {
	for i := range acts {
		if acts[i].Kind == ActMigrate && acts[i].Guest == "a" {
			return &acts[i]
		}
	}
	return nil
}

// failMigration reports the migration m of a failed at time at.
func failMigration(s *State, at time.Time, m *Action) []Action {
	return s.Step(at, GuestResult{Guest: "a", Node: m.Node, Op: m.Op, Result: ResultMigrateFailed, Err: "prepare of the incoming copy failed"})
}

func TestMoveBackoffDoublesUpToACap(t *testing.T) {
	for n, want := range map[int]time.Duration{0: 0, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 5: 16 * time.Second, 6: 32 * time.Second, 40: 32 * time.Second} {
		if got := moveBackoff(n); got != want {
			t.Errorf("after %d failures: backoff %v, want %v", n, got, want)
		}
	}
}

// An evacuation whose migrations keep failing is tried again 1, 2, 4, 8,
// 16, 32, 32 s after each failure, not at the steps in between (reports
// arrive every 100 ms); NextTimer wakes the shell at each of those moments;
// a migration that succeeds clears the count.
func TestEvacuationMigrationFailuresBackOff(t *testing.T) {
	s := policyState(t, model.Reserve{})
	now := t0.Add(time.Second)
	m := migrateOp(s.Step(now, Command{Kind: CmdMaintenanceOn, Node: "n1"}))
	if m == nil {
		t.Fatal("maintenance on n1 did not migrate a")
	}
	for i, wait := range []time.Duration{1, 2, 4, 8, 16, 32, 32} {
		wait *= time.Second
		now = now.Add(500 * time.Millisecond)
		if a := failMigration(s, now, m); migrateOp(a) != nil {
			t.Fatalf("failure %d: migrated again in the step of the failure: %v", i+1, a)
		}
		g := s.Guest("a")
		if g.MoveFails != i+1 || g.Node != "n1" || !g.Running {
			t.Fatalf("failure %d: %+v", i+1, g)
		}
		retry := now.Add(wait)
		if at, ok := s.NextTimer(); !ok || !at.Equal(retry) {
			t.Fatalf("failure %d: next timer %v %v, want %v", i+1, at, ok, retry)
		}
		for x := now.Add(100 * time.Millisecond); x.Before(retry); x = x.Add(100 * time.Millisecond) {
			if a := s.Step(x, Tick{}); migrateOp(a) != nil {
				t.Fatalf("failure %d: migrated again %v after it, before its backoff of %v ended", i+1, x.Sub(now), wait)
			}
		}
		if w := s.Guest("a").Wait; !strings.Contains(w, "next try in 100ms") {
			t.Errorf("failure %d: wait %q 100 ms before the retry", i+1, w)
		}
		if m = migrateOp(s.Step(retry, Tick{})); m == nil || m.Target != "n3" {
			t.Fatalf("failure %d: not migrated again when its backoff of %v ended: %v", i+1, wait, m)
		}
		now = retry
	}
	s.Step(now.Add(5*time.Second), GuestResult{Guest: "a", Node: "n1", Op: m.Op, Result: ResultMigrated})
	if g := s.Guest("a"); g.Node != "n3" || g.MoveFails != 0 || !g.MoveFailedAt.IsZero() || g.Wait != "" {
		t.Fatalf("after the migration succeeded: %+v", g)
	}
	if at, ok := s.NextTimer(); ok {
		t.Fatalf("a timer at %v with no backoff left", at)
	}
	// Counted afresh: the return to n1 fails once and waits 1 s.
	now = now.Add(10 * time.Second)
	if m = migrateOp(s.Step(now, Command{Kind: CmdMaintenanceOff, Node: "n1"})); m == nil || m.Target != "n1" {
		t.Fatalf("maintenance off: no return: %v", m)
	}
	failMigration(s, now.Add(time.Second), m)
	if at, _ := s.NextTimer(); s.Guest("a").MoveFails != 1 || !at.Equal(now.Add(2*time.Second)) {
		t.Fatalf("after a failed return: %+v, next timer %v", s.Guest("a"), at)
	}
}

// An operator's migrate is carried out at once during a backoff; its
// failure counts towards the backoff of the manager's own migrations.
func TestOperatorMigrateIgnoresBackoffButCounts(t *testing.T) {
	s := policyState(t, model.Reserve{})
	now := t0.Add(time.Second)
	m := migrateOp(s.Step(now, Command{Kind: CmdMaintenanceOn, Node: "n1"}))
	now = now.Add(time.Second)
	failMigration(s, now, m)
	now = now.Add(100 * time.Millisecond) // within the 1 s backoff
	if m = migrateOp(s.Step(now, Command{Kind: CmdMigrate, Guest: "a", Node: "n3"})); m == nil || m.Msg != string(PurposeOperator) {
		t.Fatalf("operator migrate during a backoff not carried out: %v", m)
	}
	now = now.Add(time.Second)
	failMigration(s, now, m)
	if at, _ := s.NextTimer(); s.Guest("a").MoveFails != 2 || !at.Equal(now.Add(2*time.Second)) {
		t.Fatalf("after the operator's migrate failed: %+v, next timer %v", s.Guest("a"), at)
	}
	// A stop clears the count.
	s.Step(now.Add(time.Second), Command{Kind: CmdStop, Guest: "a"})
	g := s.Guest("a")
	s.Step(now.Add(3*time.Second), GuestResult{Guest: "a", Node: "n1", Op: g.Op.ID, Result: ResultStopped})
	if g.MoveFails != 0 || !g.MoveFailedAt.IsZero() {
		t.Fatalf("after a stop: %+v", g)
	}
}

// A guest saved by the previous release (move_failed_at, no move_fails)
// restores with no backoff: it is migrated at the next step.
func TestMoveBackoffReadsOldState(t *testing.T) {
	s := policyState(t, model.Reserve{})
	failMigration(s, t0.Add(2*time.Second), migrateOp(s.Step(t0.Add(time.Second), Command{Kind: CmdMaintenanceOn, Node: "n1"})))
	var m map[string]any
	b, _ := json.Marshal(s)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	g := m["guests"].([]any)[0].(map[string]any)
	if _, ok := g["move_fails"]; !ok {
		t.Fatal("move_fails not saved")
	}
	delete(g, "move_fails")
	b, _ = json.Marshal(m)
	r, err := Restore(b)
	if err != nil {
		t.Fatal(err)
	}
	if a := migrateOp(r.Step(t0.Add(2*time.Second+time.Millisecond), Tick{})); a == nil {
		t.Fatal("a guest of an old state waits for a backoff")
	}
}
