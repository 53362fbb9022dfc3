package libvirt

import (
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/model"
)

func TestDomainCPUModel(t *testing.T) {
	def := guestdef.Definition{Name: "vm1", Memory: 128 * model.MiB, VCPUs: 1, CPUModel: "x86-64-v2"}
	x, err := DomainXML(def, "kvm", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<cpu match="exact" mode="custom" check="partial">`, `<model fallback="forbid">qemu64</model>`, `<feature policy="require" name="sse4.2"></feature>`} {
		if !strings.Contains(x, want) {
			t.Errorf("kvm domain lacks %s:\n%s", want, x)
		}
	}
	if strings.Contains(x, `name="avx2"`) {
		t.Errorf("x86-64-v2 requires avx2:\n%s", x)
	}
	def.CPUModel = "host"
	if x, _ := DomainXML(def, "kvm", ""); !strings.Contains(x, `<cpu mode="host-passthrough">`) {
		t.Errorf("host: %s", x)
	}
	// TCG keeps the emulated default.
	def.CPUModel = "x86-64-v3"
	if x, _ := DomainXML(def, "qemu", ""); strings.Contains(x, "<cpu") {
		t.Errorf("qemu domain with a cpu element:\n%s", x)
	}
}
