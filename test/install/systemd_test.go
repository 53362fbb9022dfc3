// Package install tests Haven as an administrator installs it: from its
// Debian package, on hosts where systemd is PID 1.
//
// How a real systemd runs here: this machine's PID 1 is not systemd, so
// each test-bed host becomes a systemd-nspawn container (own PID, mount,
// UTS and IPC namespaces, systemd as its PID 1) that joins the host's
// network namespace (--network-namespace-path). Its root file system is an
// overlay: this machine's root as the read-only lower layer and a tmpfs as
// the upper one, made inside a private mount namespace (unshare -m). A host
// therefore starts as a copy of this machine (Debian 12 with QEMU), and
// whatever it writes (the installed package, /etc/haven, /var/lib/haven)
// lives in its tmpfs and vanishes with it. The bed's shared directory is
// bound in read-write, so the hosts share guest disks. Hosts boot a small
// target (basic.target and nothing enabled on this machine). Their journal
// goes to the console, which the test keeps (HOST_DIR/systemd.log).
//
// The test needs root, systemd-nspawn (Debian's systemd-container) and the
// test guest; it takes a few minutes and is skipped with -short.
package install

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor/qemu"
	"github.com/haven-ha/haven/internal/testbed"
	"github.com/haven-ha/haven/internal/testguest"
)

// repoRoot is the checkout this test file is in.
func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// buildDeb runs the one packaging command with version (empty: from git).
func buildDeb(t *testing.T, version string) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command("bash", filepath.Join(repoRoot(t), "scripts", "package.sh"), out)
	cmd.Env = append(os.Environ(), "HAVEN_VERSION="+version)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/package.sh: %v\n%s", err, b)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	deb := lines[len(lines)-1]
	if !strings.HasSuffix(deb, ".deb") {
		t.Fatalf("scripts/package.sh printed %q", b)
	}
	return deb
}

// sysHost is a test-bed host booted as a systemd container.
type sysHost struct {
	t      *testing.T
	h      *testbed.Host
	nspawn *exec.Cmd
	leader int // the container's PID 1 (systemd), as this machine sees it
	log    string
	exited chan struct{}
}

// boot starts h's systemd container. binds are extra --bind options.
func boot(t *testing.T, ctx context.Context, h *testbed.Host, binds ...string) *sysHost {
	t.Helper()
	dir := filepath.Join(h.Dir, "sys")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &sysHost{t: t, h: h, log: filepath.Join(h.Dir, "systemd.log"), exited: make(chan struct{})}
	// The target the container boots: basic.target, then only what the
	// test starts (no service enabled on this machine starts in it).
	target := "[Unit]\nDescription=Haven test-bed host\nRequires=basic.target\nAfter=basic.target\nAllowIsolate=yes\n"
	script := fmt.Sprintf(`set -e
mount -t tmpfs -o mode=755 tmpfs %[1]s
mkdir -p %[1]s/upper/etc/systemd/system %[1]s/upper/etc/systemd/journald.conf.d %[1]s/work %[1]s/root
printf '[Journal]\nForwardToConsole=yes\nMaxLevelConsole=info\n' > %[1]s/upper/etc/systemd/journald.conf.d/console.conf
printf '%%b' %[2]q > %[1]s/upper/etc/systemd/system/haven-bed.target
mount -t overlay overlay -o lowerdir=/,upperdir=%[1]s/upper,workdir=%[1]s/work %[1]s/root
exec systemd-nspawn -q -D %[1]s/root --register=no --keep-unit -M %[3]s --network-namespace-path=/run/netns/%[4]s %[5]s -b -- --unit=haven-bed.target
`, dir, target, h.Name, h.Netns, strings.Join(binds, " "))
	logf, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	s.nspawn = exec.Command("unshare", "-m", "--propagation", "private", "bash", "-c", script)
	s.nspawn.Stdout, s.nspawn.Stderr = logf, logf
	s.nspawn.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.nspawn.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.nspawn.Wait(); close(s.exited) }()
	t.Cleanup(func() { s.kill() })
	// The container's systemd is the nspawn process's child named systemd.
	s.poll("the container's systemd", 60*time.Second, func() bool {
		s.leader = findChild(s.nspawn.Process.Pid, "systemd", 4)
		return s.leader > 0
	})
	s.poll("the container booted", 120*time.Second, func() bool {
		out, _ := s.run(nil, "systemctl", "is-system-running")
		st := strings.TrimSpace(out)
		return st == "running" || st == "degraded"
	})
	return s
}

// findChild finds a descendant of pid whose comm is name, depth levels deep at most.
func findChild(pid int, name string, depth int) int {
	if depth == 0 {
		return 0
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, c := range strings.Fields(string(b)) {
			cp, _ := strconv.Atoi(c)
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cp))
			if strings.TrimSpace(string(comm)) == name {
				return cp
			}
			if p := findChild(cp, name, depth-1); p > 0 {
				return p
			}
		}
	}
	return 0
}

// kill ends the container at once (the power cord).
func (s *sysHost) kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	syscall.Kill(-s.nspawn.Process.Pid, syscall.SIGKILL)
	if s.leader > 0 {
		syscall.Kill(s.leader, syscall.SIGKILL) // PID 1 of its namespace: all its processes die
	}
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
	}
}

// run runs a command inside the container (all of its namespaces).
func (s *sysHost) run(stdin []byte, args ...string) (string, error) {
	return s.runT(5*time.Minute, stdin, args...)
}

// runT is run with a timeout.
func (s *sysHost) runT(timeout time.Duration, stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	nsArgs := append([]string{"-t", strconv.Itoa(s.leader), "-m", "-u", "-i", "-n", "-p", "--"}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", nsArgs...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s on %s: %w: %s", strings.Join(args, " "), s.h.Name, err, out)
	}
	return string(out), nil
}

func (s *sysHost) must(stdin []byte, args ...string) string {
	s.t.Helper()
	out, err := s.run(stdin, args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

func (s *sysHost) poll(what string, within time.Duration, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(s.log)
			s.t.Fatalf("%s: %s not within %v; container output:\n%s", s.h.Name, what, within, tail(string(log), 40))
		}
		select {
		case <-s.exited:
			if what != "power off" {
				log, _ := os.ReadFile(s.log)
				s.t.Fatalf("%s: container exited while waiting for %s:\n%s", s.h.Name, what, tail(string(log), 40))
			}
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// unitProp reads one property of a unit.
func (s *sysHost) unitProp(unit, prop string) string {
	out, _ := s.run(nil, "systemctl", "show", "-p", prop, "--value", unit)
	return strings.TrimSpace(out)
}

func (s *sysHost) journal(unit string) string {
	out, _ := s.run(nil, "journalctl", "-u", unit, "--no-pager", "-n", "60")
	return out
}

// guests reads `haven guest list -o json` on this host.
func (s *sysHost) guests() (map[string]api.GuestRow, error) {
	out, err := s.runT(15*time.Second, nil, "haven", "guest", "list", "-o", "json")
	if err != nil {
		return nil, err
	}
	var rows []api.GuestRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		return nil, fmt.Errorf("guest list: %w: %s", err, out)
	}
	m := map[string]api.GuestRow{}
	for _, r := range rows {
		m[r.Name] = r
	}
	return m, nil
}

// qemuPID is the pid of the QEMU running guest's disk, 0 if none.
func qemuPID(disk string) int {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte("qemu")) || !bytes.Contains(b, []byte("file="+disk+",")) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		return pid
	}
	return 0
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

func TestPackageOnSystemdHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("boots systemd containers: skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		t.Skip("needs systemd-nspawn (apt-get install systemd-container; scripts/deps.sh does)")
	}
	files := testguest.Build(t)
	var deb, newer string
	if d := os.Getenv("HAVEN_TEST_DEBS"); d != "" {
		// Packages built beforehand: "CURRENT.deb NEWER.deb" (NEWER is 99.0.0).
		deb, newer, _ = strings.Cut(d, " ")
	} else {
		deb, newer = buildDeb(t, ""), buildDeb(t, "99.0.0")
	}
	debDir := filepath.Dir(deb)
	bed := testbed.ForTest(t, testbed.Options{Hosts: 2})
	ctx := context.Background()
	shared := bed.SharedDir()
	binds := []string{"--bind=" + shared, "--bind-ro=" + debDir, "--bind-ro=" + filepath.Dir(newer)}

	h1 := boot(t, ctx, bed.MustHost("h1"), binds...)
	h2 := boot(t, ctx, bed.MustHost("h2"), binds...)
	t.Logf("both hosts booted with systemd as PID 1 (%d and %d here)", h1.leader, h2.leader)

	// Install from the package only, on both hosts.
	for _, s := range []*sysHost{h1, h2} {
		s.must(nil, "dpkg", "-i", deb)
		for _, f := range []string{"/usr/bin/haven", "/lib/systemd/system/haven.service", "/lib/systemd/system/haven-shutdown.service", "/etc/haven/agent.yaml", "/usr/share/man/man1/haven-agent.1.gz", "/usr/share/bash-completion/completions/haven", "/usr/share/doc/haven/README.md", "/usr/lib/haven/shutdown-hook"} {
			s.must(nil, "test", "-e", f)
		}
		if st := s.unitProp("haven.service", "ActiveState"); st != "inactive" {
			t.Fatalf("%s: a fresh install started the agent (%s) before it is configured", s.h.Name, st)
		}
	}
	debVersion := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(deb), "haven_"), "_amd64.deb")
	if v := h1.must(nil, "haven", "version"); !strings.HasPrefix(v, "haven "+debVersion+" ") {
		t.Fatalf("haven version = %q, want the package's %s", v, debVersion)
	}

	// h1 creates the cluster from its config file.
	conf := func(s *sysHost, extra string) []byte {
		a := s.h.Addr.String()
		return []byte(fmt.Sprintf("node: %s\nlisten: %s:7400\npeer-listen: %s:7401\nmetrics-listen: %s:9740\nlog-format: json\n%s", s.h.Name, a, a, a, extra))
	}
	h1.must(conf(h1, "init: true\nstore-members: 1\n"), "sh", "-c", "cat > /etc/haven/agent.yaml")
	// Type=notify: enable --now returns once the agent said READY=1.
	h1.must(nil, "systemctl", "enable", "--now", "haven.service")
	if st := h1.unitProp("haven.service", "ActiveState"); st != "active" {
		t.Fatalf("h1: haven.service %s after enable --now:\n%s", st, h1.journal("haven"))
	}
	if st := h1.unitProp("haven-shutdown.service", "ActiveState"); st != "active" {
		t.Fatalf("h1: haven-shutdown.service is %s: it must be active to drain the host at shutdown", st)
	}
	if !strings.Contains(h1.must(nil, "haven", "agent", "--print-config"), "init: true") {
		t.Fatal("--print-config does not show the config file's settings")
	}
	join := strings.TrimSpace(h1.must(nil, "haven", "token", "create", "--role", "join"))
	h2.must(conf(h2, fmt.Sprintf("join: https://%s:7400\ntoken: %s\n", h1.h.Addr, join)), "sh", "-c", "cat > /etc/haven/agent.yaml")
	h2.must(nil, "systemctl", "enable", "--now", "haven.service")
	h1.must(nil, "haven", "pool", "add", "shared", "--path", shared, "--shared")
	// Every file a guest names must be in a pool: the test guest's kernel
	// and initrd too (the hosts see this machine's copy through the overlay).
	h1.must(nil, "haven", "pool", "add", "testguest", "--path", filepath.Dir(files.Kernel))

	// A guest on h2 (gh), its disk on the shared dir. h1 (oh) is the only
	// store member: it stays up, and gh is the host restarted, upgraded and
	// powered off.
	gh, oh := h2, h1
	disk := filepath.Join(shared, "web1.img")
	if err := testguest.CreateDisk(disk, 1<<20); err != nil {
		t.Fatal(err)
	}
	form, _ := json.Marshal(map[string]any{
		"name": "web1", "memory": testguest.Memory, "vcpus": 1, "migratable": true, "node": gh.h.Name,
		"disks": []guestdef.Disk{{Path: disk, Format: "raw", NoImageLock: true}},
		"boot":  guestdef.Boot{Kernel: files.Kernel, Initrd: files.Initrd, Cmdline: testguest.Cmdline},
	})
	gh.must(form, "haven", "guest", "create", "-f", "-")
	running := func(s *sysHost, on string) func() bool {
		return func() bool {
			rows, err := s.guests()
			r := rows["web1"]
			return err == nil && r.Running && r.State == "started" && r.Node == on
		}
	}
	gh.poll("web1 running on h2", 120*time.Second, running(gh, gh.h.Name))
	pid := qemuPID(disk)
	if pid == 0 {
		t.Fatal("no QEMU process for web1")
	}
	// The guest is outside the agent's cgroup: a scope of its own.
	cg, err := qemu.CgroupOf(pid)
	if err != nil || !strings.Contains(cg, "/machine.slice/haven-guest-web1-") || !strings.HasSuffix(cg, ".scope") {
		t.Fatalf("web1's QEMU (pid %d) is in cgroup %q (%v), not a haven-guest scope", pid, cg, err)
	}
	// (MainPID is a pid of the container's PID namespace: read it there.)
	agentCG := gh.must(nil, "cat", "/proc/"+gh.unitProp("haven.service", "MainPID")+"/cgroup")
	if !strings.Contains(agentCG, "/haven.service\n") {
		t.Fatalf("the agent runs in cgroup %q", agentCG)
	}
	t.Logf("web1's QEMU pid %d in %s; the agent in %s", pid, cg, agentCG)

	sameGuest := func(how string) {
		t.Helper()
		if !alive(pid) || qemuPID(disk) != pid {
			t.Fatalf("after %s web1's QEMU pid %d is gone (now %d):\n%s", how, pid, qemuPID(disk), gh.journal("haven"))
		}
		gh.poll("web1 adopted after "+how, 60*time.Second, func() bool {
			return gh.unitProp("haven.service", "ActiveState") == "active" && running(gh, gh.h.Name)()
		})
		if qemuPID(disk) != pid {
			t.Fatalf("after %s web1 was restarted: pid %d, was %d", how, qemuPID(disk), pid)
		}
	}
	// 1. systemctl restart haven.
	gh.must(nil, "systemctl", "restart", "haven.service")
	sameGuest("systemctl restart haven")
	// 2. kill -9 of the agent: systemd restarts it (Restart=always).
	restarts := atoi(gh.unitProp("haven.service", "NRestarts"))
	gh.must(nil, "kill", "-9", gh.unitProp("haven.service", "MainPID"))
	gh.poll("systemd restarting the killed agent", 60*time.Second, func() bool {
		return atoi(gh.unitProp("haven.service", "NRestarts")) > restarts
	})
	sameGuest("kill -9 of the agent")
	// 3. systemctl stop haven, then start.
	gh.must(nil, "systemctl", "stop", "haven.service")
	if !alive(pid) {
		t.Fatal("systemctl stop haven killed web1")
	}
	if st := gh.unitProp("haven-shutdown.service", "ActiveState"); st != "active" {
		t.Fatalf("stopping the agent stopped haven-shutdown (%s): a later start would not drain at shutdown", st)
	}
	gh.must(nil, "systemctl", "start", "haven.service")
	sameGuest("systemctl stop + start haven")

	// 4. An upgrade by package: postinst restarts the agent, the guest stays.
	gh.must(nil, "dpkg", "-i", newer)
	sameGuest("a package upgrade")
	if v := gh.must(nil, "haven", "version"); !strings.HasPrefix(v, "haven 99.0.0 ") {
		t.Fatalf("after the upgrade haven version = %q", v)
	}
	// The agent reports its version in the node facts; gh and oh now differ.
	statusOut := oh.must(nil, "haven", "status", "-o", "json")
	if !strings.Contains(statusOut, "99.0.0") || !strings.Contains(statusOut, debVersion) {
		t.Logf("haven status does not show both versions (99.0.0 and %s):\n%s", debVersion, statusOut)
	}

	// 5. Power off gh the way an administrator does: haven-shutdown drains
	// it first (the shutdown policy moves web1 to oh), and nothing is fenced.
	t0 := time.Now()
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(gh.log)
			t.Logf("h2's console (with its journal) during its shutdown:\n%s", tail(string(b), 80))
			out, _ := oh.runT(15*time.Second, nil, "haven", "guest", "list")
			ev, _ := oh.runT(15*time.Second, nil, "haven", "events", "-n", "40")
			t.Logf("h1: guests:\n%s\nevents:\n%s\njournal:\n%s", out, ev, tail(oh.journal("haven"), 30))
		}
	}()
	gh.must(nil, "systemctl", "poweroff")
	gh.poll("power off", 5*time.Minute, func() bool {
		select {
		case <-gh.exited:
			return true
		default:
			return false
		}
	})
	oh.poll("web1 running on h1 after h2's poweroff", 120*time.Second, running(oh, oh.h.Name))
	out := oh.must(nil, "haven", "events", "-o", "json", "-n", "500")
	var evs []cluster.Event
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		t.Fatalf("events: %v: %s", err, out)
	}
	for _, e := range evs {
		if e.At.After(t0) && e.Kind == "fence" {
			t.Errorf("a fence after the poweroff of h2: %+v", e)
		}
	}
	t.Logf("h2 powered off gracefully in %v; web1 runs on h1", time.Since(t0).Round(time.Second))

	// 6. Removal and purge leave nothing of the package behind; the guest
	// (in its own scope) keeps running.
	pid2 := qemuPID(disk)
	oh.must(nil, "dpkg", "--purge", "haven")
	for _, f := range []string{"/usr/bin/haven", "/lib/systemd/system/haven.service", "/etc/haven/agent.yaml", "/usr/share/doc/haven"} {
		if _, err := oh.run(nil, "test", "-e", f); err == nil {
			t.Errorf("h1: %s left after purge", f)
		}
	}
	if !alive(pid2) {
		t.Error("removing the package killed the guest")
	}
}

func atoi(s string) int { n, _ := strconv.Atoi(strings.TrimSpace(s)); return n }
