package libvirt

import (
	"os"
	"strings"
)

// kvmUsable reports whether guests can run under KVM here. It is a variable
// so that it can be switched to the shared KVM probe of package hypervisor
// once that exists. The check is conservative: /dev/kvm must exist and the
// CPU must advertise VT-x or SVM; a /dev/kvm without them (as under some
// nested or emulated setups) does not run stock guests.
var kvmUsable = func() bool {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if f == "vmx" || f == "svm" {
				return true
			}
		}
		return false
	}
	return false
}
