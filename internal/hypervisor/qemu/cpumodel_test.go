package qemu

import (
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
)

func TestCPUModelArgs(t *testing.T) {
	def := guestdef.Definition{Name: "g", VCPUs: 1, Memory: 128 << 20, CPUModel: "x86-64-v2"}
	kvm := &Driver{cfg: Config{Machine: "pc"}, accel: hypervisor.AccelInfo{Accel: hypervisor.AccelKVM}}
	if a := strings.Join(kvm.args(def, "/run/h/g"), " "); !strings.Contains(a, "-cpu qemu64,+cx16,+lahf-lm,+popcnt,+sse4.1,+sse4.2,+ssse3 ") {
		t.Errorf("kvm x86-64-v2: %s", a)
	}
	def.CPUModel = ""
	if a := strings.Join(kvm.args(def, "/run/h/g"), " "); !strings.Contains(a, "-cpu host ") {
		t.Errorf("kvm without a model: %s", a)
	}
	// TCG keeps QEMU's emulated default, whatever the model.
	def.CPUModel = "x86-64-v3"
	tcg := &Driver{cfg: Config{Machine: "pc"}, accel: hypervisor.AccelInfo{Accel: hypervisor.AccelTCG}}
	if a := strings.Join(tcg.args(def, "/run/h/g"), " "); strings.Contains(a, "-cpu") {
		t.Errorf("tcg: %s", a)
	}
}
