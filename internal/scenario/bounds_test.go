package scenario

import (
	"fmt"
	"strings"
	"testing"
)

// Issue 10, Low: `haven sim run` on a file of unknown origin ends in
// seconds: 100,000 nodes are refused when the file is read.
func TestScenarioBounds(t *testing.T) {
	var b strings.Builder
	b.WriteString("name: huge\ncluster:\n  nodes:\n")
	for i := range MaxNodes + 1 {
		fmt.Fprintf(&b, "    - {name: n%d}\n", i)
	}
	_, err := Parse("huge.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "at most 1000") {
		t.Fatalf("1001 nodes: %v, want them refused", err)
	}
	if _, err := Parse("big.yaml", make([]byte, MaxFileBytes+1)); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("a 4 MiB+ file: %v, want it refused", err)
	}
}
