package manager

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

// Golden manager states of every format this build must read, each a
// cluster of three hosts where h1 failed with web1 and db1 on it and its
// fence is in flight (made by the Haven of the time: see the file names).
//
//	state-v0-235b719.json  before schema versions (commit 235b719)
//	state-v1.json          schema 1
func TestRestoreEveryStateSchema(t *testing.T) {
	for _, f := range []string{"testdata/state-v0-235b719.json", "testdata/state-v1.json"} {
		t.Run(f, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			st, err := Restore(b)
			if err != nil {
				t.Fatal(err)
			}
			if st.Schema != StateSchema {
				t.Errorf("restored schema %d, want %d", st.Schema, StateSchema)
			}
			h1 := st.Node("h1")
			if h1 == nil || h1.Status != NodeFailed || h1.Fence == nil || !h1.Fence.InFlight {
				t.Fatalf("the fence in flight of h1 was not kept: %+v", h1)
			}
			for _, g := range []string{"web1", "db1"} {
				if gg := st.Guest(g); gg == nil || gg.State != GuestFencing || gg.Node != "h1" {
					t.Errorf("guest %s: %+v, want fencing on h1", g, gg)
				}
			}
			// It saves as the current schema.
			out, _ := json.Marshal(st)
			if !strings.Contains(string(out), `"schema":1`) {
				t.Errorf("saved state lacks the schema: %.200s", out)
			}
		})
	}
}

// A state written by a newer Haven is refused with a SchemaError that says
// what to do; never read as if it were ours.
func TestRestoreRefusesNewerSchema(t *testing.T) {
	b, _ := os.ReadFile("testdata/state-v1.json")
	var m map[string]any
	json.Unmarshal(b, &m)
	m["schema"] = StateSchema + 1
	nb, _ := json.Marshal(m)
	_, err := Restore(nb)
	var se *SchemaError
	if !errors.As(err, &se) || se.Have != StateSchema+1 || !strings.Contains(err.Error(), "upgrade this host's haven") {
		t.Fatalf("Restore of a newer schema: %v", err)
	}
	// Refused as newer too when its records do not even decode here.
	m["guests"] = "a shape this build does not know"
	nb, _ = json.Marshal(m)
	if _, err := Restore(nb); !errors.As(err, &se) || se.Have != StateSchema+1 {
		t.Fatalf("Restore of a newer schema that does not decode: %v", err)
	}
}
