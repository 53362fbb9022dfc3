package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/control"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
)

// haven sim replay runs a recording and exits 0 when every decision is the
// same, 1 when one differs, 2 on usage errors.
func TestSimReplay(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "term.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	st := manager.New(manager.Config{})
	if err := st.AddNode("n1", 8*model.GiB, 4); err != nil {
		t.Fatal(err)
	}
	spec := model.DefaultGuestSpec("vm1")
	if err := st.AddGuest(spec, false); err != nil {
		t.Fatal(err)
	}
	// A term of one step, recorded as the daemon does.
	rec := control.NewRecorder(f)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sync := manager.Sync{Nodes: []manager.NodeReport{{Name: "n1"}}}
	rec.Record(control.Record{Version: control.RecordVersion, At: at, State: st, Sync: &sync})
	var acts []string
	for _, a := range st.Step(at, sync) {
		if a.Kind != manager.ActPersist {
			acts = append(acts, a.String())
		}
	}
	rec.Record(control.Record{At: at, Decided: true, Actions: acts})
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI(t, "sim", "replay", path)
	if code != 0 || !strings.Contains(out, "order start vm1 on n1") || !strings.HasSuffix(lastLine(out), "1 decisions compared, 0 differ") {
		t.Fatalf("exit %d, out:\n%s\nstderr %s", code, out, errs)
	}
	b, _ := os.ReadFile(path)
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(bad, []byte(strings.Replace(string(b), "start vm1 on n1", "start vm1 on n9", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := runCLI(t, "sim", "replay", bad); code != 1 || !strings.Contains(out, "!= recorded") {
		t.Fatalf("diverging recording: exit %d, out:\n%s", code, out)
	}
	if code, _, _ := runCLI(t, "sim", "replay"); code != 2 {
		t.Fatalf("no file: exit %d, want 2", code)
	}
}
