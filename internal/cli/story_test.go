package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/cluster"
)

// TestStories: a failover reads as one story, from the host failing to
// its guests running again, with the unrelated events left out.
func TestStories(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	evs := []cluster.Event{
		{At: at(-5000), Kind: "operator", Msg: "created guest db9"},
		{At: at(0), Kind: "manager", Msg: "node h1 failed; fencing it before its guests run elsewhere"},
		{At: at(10), Kind: "fence", Node: "h1", Msg: "fence h1 (attempt 1)"},
		{At: at(900), Kind: "manager", Guest: "other", Msg: "other is running on h3"},
		{At: at(2100), Kind: "fence", Node: "h1", Msg: "fenced h1: level 1 (pdu), off, confirmed, in 2.09s"},
		{At: at(2150), Kind: "manager", Guest: "web1", Node: "h2", Msg: "start web1 on h2"},
		{At: at(2160), Kind: "manager", Guest: "web2", Node: "h3", Msg: "start web2 on h3"},
		{At: at(4000), Kind: "manager", Guest: "web1", Node: "h2", Msg: "web1 is running on h2"},
		{At: at(4500), Kind: "manager", Guest: "web2", Node: "h3", Msg: "web2 is running on h3"},
		{At: at(9000), Kind: "operator", Msg: "deleted guest db9"},
	}
	ss := stories(evs)
	if len(ss) != 1 {
		t.Fatalf("%d stories; want 1", len(ss))
	}
	s := ss[0]
	var msgs []string
	for _, e := range s.Steps {
		msgs = append(msgs, e.Msg)
	}
	got := strings.Join(msgs, "\n")
	if len(s.Steps) != 7 || strings.Contains(got, "other") || strings.Contains(got, "db9") {
		t.Errorf("steps:\n%s", got)
	}
	var b strings.Builder
	printStories(&b, ss)
	for _, want := range []string{"Incident: host h1 failed", "    +2.1s  fenced h1", "    +4.5s  web2 is running on h3", "= fenced after 2.1s; 2 guests running again after 4.5s"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("story lacks %q:\n%s", want, b.String())
		}
	}
}

// TestStoryStartsAtTheFault: a host found dead by its peers is the fault;
// the manager failing it seconds later (a new manager took over meanwhile)
// belongs to the same story, and the times count from the first.
func TestStoryStartsAtTheFault(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	evs := []cluster.Event{
		{At: at(0), Kind: "node", Node: "h1", Msg: "h1 is dead: no heartbeat for 1.71s and its address unanswered for 1.71s (3 probes); failed without waiting for its lease"},
		{At: at(9000), Kind: "manager", Msg: "node h1 failed; fencing it before its guests run elsewhere"},
		{At: at(9010), Kind: "fence", Node: "h1", Msg: "fence h1 (attempt 1)"},
		{At: at(11100), Kind: "fence", Node: "h1", Msg: "fenced h1: level 1 (bed), off, confirmed, in 1.827s"},
		{At: at(11150), Kind: "manager", Guest: "web1", Node: "h2", Msg: "start web1 on h2 (place)"},
		{At: at(15800), Kind: "manager", Guest: "web1", Node: "h2", Msg: "web1 is running on h2"},
	}
	ss := stories(evs)
	if len(ss) != 1 || len(ss[0].Steps) != 6 {
		t.Fatalf("%d stories (%+v); want 1 of 6 steps", len(ss), ss)
	}
	var b strings.Builder
	printStories(&b, ss)
	for _, want := range []string{"      +0.0s  h1 is dead", "      +9.0s  node h1 failed", "= fenced after 11.1s; 1 guests running again after 15.8s"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("story lacks %q:\n%s", want, b.String())
		}
	}
}

// TestStoryEndsWithoutTheFenceEvent: the fence's own event was lost (its
// write failed while the store elected a leader); the manager's "node h1
// is fenced" ends the incident all the same, so that h1's next failure is
// a story of its own, not steps of the first.
func TestStoryEndsWithoutTheFenceEvent(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	evs := []cluster.Event{
		{At: at(0), Kind: "node", Node: "h1", Msg: "h1 is dead: no heartbeat for 1.65s and its address unanswered for 1.65s (3 probes); failed without waiting for its lease"},
		{At: at(16), Kind: "manager", Msg: "node h1 is fenced"},
		{At: at(16), Kind: "manager", Guest: "web1", Node: "h2", Msg: "start web1 on h2 (place)"},
		{At: at(24), Kind: "manager", Guest: "web1", Node: "h2", Msg: "web1 is running on h2"},
		{At: at(270), Kind: "manager", Msg: "node h1 is online"},
		{At: at(395), Kind: "node", Node: "h1", Msg: "h1 is dead: no heartbeat for 1.64s and its address unanswered for 1.64s (3 probes); failed without waiting for its lease"},
	}
	ss := stories(evs)
	if len(ss) != 2 || len(ss[0].Steps) != 4 || ss[0].Fenced != at(16) {
		t.Fatalf("%d stories, the first of %d steps fenced at %v; want 2, the first of 4 fenced at +16s", len(ss), len(ss[0].Steps), ss[0].Fenced)
	}
}
