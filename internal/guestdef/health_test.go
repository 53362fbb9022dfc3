package guestdef

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestHealthChecksValidate(t *testing.T) {
	base := Definition{Name: "web", VCPUs: 1, Memory: 128 << 20, Boot: Boot{Kernel: "/k"}}
	tests := []struct {
		name  string
		edit  func(*Definition)
		wants []string // substrings of the error; none: valid
	}{
		{"every kind", func(d *Definition) {
			d.Health = []Check{{Agent: true}, {TCP: 22}, {HTTP: "http://guest:8080/health", Status: 204}, {Exec: []string{"/bin/true"}, ExitCode: 0}}
		}, nil},
		{"two kinds in one", func(d *Definition) { d.Health = []Check{{TCP: 22, HTTP: "http://guest/"}} },
			[]string{"health[0]: give exactly one of agent, tcp, http and exec (found 2)"}},
		{"none", func(d *Definition) { d.Health = []Check{{Interval: Duration(time.Second)}} },
			[]string{"health[0]: give exactly one"}},
		{"bad port and url", func(d *Definition) { d.Health = []Check{{TCP: 70000}, {HTTP: "ftp://x/"}} },
			[]string{"health[0].tcp: port 70000", "health[1].http: \"ftp://x/\": want an http://"}},
		{"status without http", func(d *Definition) { d.Health = []Check{{TCP: 1, Status: 200}} },
			[]string{"health[0].status: an expected status needs an http check"}},
		{"timeout above interval", func(d *Definition) {
			d.Health = []Check{{TCP: 1, Interval: Duration(time.Second), Timeout: Duration(2 * time.Second)}}
		}, []string{"health[0].timeout: 2s is longer than the interval 1s"}},
		{"bad display", func(d *Definition) { d.Display = "spice" },
			[]string{`display: "spice" is not a display: use vnc`}},
		{"duplicate names", func(d *Definition) { d.Health = []Check{{Name: "a", TCP: 1}, {Name: "a", TCP: 2}} },
			[]string{`health[1].name: "a" names two checks`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := base
			tc.edit(&d)
			err := d.Validate()
			if len(tc.wants) == 0 {
				if err != nil {
					t.Fatalf("valid definition refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want %q", tc.wants)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestChecksDefaultsAndHeartbeat(t *testing.T) {
	d := Definition{Name: "g", GuestAgent: true, Health: []Check{{TCP: 22}, {TCP: 80}, {HTTP: "http://guest/"}}}
	cs := d.Checks()
	if len(cs) != 4 {
		t.Fatalf("checks = %+v, want 3 configured and the heartbeat", cs)
	}
	if cs[0].Name != "tcp0" || cs[1].Name != "tcp1" || cs[2].Name != "http" || cs[3].Name != "heartbeat" {
		t.Errorf("names = %s %s %s %s", cs[0].Name, cs[1].Name, cs[2].Name, cs[3].Name)
	}
	if cs[0].Interval.D() != DefaultInterval || cs[0].Timeout.D() != DefaultTimeout || cs[0].Failures != DefaultFailures || cs[0].StartGrace.D() != DefaultStartGrace {
		t.Errorf("defaults not filled: %+v", cs[0])
	}
	if cs[2].Status != 200 {
		t.Errorf("http status default = %d", cs[2].Status)
	}
	if !cs[3].Agent || cs[3].Interval.D() != HeartbeatInterval {
		t.Errorf("heartbeat = %+v", cs[3])
	}
	// An explicit agent check replaces the heartbeat.
	d.Health = append(d.Health, Check{Agent: true, Interval: Duration(2 * time.Second)})
	if cs := d.Checks(); len(cs) != 4 || cs[3].Name != "agent" {
		t.Errorf("with an agent check: %+v", cs)
	}
	if !d.NeedsAgent() || (Definition{Health: []Check{{TCP: 1}}}).NeedsAgent() {
		t.Error("NeedsAgent wrong")
	}
	if !(Definition{Health: []Check{{Exec: []string{"x"}}}}).NeedsAgent() {
		t.Error("an exec check needs the agent")
	}
}

func TestDurationJSON(t *testing.T) {
	var c Check
	if err := json.Unmarshal([]byte(`{"tcp":22,"interval":"2s","timeout":1.5}`), &c); err != nil {
		t.Fatal(err)
	}
	if c.Interval.D() != 2*time.Second || c.Timeout.D() != 1500*time.Millisecond {
		t.Errorf("parsed %+v", c)
	}
	b, _ := json.Marshal(c)
	if !strings.Contains(string(b), `"interval":"2s"`) {
		t.Errorf("marshalled %s", b)
	}
	if err := json.Unmarshal([]byte(`{"interval":"soon"}`), &c); err == nil || !strings.Contains(err.Error(), `"soon" is not a duration`) {
		t.Errorf("bad duration: %v", err)
	}
}
