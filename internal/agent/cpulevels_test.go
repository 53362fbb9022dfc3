package agent

import (
	"slices"
	"strings"
	"testing"
)

func TestCPULevels(t *testing.T) {
	v1 := "fpu cx8 cmov mmx fxsr sse sse2 syscall lm"
	v2 := v1 + " cx16 lahf_lm popcnt sse4_1 sse4_2 ssse3"
	v3 := v2 + " avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"
	v4 := v3 + " avx512f avx512bw avx512cd avx512dq avx512vl"
	cases := []struct {
		flags string
		want  []string
	}{
		{"", nil},
		{v1, []string{"x86-64-v1"}},
		{v2, []string{"x86-64-v1", "x86-64-v2"}},
		{strings.Replace(v3, " fma", "", 1), []string{"x86-64-v1", "x86-64-v2"}},
		{v3, []string{"x86-64-v1", "x86-64-v2", "x86-64-v3"}},
		{v4, []string{"x86-64-v1", "x86-64-v2", "x86-64-v3", "x86-64-v4"}},
		// A level is offered only with every level before it.
		{strings.Replace(v4, " popcnt", "", 1), []string{"x86-64-v1"}},
	}
	for _, c := range cases {
		if got := cpuLevels(strings.Fields(c.flags)); !slices.Equal(got, c.want) {
			t.Errorf("%q: %v, want %v", c.flags, got, c.want)
		}
	}
	// This machine: whatever it is, the answer is a prefix of the levels.
	t.Logf("this host offers %v", hostCPUModels())
}
