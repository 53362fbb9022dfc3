package hypervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Accel is a QEMU accelerator.
type Accel string

const (
	AccelKVM Accel = "kvm"
	AccelTCG Accel = "tcg" // software emulation: slow but always works
)

// AccelInfo is the outcome of accelerator detection, with the reason for
// operators ("no VT-x/AMD-V flag in /proc/cpuinfo").
type AccelInfo struct {
	Accel  Accel
	Reason string
}

// accelProbe is what DetectAccel looks at; tests replace the parts.
type accelProbe struct {
	cpuinfo func() (string, error)
	openKVM func() error
	tryBoot func(ctx context.Context) error
}

// DetectAccel says whether guests here can use KVM: only when the CPU
// advertises VT-x or AMD-V, /dev/kvm opens read-write, and a tiny KVM guest
// really runs (a /dev/kvm that exists is not enough: nested or emulated KVM
// can fail to set MSRs or crawl). Otherwise TCG. qemuBinary defaults to
// qemu-system-x86_64.
func DetectAccel(ctx context.Context, qemuBinary string) AccelInfo {
	if qemuBinary == "" {
		qemuBinary = "qemu-system-x86_64"
	}
	return detectAccel(ctx, accelProbe{
		cpuinfo: func() (string, error) {
			b, err := os.ReadFile("/proc/cpuinfo")
			return string(b), err
		},
		openKVM: func() error {
			f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
			if err != nil {
				return err
			}
			return f.Close()
		},
		tryBoot: func(ctx context.Context) error { return tryKVMBoot(ctx, qemuBinary) },
	})
}

var (
	accelMu    sync.Mutex
	accelCache = map[string]AccelInfo{}
)

// DetectAccelCached is DetectAccel run once per binary per process.
func DetectAccelCached(ctx context.Context, qemuBinary string) AccelInfo {
	accelMu.Lock()
	defer accelMu.Unlock()
	if a, ok := accelCache[qemuBinary]; ok {
		return a
	}
	a := DetectAccel(ctx, qemuBinary)
	accelCache[qemuBinary] = a
	return a
}

func detectAccel(ctx context.Context, p accelProbe) AccelInfo {
	info, err := p.cpuinfo()
	if err != nil {
		return AccelInfo{AccelTCG, fmt.Sprintf("cannot read /proc/cpuinfo: %v", err)}
	}
	if !cpuHasVirt(info) {
		return AccelInfo{AccelTCG, "no VT-x/AMD-V flag (vmx/svm) in /proc/cpuinfo"}
	}
	if err := p.openKVM(); err != nil {
		return AccelInfo{AccelTCG, fmt.Sprintf("cannot open /dev/kvm: %v", err)}
	}
	if err := p.tryBoot(ctx); err != nil {
		return AccelInfo{AccelTCG, fmt.Sprintf("a test KVM guest failed: %v", err)}
	}
	return AccelInfo{AccelKVM, "a test KVM guest ran"}
}

// cpuHasVirt reports whether any CPU's flags line lists vmx or svm.
func cpuHasVirt(cpuinfo string) bool {
	sc := bufio.NewScanner(strings.NewReader(cpuinfo))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "flags" {
			continue
		}
		for _, f := range strings.Fields(v) {
			if f == "vmx" || f == "svm" {
				return true
			}
		}
	}
	return false
}

// tryKVMBoot starts a bare KVM machine, lets its vCPU run for a moment and
// checks QEMU still reports it running.
func tryKVMBoot(ctx context.Context, bin string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-accel", "kvm", "-cpu", "host", "-machine", "pc", "-m", "32",
		"-nodefaults", "-no-user-config", "-display", "none", "-S", "-qmp", "stdio")
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	r := bufio.NewReader(out)
	send := func(c string) error {
		_, err := io.WriteString(in, `{"execute":"`+c+`"}`+"\n")
		return err
	}
	// reply reads until a return or error, skipping events.
	reply := func() (map[string]any, error) {
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return nil, fmt.Errorf("qemu exited: %s", strings.TrimSpace(stderr.String()))
			}
			var m map[string]any
			if json.Unmarshal(line, &m) != nil {
				continue
			}
			if _, ok := m["event"]; ok {
				continue
			}
			if _, ok := m["QMP"]; ok {
				continue
			}
			if e, ok := m["error"]; ok {
				return nil, fmt.Errorf("qmp: %v", e)
			}
			return m, nil
		}
	}
	for _, c := range []string{"qmp_capabilities", "cont"} {
		if err := send(c); err != nil {
			return err
		}
		if _, err := reply(); err != nil {
			return err
		}
	}
	t := time.NewTimer(500 * time.Millisecond)
	select {
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	case <-t.C:
	}
	if err := send("query-status"); err != nil {
		return err
	}
	m, err := reply()
	if err != nil {
		return err
	}
	st, _ := m["return"].(map[string]any)
	if st["status"] != "running" {
		return fmt.Errorf("test guest is %v, not running", st["status"])
	}
	return nil
}

// lockedBuffer is a bytes.Buffer safe to read while exec copies into it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
