package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
)

// haven ca rotate --wait against a real one-host agent: a viewer may not
// start it; the admin's command follows it to the end through the agent's
// store member restarts (answers 503 meanwhile) and the CA file changing
// under it; ca status tells the outcome.
func TestCARotateCLI(t *testing.T) {
	ag, _ := startAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if code, _, errb := cliRun(ctx, ag, "admin", "", "ca", "status"); code == 0 || !strings.Contains(errb, "never rotated") {
		t.Fatalf("ca status before any rotation: %d %s", code, errb)
	}
	if code, _, errb := cliRun(ctx, ag, "viewer", "", "ca", "rotate"); code == 0 || !strings.Contains(errb, `this needs "admin"`) {
		t.Fatalf("ca rotate as a viewer: %d %s", code, errb)
	}
	code, out, errb := cliRun(ctx, ag, "admin", "", "ca", "rotate", "--wait", "--timeout", "2m", "-o", "json")
	if code != 0 {
		t.Fatalf("ca rotate --wait: %d %s", code, errb)
	}
	var st api.CARotation
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Phase != "done" || st.NewCA == st.OldCA || len(st.Hosts) != 1 {
		t.Fatalf("ca rotate --wait: %v %s", err, out)
	}
	if code, out, errb := cliRun(ctx, ag, "viewer", "", "ca", "status"); code != 0 || !strings.Contains(out, "phase done") || !strings.Contains(out, "n1") {
		t.Fatalf("ca status: %d %s %s", code, out, errb)
	}
}
