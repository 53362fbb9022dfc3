package agent

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/haven-ha/haven/internal/model"
)

// hostMemory is MemTotal from /proc/meminfo in bytes (0 if unknown).
func hostMemory() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && fs[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(fs[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func hostCPUs() int { return runtime.NumCPU() }

// levelFlags are the /proc/cpuinfo flags each x86-64 level adds to the one
// before (the psABI's micro-architecture levels; abm is LZCNT).
var levelFlags = [][]string{
	{"lm", "cmov", "cx8", "fpu", "fxsr", "mmx", "syscall", "sse", "sse2"},
	{"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"},
	{"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},
	{"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
}

// cpuLevels returns the x86-64 levels (model.CPULevels) a CPU with these
// flags offers, oldest first: each level needs its flags and every level
// before it.
func cpuLevels(flags []string) []string {
	have := map[string]bool{}
	for _, f := range flags {
		have[f] = true
	}
	var out []string
	for i, need := range levelFlags {
		for _, f := range need {
			if !have[f] {
				return out
			}
		}
		out = append(out, model.CPULevels[i])
	}
	return out
}

// hostCPUModels reads the first CPU's flags from /proc/cpuinfo and returns
// the levels it offers (nil if unknown, e.g. not x86-64).
func hostCPUModels() []string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "flags" {
			return cpuLevels(strings.Fields(v))
		}
	}
	return nil
}
