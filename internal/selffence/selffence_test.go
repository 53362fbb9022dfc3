package selffence

import (
	"reflect"
	"testing"
	"time"
)

func TestMonitor(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := New(8 * time.Second)
	if _, cut := m.Deadline(); cut || m.Decide(t0, 3) != Wait {
		t.Fatal("connected host must not fence")
	}
	m.Observe(t0, false)
	d, cut := m.Deadline()
	if !cut || !d.Equal(t0.Add(8*time.Second)) {
		t.Fatalf("deadline %v %v", d, cut)
	}
	if m.Decide(t0.Add(7*time.Second), 3) != Wait {
		t.Fatal("fenced before the deadline")
	}
	if m.Decide(t0.Add(9*time.Second), 0) != Wait {
		t.Fatal("a host with no guest fenced")
	}
	// Reconnecting before the deadline cancels it.
	m.Observe(t0.Add(5*time.Second), true)
	if m.Decide(t0.Add(9*time.Second), 3) != Wait {
		t.Fatal("fenced after reconnecting")
	}
	m.Observe(t0.Add(10*time.Second), false)
	if m.Decide(t0.Add(18*time.Second), 1) != Fence {
		t.Fatal("no fence at the deadline")
	}
	if m.Decide(t0.Add(19*time.Second), 1) != Wait {
		t.Fatal("fenced twice")
	}
}

func TestAdopt(t *testing.T) {
	a := Adopt([]string{"a", "b", "c"}, []string{"c", "a", "d"})
	if !reflect.DeepEqual(a.Running, []string{"a", "c", "d"}) || !reflect.DeepEqual(a.Gone, []string{"b"}) {
		t.Fatalf("%+v", a)
	}
}

// Under quorum_loss freeze a host cut off with guests never self-fences,
// however long it stays cut off; switching back to stop fences it at its
// deadline again.
func TestMonitorFreeze(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := New(8 * time.Second)
	m.SetFreeze(true)
	m.Observe(t0, false)
	if _, cut := m.Deadline(); !cut {
		t.Fatal("a cut-off host has no deadline under freeze: the deadline is still its lease's")
	}
	for _, after := range []time.Duration{8 * time.Second, time.Hour} {
		if m.Decide(t0.Add(after), 5) != Wait {
			t.Fatalf("self-fenced under freeze %s after losing the cluster", after)
		}
	}
	m.SetFreeze(false)
	if m.Decide(t0.Add(time.Hour), 5) != Fence {
		t.Fatal("no self-fence once the policy is stop again")
	}
}
