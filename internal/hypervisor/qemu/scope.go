package qemu

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/prio"
)

// Guests must outlive the agent. Under systemd a service's processes share
// its cgroup, and stopping or restarting the service (or its crash, with
// the default KillMode=control-group) kills everything in it, setsid or
// not. So where systemd runs the host, each QEMU is started in a transient
// scope of its own (systemd-run --scope, which asks systemd over its
// private socket and then execs QEMU: the agent still waits for its
// child's exit), in machine.slice next to libvirt's guests:
//
//	haven-guest-NAME-XXXXXX.scope   Before=haven-shutdown.service
//
// The ordering makes a host shutdown stop haven-shutdown.service (which
// drains the host: `haven node shutdown --wait`) before any guest scope,
// so guests are moved or stopped by Haven's policy, not killed by
// systemd. Without systemd (no /run/systemd/system, as in containers and
// CI) QEMU just runs in its own session.

// ScopeMode says how the driver places QEMU processes.
type ScopeMode string

const (
	// ScopeAuto uses a systemd scope when systemd runs the host.
	ScopeAuto ScopeMode = ""
	// ScopeSystemd always uses a systemd scope (an error without systemd).
	ScopeSystemd ScopeMode = "systemd"
	// ScopeNone never does: QEMU only gets a session of its own.
	ScopeNone ScopeMode = "none"
)

// ParseScopeMode reads the --guest-scope flag.
func ParseScopeMode(s string) (ScopeMode, error) {
	switch s {
	case "", "auto":
		return ScopeAuto, nil
	case "systemd":
		return ScopeSystemd, nil
	case "none":
		return ScopeNone, nil
	}
	return "", fmt.Errorf("guest scope %q: use auto, systemd or none", s)
}

// systemdBooted reports whether systemd is the host's init (sd_booted(3)).
func systemdBooted() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// scopeCommand returns the program and arguments that run QEMU for guest
// name: binary and args themselves, or wrapped in systemd-run --scope.
func (d *Driver) scopeCommand(name, binary string, args []string) (string, []string, error) {
	mode := d.cfg.Scope
	if mode == ScopeNone || (mode == ScopeAuto && !systemdBooted()) {
		return binary, args, nil
	}
	run, err := exec.LookPath("systemd-run")
	if err != nil {
		if mode == ScopeAuto {
			d.log.Warn("systemd runs this host but systemd-run is missing: guests share the agent's cgroup and die with it; install systemd", "guest", name)
			return binary, args, nil
		}
		return "", nil, fmt.Errorf("guest scope: systemd-run not found: %w", err)
	}
	if mode == ScopeSystemd && !systemdBooted() {
		return "", nil, fmt.Errorf("guest scope systemd: systemd does not run this host (no /run/systemd/system)")
	}
	w := []string{
		"--scope", "--quiet", "--collect",
		"--unit=" + ScopeUnit(name, d.cfg.Now()),
		"--slice=machine.slice",
		"--description=Haven guest " + name,
		"--property=Before=haven-shutdown.service",
		// The agent runs at a raised priority (package prio); its guests
		// do not.
		"--nice=0",
		"--",
		binary,
	}
	return run, append(w, args...), nil
}

// ScopeUnit is a fresh transient scope name for guest name: unique, so a
// scope that has not yet been collected never blocks a new start.
func ScopeUnit(name string, now time.Time) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteString(fmt.Sprintf(`\x%02x`, r))
		}
	}
	return "haven-guest-" + b.String() + "-" + strconv.FormatInt(now.UnixNano()%(1<<32), 36) + ".scope"
}

// CgroupOf is the cgroup path of pid in the unified hierarchy (or the
// systemd one on a hybrid host), such as
// /machine.slice/haven-guest-web1-1x2y3z.scope.
func CgroupOf(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return "", err
	}
	var unified, named string
	for _, l := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			unified = parts[2]
		case parts[1] == "name=systemd":
			named = parts[2]
		}
	}
	if named != "" {
		return named, nil
	}
	return unified, nil
}

// atNormalPriority runs prog at nice 0 when the agent runs at another
// priority (package prio): a child inherits its parent's nice value, and
// a guest must not compete with the agent at the agent's priority.
// systemd-run sets it itself (--nice=0).
func atNormalPriority(prog string, args []string) (string, []string) {
	n := prio.Current()
	if n == 0 || filepath.Base(prog) == "systemd-run" {
		return prog, args
	}
	nice, err := exec.LookPath("nice")
	if err != nil {
		return prog, args
	}
	return nice, append([]string{"-n", strconv.Itoa(-n), "--", prog}, args...)
}
