// Package deptest guards the dependency graph in tests: a package's test
// lists the packages it must never build on, directly or through another
// (Tailscale's tstest/deptest is the model).
package deptest

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// Check fails t for every package in bad that pkg builds on, directly or
// not, saying why it is bad and which of pkg's dependencies imports it.
// bad maps an import path to the reason.
func Check(t testing.TB, pkg string, bad map[string]string) {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-json=ImportPath,Imports", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := false
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		seen = seen || p.ImportPath == pkg
		for _, imp := range p.Imports {
			if why, ok := bad[imp]; ok {
				t.Errorf("%s builds on %s (imported by %s): %s", pkg, imp, p.ImportPath, why)
			}
		}
	}
	if !seen {
		t.Fatalf("go list -deps %s did not list it; its output changed?", pkg)
	}
}
