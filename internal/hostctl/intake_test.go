package hostctl

import "testing"

func TestAdmit(t *testing.T) {
	o := Order{ID: "7-recv", Guest: "web", Op: OpReceive}
	for _, c := range []struct {
		name       string
		rev, since int64
		last       string
		want       Intake
	}{
		{"new order in this life", 12, 10, "6", Take},
		{"first order for the guest", 11, 10, "", Take},
		{"written when this life began", 10, 10, "", EarlierLife},
		{"written in an earlier life", 5, 10, "", EarlierLife},
		{"earlier life wins over repeated", 5, 10, "7-recv", EarlierLife},
		{"the last order taken, again", 12, 10, "7-recv", Repeated},
		{"an older order again is taken", 12, 10, "8-send", Take},
	} {
		if got := Admit(o, c.rev, c.since, c.last); got != c.want {
			t.Errorf("%s: Admit(rev %d, since %d, last %q) = %d, want %d", c.name, c.rev, c.since, c.last, got, c.want)
		}
	}
}
