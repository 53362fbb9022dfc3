package deptest

import (
	"fmt"
	"strings"
	"testing"
)

// recorder is a testing.TB that keeps what Check reports.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, a ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, a...))
}

// Check finds a dependency two imports away, and names who imports it.
func TestCheckFindsIndirectDependency(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const m = "github.com/haven-ha/haven/internal/"
	r := &recorder{TB: t}
	// cluster imports store, which imports pki.
	Check(r, m+"cluster", map[string]string{m + "pki": "a test reason"})
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], "imported by "+m+"store") || !strings.Contains(r.errs[0], "a test reason") {
		t.Fatalf("Check reported %q, want one error naming store as the importer of pki", r.errs)
	}
	r.errs = nil
	Check(r, m+"cluster", map[string]string{m + "manager": "never"})
	if len(r.errs) != 0 {
		t.Fatalf("Check reported %q for a package cluster does not build on", r.errs)
	}
}
