package hypervisor

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
)

func TestDetectAccel(t *testing.T) {
	ok := func() error { return nil }
	fail := func() error { return errors.New("boom") }
	tests := []struct {
		name    string
		cpuinfo string
		open    func() error
		boot    func() error
		want    Accel
	}{
		{"no flags", "flags\t\t: fpu hypervisor sse2\n", ok, ok, AccelTCG},
		{"vmx but no /dev/kvm", "flags\t\t: fpu vmx\n", fail, ok, AccelTCG},
		{"svm, kvm opens, boot fails", "flags\t\t: fpu svm\n", ok, fail, AccelTCG},
		{"vmx, boot works", "processor: 0\nflags\t\t: fpu vmx sse\n", ok, ok, AccelKVM},
		{"vmx only in a model name", "model name: vmx svm\nflags: fpu\n", ok, ok, AccelTCG},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := detectAccel(context.Background(), accelProbe{
				cpuinfo: func() (string, error) { return tt.cpuinfo, nil },
				openKVM: tt.open,
				tryBoot: func(context.Context) error { return tt.boot() },
			})
			if got.Accel != tt.want || got.Reason == "" {
				t.Errorf("detectAccel = %+v, want %s with a reason", got, tt.want)
			}
		})
	}
}

// TestDetectAccelHere runs the real detection; it must answer within its
// bound and give a reason whatever it finds.
func TestDetectAccelHere(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	a := DetectAccelCached(context.Background(), "qemu-system-x86_64")
	if a.Reason == "" || (a.Accel != AccelKVM && a.Accel != AccelTCG) {
		t.Fatalf("DetectAccel = %+v", a)
	}
	t.Logf("accelerator here: %s (%s)", a.Accel, a.Reason)
}

// TestTryKVMBootHere runs the KVM probe itself where /dev/kvm exists, so a
// probe that always succeeds would show (on the project's machines /dev/kvm
// exists but cannot run a -cpu host guest).
func TestTryKVMBootHere(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm")
	}
	err := tryKVMBoot(context.Background(), "qemu-system-x86_64")
	b, _ := os.ReadFile("/proc/cpuinfo")
	if !cpuHasVirt(string(b)) && err == nil {
		t.Errorf("a KVM guest ran on a CPU without vmx/svm: the probe is not probing")
	}
	t.Logf("KVM probe: %v", err)
}
