package qemu

import (
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/prio"
)

func TestScopeUnitNames(t *testing.T) {
	now := time.Unix(1700000000, 123)
	u := ScopeUnit("web1", now)
	if !strings.HasPrefix(u, "haven-guest-web1-") || !strings.HasSuffix(u, ".scope") {
		t.Errorf("ScopeUnit = %q", u)
	}
	if ScopeUnit("web1", now.Add(time.Millisecond)) == u {
		t.Error("two starts got the same scope name")
	}
	if u := ScopeUnit("a b/c", now); strings.ContainsAny(u, " /") {
		t.Errorf("unescaped unit name %q", u)
	}
}

func TestParseScopeMode(t *testing.T) {
	for in, want := range map[string]ScopeMode{"": ScopeAuto, "auto": ScopeAuto, "systemd": ScopeSystemd, "none": ScopeNone} {
		if got, err := ParseScopeMode(in); err != nil || got != want {
			t.Errorf("ParseScopeMode(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseScopeMode("cgroup"); err == nil || !strings.Contains(err.Error(), "use auto, systemd or none") {
		t.Errorf("bad mode: %v", err)
	}
}

// The command the driver runs: QEMU itself without systemd (this machine
// and CI), systemd-run --scope ... -- QEMU under systemd (the systemd test
// in test/install proves the guest then survives the agent's unit).
func TestScopeCommand(t *testing.T) {
	d := &Driver{cfg: Config{Now: time.Now}, log: slog.Default()}
	d.cfg.Scope = ScopeNone
	prog, args, err := d.scopeCommand("web1", "qemu-system-x86_64", []string{"-name", "guest=web1"})
	if err != nil || prog != "qemu-system-x86_64" || !slices.Equal(args, []string{"-name", "guest=web1"}) {
		t.Fatalf("none: %s %v %v", prog, args, err)
	}
	d.cfg.Scope = ScopeSystemd
	prog, args, err = d.scopeCommand("web1", "qemu-system-x86_64", []string{"-name", "guest=web1"})
	if !systemdBooted() {
		if err == nil || !strings.Contains(err.Error(), "systemd does not run this host") {
			t.Fatalf("systemd mode without systemd: %v", err)
		}
		d.cfg.Scope = ScopeAuto
		if prog, _, err := d.scopeCommand("web1", "qemu", nil); err != nil || prog != "qemu" {
			t.Fatalf("auto without systemd: %s %v", prog, err)
		}
		return
	}
	if err != nil || !strings.HasSuffix(prog, "systemd-run") {
		t.Fatalf("systemd: %s %v", prog, err)
	}
	i := slices.Index(args, "--")
	if i < 0 || !slices.Equal(args[i+1:], []string{"qemu-system-x86_64", "-name", "guest=web1"}) || !slices.Contains(args, "--scope") || !slices.Contains(args, "--property=Before=haven-shutdown.service") {
		t.Fatalf("systemd-run args %v", args)
	}
}

func TestCgroupOfSelf(t *testing.T) {
	cg, err := CgroupOf(os.Getpid())
	if err != nil || !strings.HasPrefix(cg, "/") {
		t.Fatalf("CgroupOf = %q, %v", cg, err)
	}
}

// TestGuestAtNormalPriority: the agent runs at a raised priority (package
// prio) and a child inherits it; a guest's QEMU must run at nice 0. Run in
// a child process that raises its own priority first.
func TestGuestAtNormalPriority(t *testing.T) {
	if os.Getenv("QEMU_PRIO_CHILD") == "1" {
		if err := prio.Set(-5); err != nil {
			t.Skipf("cannot raise the priority here: %v", err)
		}
		prog, args := atNormalPriority("sh", []string{"-c", "cut -d' ' -f19 /proc/self/stat"})
		out, err := exec.Command(prog, args...).Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(out)); got != "0" {
			t.Fatalf("the guest command runs at nice %s, want 0", got)
		}
		if prog, args := atNormalPriority("/usr/bin/systemd-run", []string{"--nice=0"}); prog != "/usr/bin/systemd-run" || len(args) != 1 {
			t.Fatalf("systemd-run wrapped: %s %v", prog, args)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestGuestAtNormalPriority$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "QEMU_PRIO_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if strings.Contains(string(out), "SKIP") {
		t.Skipf("%s", out)
	}
}
