package hypervisor

import "strings"

// levelFeatures are the CPU features each x86-64 level adds to the one
// before, in libvirt's names (QEMU takes the same with '-' for '_'). A
// level is run as QEMU's qemu64 model plus these features, so a guest sees
// exactly what the level promises and no more, on any host that offers it.
var levelFeatures = map[string][]string{
	"x86-64-v1": nil,
	"x86-64-v2": {"cx16", "lahf_lm", "popcnt", "sse4.1", "sse4.2", "ssse3"},
	"x86-64-v3": {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},
	"x86-64-v4": {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
}

var levelOrder = []string{"x86-64-v1", "x86-64-v2", "x86-64-v3", "x86-64-v4"}

// CPUBaseModel is the QEMU model the x86-64 levels build on.
const CPUBaseModel = "qemu64"

// CPUModel resolves a guest's CPU model (guestdef.Definition.CPUModel) for
// a driver: host is true for "" and "host" (the host's own CPU); for an
// x86-64 level, base is CPUBaseModel and features are the level's and those
// of the levels before it; any other name is a QEMU/libvirt model used as
// is (base = the name, no features).
func CPUModel(name string) (host bool, base string, features []string) {
	if name == "" || name == "host" {
		return true, "", nil
	}
	if _, ok := levelFeatures[name]; !ok {
		return false, name, nil
	}
	for _, l := range levelOrder {
		features = append(features, levelFeatures[l]...)
		if l == name {
			break
		}
	}
	return false, CPUBaseModel, features
}

// QEMUCPUArg is the argument of QEMU's -cpu for a CPU model under KVM:
// host, qemu64,+feature,... for an x86-64 level, or the model's name.
func QEMUCPUArg(name string) string {
	host, base, features := CPUModel(name)
	if host {
		return "host"
	}
	var b strings.Builder
	b.WriteString(base)
	for _, f := range features {
		b.WriteString(",+" + strings.ReplaceAll(f, "_", "-"))
	}
	return b.String()
}
