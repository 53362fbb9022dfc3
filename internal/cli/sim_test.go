package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Getenv: func(string) string { return "" }}
	code := Run(context.Background(), env, args)
	return code, out.String(), errb.String()
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func TestSimRunLibrary(t *testing.T) {
	code, out, errs := runCLI(t, "sim", "run", "../sim/testdata/scenarios")
	if code != 0 || !strings.HasSuffix(lastLine(out), " passed, 0 failed") {
		t.Fatalf("exit %d, last line %q, stderr %s", code, lastLine(out), errs)
	}
}

func TestSimRunFailingAndJSON(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "x.yaml")
	src := `name: wrong expectation
cluster:
  nodes: [{name: n1}, {name: n2}]
guests:
  - {name: vm, node: n1}
events:
  - {at: 10s, do: crash vm}
expect:
  - {at: end, guest: vm, state: started, node: n2}
  - {by: 20s, guest: vm, state: started, node: n1}
`
	if err := os.WriteFile(f, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCLI(t, "sim", "run", f)
	if code != 1 || lastLine(out) != "2 passed, 1 failed" || !strings.Contains(out, "FAIL  at end") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	code, out, _ = runCLI(t, "sim", "run", "--json", f)
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if lines[len(lines)-1] != "2 passed, 1 failed" {
		t.Fatalf("last line %q", lines[len(lines)-1])
	}
	var expects, timeline int
	for _, l := range lines[:len(lines)-1] {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		if ok, has := m["ok"]; has {
			expects++
			if ok == false && m["seen"] == nil {
				t.Errorf("failed expectation without seen: %q", l)
			}
		} else if m["t"] != nil && m["source"] != nil && m["msg"] != nil {
			timeline++
		}
	}
	if expects != 3 || timeline == 0 {
		t.Fatalf("%d expectation objects, %d timeline lines", expects, timeline)
	}
}

func TestSimRunLoadError(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(f, []byte("name: x\ncluster:\n  nodes: [{name: n1}]\nevents:\n  - {at: 1s, do: power off n7}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI(t, "sim", "run", dir)
	if code != 1 || out != "" || !strings.Contains(errs, "bad.yaml:5: events.do: unknown node \"n7\"") {
		t.Fatalf("exit %d, out %q, err %q", code, out, errs)
	}
	if code, _, _ := runCLI(t, "sim", "run"); code != 2 {
		t.Fatalf("no args: exit %d", code)
	}
}
