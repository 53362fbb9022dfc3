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
