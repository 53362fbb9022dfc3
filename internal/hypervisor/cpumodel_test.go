package hypervisor

import "testing"

func TestQEMUCPUArg(t *testing.T) {
	cases := map[string]string{
		"":          "host",
		"host":      "host",
		"x86-64-v1": "qemu64",
		"x86-64-v2": "qemu64,+cx16,+lahf-lm,+popcnt,+sse4.1,+sse4.2,+ssse3",
		"x86-64-v3": "qemu64,+cx16,+lahf-lm,+popcnt,+sse4.1,+sse4.2,+ssse3,+avx,+avx2,+bmi1,+bmi2,+f16c,+fma,+abm,+movbe,+xsave",
		"Haswell":   "Haswell",
	}
	for in, want := range cases {
		if got := QEMUCPUArg(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
