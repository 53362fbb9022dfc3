// Package libvirttest owns the libvirt test harness: a real libvirtd (and
// its virtlogd) started as children of the test, each in a mount and UTS
// namespace of its own with private /etc/libvirt, /run/libvirt,
// /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt, so tests never
// touch the machine's libvirt. StartPair adds a network namespace per host,
// joined by a veth pair, with libvirtd listening on TCP there, for
// peer-to-peer live migration between two "hosts".
//
// Everything is killed by PID and every namespace removed at test cleanup.
// Tests reach a host's libvirtd only through its unix socket; TCP traffic
// flows only between the two namespaces, and StartPair refuses to run when a
// test address would be routed anywhere else.
package libvirttest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/hypervisor/libvirt/libvirtd"
)

// pairSeq numbers the pairs of this process, for unique namespace names.
var pairSeq atomic.Int32

// Host is one libvirt host run by the harness.
type Host struct {
	Name string
	// Dir holds the host's private directories (etc, run, lib, log, cache).
	Dir string
	// Socket is libvirtd's unix socket, reachable from the test process.
	Socket string
	// QEMUPIDDir is where this libvirtd writes its qemu pid files.
	QEMUPIDDir string
	// Addr is the host's address inside its network namespace; empty for a
	// host started by Start (no network namespace, no TCP).
	Addr string
	// URI is the host's libvirt URI for migrations (qemu+tcp://Addr/system).
	URI string
	// NetNS is the network namespace name (under /run/netns), if any.
	NetNS string
	// TLSDir is where this libvirtd's QEMU reads its migration TLS
	// credentials (libvirtd.MigrateTLSPath inside the host), as the test
	// process sees it; empty for a host started by Start.
	TLSDir string

	t        testing.TB
	mu       sync.Mutex
	virtlogd *exec.Cmd
	libvirtd *exec.Cmd
	// closed when the current libvirtd has exited (and been reaped)
	libvirtdExited chan struct{}
	virtlogdExited chan struct{}
	stopped        bool
}

// Available says why the harness cannot run here, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("libvirt test hosts need root (mount namespaces, libvirtd)")
	}
	for _, tool := range []string{"libvirtd", "virtlogd", "unshare", "nsenter", "ip", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not installed (scripts/deps.sh installs libvirt-daemon-system, qemu-system-x86, iproute2, util-linux)", tool)
		}
	}
	return nil
}

// Require skips the test when the harness cannot run here, or fails it when
// CI=true.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("libvirt test host unavailable: %v", err)
		}
		t.Skipf("libvirt test host unavailable: %v", err)
	}
}

// Start runs one libvirt host for the test: virtlogd and libvirtd in a
// private mount and UTS namespace, no TCP listener.
func Start(t testing.TB) *Host {
	t.Helper()
	Require(t)
	h := newHost(t, "lvt0", "", "")
	h.start()
	return h
}

// StartPair runs two libvirt hosts, each in its own network, mount and UTS
// namespace, joined by a veth pair, with libvirtd listening without
// authentication on its namespace address: enough for peer-to-peer live
// migration between them.
func StartPair(t testing.TB) (*Host, *Host) {
	t.Helper()
	Require(t)
	n := pairSeq.Add(1)
	id := strconv.Itoa(os.Getpid()%100000) + "x" + strconv.Itoa(int(n))
	nsA, nsB := "hvlv"+id+"a", "hvlv"+id+"b"
	// A subnet per pair; it exists only inside the two namespaces.
	sub := 16 + (os.Getpid()+int(n))%200
	addrA, addrB := fmt.Sprintf("10.213.%d.1", sub), fmt.Sprintf("10.213.%d.2", sub)
	setupNetwork(t, nsA, nsB, addrA, addrB)
	hosts := []peer{{"lvta", addrA}, {"lvtb", addrB}}
	a := newHost(t, "lvta", nsA, addrA, hosts...)
	b := newHost(t, "lvtb", nsB, addrB, hosts...)
	a.start()
	b.start()
	return a, b
}

func setupNetwork(t testing.TB, nsA, nsB, addrA, addrB string) {
	t.Helper()
	for _, ns := range []string{nsA, nsB} {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			t.Fatalf("network namespace %s already exists (left over by an earlier run of this test process id?); delete it with: ip netns del %s", ns, ns)
		}
	}
	run(t, "ip", "netns", "add", nsA)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", nsA).Run() })
	run(t, "ip", "netns", "add", nsB)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", nsB).Run() })
	run(t, "ip", "link", "add", "lvt0", "netns", nsA, "type", "veth", "peer", "name", "lvt0", "netns", nsB)
	for _, x := range []struct{ ns, addr string }{{nsA, addrA}, {nsB, addrB}} {
		run(t, "ip", "-n", x.ns, "link", "set", "lo", "up")
		run(t, "ip", "-n", x.ns, "addr", "add", x.addr+"/24", "dev", "lvt0")
		run(t, "ip", "-n", x.ns, "link", "set", "lvt0", "up")
	}
	// Refuse to go on unless each peer is reached over the veth, directly.
	for _, x := range []struct{ ns, peer string }{{nsA, addrB}, {nsB, addrA}} {
		out, err := exec.Command("ip", "-n", x.ns, "-o", "route", "get", x.peer).CombinedOutput()
		route := string(out)
		if err != nil || !strings.Contains(route, "dev lvt0") || strings.Contains(route, " via ") {
			t.Fatalf("refusing to run: in namespace %s, %s is not routed directly over the test veth (ip route get: %q, %v)", x.ns, x.peer, strings.TrimSpace(route), err)
		}
		if out, _ := exec.Command("ip", "-n", x.ns, "route", "show", "default").CombinedOutput(); strings.TrimSpace(string(out)) != "" {
			t.Fatalf("refusing to run: namespace %s has a default route: %s", x.ns, out)
		}
	}
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

func newHost(t testing.TB, name, netns, addr string, peers ...peer) *Host {
	dir := t.TempDir()
	h := &Host{Name: name, Dir: dir, NetNS: netns, Addr: addr, t: t}
	h.Socket = filepath.Join(dir, "run", libvirtd.Socket)
	h.QEMUPIDDir = filepath.Join(dir, "run", "qemu")
	if addr != "" {
		h.URI = "qemu+tcp://" + addr + "/system"
	}
	cfg := libvirtd.Config{UUID: libvirtd.HostUUID(name, time.Now().UnixNano()), ListenAddr: addr, MigrateTLS: addr != "", Debug: os.Getenv("HAVEN_LIBVIRTTEST_DEBUG") != ""}
	if cfg.MigrateTLS {
		h.TLSDir = filepath.Join(dir, "etc", libvirtd.MigrateTLSSub)
	}
	if err := libvirtd.Prepare(dir, cfg); err != nil {
		t.Fatal(err)
	}
	hosts := "127.0.0.1 localhost\n"
	if addr == "" {
		hosts += "127.0.1.1 " + name + "\n"
	}
	for _, p := range peers {
		hosts += p.addr + " " + p.name + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.cleanup)
	return h
}

type peer struct{ name, addr string }

// start launches virtlogd (which creates the namespaces and holds them) and
// then libvirtd inside them.
func (h *Host) start() {
	t := h.t
	t.Helper()
	libvirtd.StartReaper()
	mounts := libvirtd.MountScript(h.Dir)
	// An /etc/hosts of the host's own, so that libvirt resolves the host
	// names without asking a DNS server the namespace cannot reach.
	mounts += fmt.Sprintf("mount --bind %s /etc/hosts && ", filepath.Join(h.Dir, "hosts"))
	script := "set -e; hostname " + h.Name + "; " + mounts + "exec virtlogd --pid-file " + libvirtd.VirtlogdPIDFile
	var args []string
	if h.NetNS != "" {
		args = append(args, "nsenter", "--net=/run/netns/"+h.NetNS)
	}
	args = append(args, "unshare", "--mount", "--uts", "--propagation", "private", "--", "/bin/sh", "-c", script)
	cmd := exec.Command(args[0], args[1:]...)
	logf, err := os.Create(filepath.Join(h.Dir, "virtlogd.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start virtlogd for test host %s: %v", h.Name, err)
	}
	logf.Close()
	h.mu.Lock()
	h.virtlogd = cmd
	h.mu.Unlock()
	vlExited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(vlExited) }()
	h.virtlogdExited = vlExited
	// virtlogd is up once its socket appears in the private run dir.
	if err := waitFor(10*time.Second, func() bool {
		select {
		case <-vlExited:
			return true
		default:
		}
		_, err := os.Stat(filepath.Join(h.Dir, "run", "virtlogd-sock"))
		return err == nil
	}); err != nil || isClosed(vlExited) {
		b, _ := os.ReadFile(filepath.Join(h.Dir, "virtlogd.out"))
		t.Fatalf("virtlogd of test host %s did not come up: %v: %s", h.Name, err, b)
	}
	if err := h.StartLibvirtd(); err != nil {
		t.Fatal(err)
	}
}

// StartLibvirtd starts libvirtd in the host's namespaces and waits until it
// accepts connections. Used at start and to restart it after KillLibvirtd.
func (h *Host) StartLibvirtd() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.libvirtd != nil {
		return fmt.Errorf("libvirtd of test host %s already runs", h.Name)
	}
	if h.virtlogd == nil {
		return fmt.Errorf("test host %s is not running", h.Name)
	}
	_ = os.Remove(h.Socket)
	pid := strconv.Itoa(h.virtlogd.Process.Pid)
	args := []string{"--target", pid, "--mount", "--uts"}
	if h.NetNS != "" {
		args = append(args, "--net")
	}
	args = append(args, "libvirtd", "--pid-file", libvirtd.PIDFile)
	if h.Addr != "" {
		args = append(args, "--listen")
	}
	cmd := exec.Command("nsenter", args...)
	logf, err := os.OpenFile(filepath.Join(h.Dir, "libvirtd.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start libvirtd for test host %s: %w", h.Name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	h.libvirtd = cmd
	h.libvirtdExited = exited
	err = waitFor(30*time.Second, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		c, err := net.DialTimeout("unix", h.Socket, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	select {
	case <-exited:
		h.libvirtd = nil
		b, _ := os.ReadFile(filepath.Join(h.Dir, "libvirtd.out"))
		return fmt.Errorf("libvirtd of test host %s exited at start: %s", h.Name, b)
	default:
	}
	if err != nil {
		return fmt.Errorf("libvirtd of test host %s did not come up: %w", h.Name, err)
	}
	return nil
}

// LibvirtdPID is the running libvirtd's process id, 0 when it does not run.
func (h *Host) LibvirtdPID() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.libvirtd == nil {
		return 0
	}
	return h.libvirtd.Process.Pid
}

// KillLibvirtd kills libvirtd with SIGKILL (guests keep running, as when the
// daemon crashes) and waits for it to exit.
func (h *Host) KillLibvirtd() {
	h.signalLibvirtd(syscall.SIGKILL)
}

// StopLibvirtd stops libvirtd with SIGTERM (as a restart of the service
// would) and waits for it to exit.
func (h *Host) StopLibvirtd() {
	h.signalLibvirtd(syscall.SIGTERM)
}

func (h *Host) signalLibvirtd(sig syscall.Signal) {
	h.mu.Lock()
	cmd, exited := h.libvirtd, h.libvirtdExited
	h.libvirtd = nil
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// SuspendLibvirtd stops libvirtd with SIGSTOP, so it hangs: connections stay
// open but nothing answers. ResumeLibvirtd continues it.
func (h *Host) SuspendLibvirtd() { h.libvirtdSignal(syscall.SIGSTOP) }

// ResumeLibvirtd continues a libvirtd stopped by SuspendLibvirtd.
func (h *Host) ResumeLibvirtd() { h.libvirtdSignal(syscall.SIGCONT) }

func (h *Host) libvirtdSignal(sig syscall.Signal) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.libvirtd != nil {
		_ = h.libvirtd.Process.Signal(sig)
	}
}

// QEMUPID returns the pid of the qemu process running guest name on this
// host, from libvirt's pid file.
func (h *Host) QEMUPID(name string) (int, error) {
	b, err := os.ReadFile(filepath.Join(h.QEMUPIDDir, name+".pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// LibvirtdLog returns the tail of libvirtd's log, for failure messages.
func (h *Host) LibvirtdLog() string {
	var out string
	for _, f := range []string{filepath.Join(h.Dir, "libvirtd.out"), filepath.Join(h.Dir, "log", "libvirtd.log")} {
		b, _ := os.ReadFile(f)
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		out += fmt.Sprintf("== %s\n%s\n", f, b)
	}
	return out
}

// cleanup kills the host's qemu processes, libvirtd and virtlogd by PID.
func (h *Host) cleanup() {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return
	}
	h.stopped = true
	h.mu.Unlock()
	// Guests first: their pids come from libvirt's pid files; check that
	// each is a qemu before killing it.
	entries, _ := os.ReadDir(h.QEMUPIDDir)
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".pid") {
			continue
		}
		pid, err := h.QEMUPID(strings.TrimSuffix(e.Name(), ".pid"))
		if err != nil || pid <= 1 {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && strings.Contains(exe, "qemu") {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	h.KillLibvirtd()
	libvirtd.SaveCapabilities(filepath.Join(h.Dir, "cache"))
	h.mu.Lock()
	vl := h.virtlogd
	h.virtlogd = nil
	h.mu.Unlock()
	if vl != nil {
		_ = vl.Process.Kill()
		<-h.virtlogdExited
	}
}

func waitFor(d time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
