package testbed

import (
	"errors"
	"net/netip"
	"testing"
)

func TestRouteStaysLocal(t *testing.T) {
	a := netip.MustParseAddr("10.213.4.2")
	legAddr := netip.MustParseAddr("10.213.4.254")
	tests := []struct {
		name   string
		out    string
		failed bool
		leg    string
		ok     bool
	}{
		{"default route", "10.213.4.2 via 192.0.2.1 dev eth0 src 192.0.2.2 uid 0 \n    cache \n", false, "", false},
		{"default route with a leg configured", "10.213.4.2 via 192.0.2.1 dev eth0 src 192.0.2.2 uid 0 \n    cache \n", false, "hvn4-leg", false},
		{"gateway through the leg device", "10.213.4.2 via 10.213.4.1 dev hvn4-leg src 10.213.4.254 uid 0\n", false, "hvn4-leg", false},
		{"unreachable route", "RTNETLINK answers: No route to host\n", true, "", true},
		{"network unreachable", "RTNETLINK answers: Network is unreachable\n", true, "", true},
		{"prohibit", "RTNETLINK answers: Permission denied; prohibited\n", true, "", true},
		{"blackhole listed", "blackhole 10.213.4.2 uid 0 \n    cache \n", false, "", true},
		{"unreachable listed", "unreachable 10.213.4.2 uid 0 \n", false, "", true},
		{"own leg", "10.213.4.2 dev hvn4-leg src 10.213.4.254 uid 0 \n    cache \n", false, "hvn4-leg", true},
		{"another bed's leg", "10.213.4.2 dev hvn9-leg src 10.213.4.254 uid 0 \n", false, "hvn4-leg", false},
		{"overlapping local network, no leg", "10.213.4.2 dev eth1 src 10.213.4.7 uid 0\n", false, "", false},
		{"address of this machine", "local 10.213.4.2 dev lo table local src 10.213.4.2 uid 0\n", false, "hvn4-leg", false},
		{"other failure", "Error: any valid prefix is expected rather than \"x\".\n", true, "", false},
		{"empty", "", false, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := RouteStaysLocal(a, tt.out, tt.failed, tt.leg, legAddr)
			if tt.ok && err != nil {
				t.Errorf("refused: %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrRouteLeaves) {
				t.Errorf("accepted (err %v), want ErrRouteLeaves", err)
			}
		})
	}
	// The leg's own address is local, and fine.
	if err := RouteStaysLocal(legAddr, "local 10.213.4.254 dev lo table local src 10.213.4.254 uid 0\n", false, "hvn4-leg", legAddr); err != nil {
		t.Errorf("leg address refused: %v", err)
	}
}

func FuzzRouteStaysLocal(f *testing.F) {
	f.Add("10.213.4.2 via 192.0.2.1 dev eth0 src 192.0.2.2 uid 0", false)
	f.Add("10.213.4.2 dev hvn4-leg src 10.213.4.254", false)
	f.Add("unreachable", true)
	a := netip.MustParseAddr("10.213.4.2")
	f.Fuzz(func(t *testing.T, out string, failed bool) {
		err := RouteStaysLocal(a, out, failed, "hvn4-leg", netip.MustParseAddr("10.213.4.254"))
		// Whatever the output, a route naming a gateway is never accepted.
		if err == nil && !failed && viaDefault(firstLine(out)) {
			t.Fatalf("accepted a gateway route: %q", out)
		}
	})
}

func firstLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}

func TestParseProcRecord(t *testing.T) {
	r := ProcRecord{PID: 42, Start: 12345, Role: "guest web1", Command: "sleep 1000 x=y"}
	got, err := ParseProcRecord(42, r.String())
	if err != nil {
		t.Fatal(err)
	}
	want := ProcRecord{PID: 42, Start: 12345, Role: "guest_web1", Command: "sleep 1000 x=y"}
	if got != want {
		t.Errorf("round trip: %+v, want %+v", got, want)
	}
	if _, err := ParseProcRecord(1, "start=abc role=x"); err == nil {
		t.Error("bad start accepted")
	}
}

func TestParseStatStart(t *testing.T) {
	stat := "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 100"
	got, err := parseStatStart(stat)
	if err != nil || got != 987654 {
		t.Errorf("parseStatStart = %d, %v", got, err)
	}
}

func TestParseGroups(t *testing.T) {
	g, err := ParseGroups("h1,h2/h3")
	if err != nil || FormatGroups(g) != "h1,h2/h3" || len(g) != 2 {
		t.Errorf("ParseGroups = %v, %v", g, err)
	}
	for _, bad := range []string{"", "h1//h2", "h1,/", "/h1"} {
		if _, err := ParseGroups(bad); err == nil {
			t.Errorf("ParseGroups(%q) accepted", bad)
		}
	}
}
