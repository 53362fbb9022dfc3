package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Host is one test-bed host: a network namespace with one interface, eth0,
// on the bed's bridge, plus its own persistent mount and UTS namespace
// (hostname = Name, /etc/hosts naming every host of the bed).
type Host struct {
	bed     *Bed
	powerMu sync.RWMutex // held for writing by PowerOff/PowerOn, for reading by Start
	// Name is the host's name in the bed: h1, h2, ...
	Name string
	// Netns is the network namespace's name (under /run/netns): hvnK-h1.
	Netns string
	// Addr is the host's address on the bed's subnet.
	Addr netip.Addr
	// Dir is a private working directory for the host (its agent's data,
	// libvirt's directories...), the default working directory of commands.
	Dir string
}

// Bed returns the host's bed.
func (h *Host) Bed() *Bed { return h.bed }

// Mode says which of a host's namespaces a command enters.
type Mode int

const (
	// FullHost enters the host's network, mount and UTS namespaces
	// (nsenter --net --mount --uts): the host's hostname and its own mounts
	// (Host.BindMount), with /sys/fs/cgroup still visible. Use it for agents
	// and libvirtd.
	FullHost Mode = iota
	// NetOnly enters only the network namespace: this machine's mounts and
	// hostname.
	NetOnly
)

func (m Mode) String() string {
	if m == NetOnly {
		return "net-only"
	}
	return "full-host"
}

// Spec describes a command to run in a host.
type Spec struct {
	// Path is the program (looked up in PATH inside the host) and Args its
	// arguments, without the program name.
	Path string
	Args []string
	// Env is added to this process's environment and the host's (Host.Env).
	Env []string
	// Dir is the working directory (default Host.Dir).
	Dir  string
	Mode Mode
	// Role names what the process is to the bed. RoleAgent marks the host's
	// agent, the process AgentKill kills. Anything else is free text shown by
	// status ("libvirtd", "guest web1").
	Role string
	// Standard streams (nil: /dev/null).
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// RoleAgent is the Spec.Role of a host's Haven agent.
const RoleAgent = "agent"

// ErrHostOff is returned when starting a command in a powered-off host.
var ErrHostOff = errors.New("host is powered off")

// Env returns the variables every command in the host gets:
// HAVEN_TESTBED_BED, _DIR, _HOST, _ADDR, _SHARED and _HOSTDIR.
func (h *Host) Env() []string {
	return []string{
		"HAVEN_TESTBED_BED=" + h.bed.cfg.ID,
		"HAVEN_TESTBED_DIR=" + h.bed.dir,
		"HAVEN_TESTBED_HOST=" + h.Name,
		"HAVEN_TESTBED_ADDR=" + h.Addr.String(),
		"HAVEN_TESTBED_SHARED=" + h.bed.cfg.SharedDir,
		"HAVEN_TESTBED_HOSTDIR=" + h.Dir,
	}
}

func (h *Host) nsFiles() (mnt, uts string) {
	return filepath.Join(h.bed.nsDir(), h.Name+".mnt"), filepath.Join(h.bed.nsDir(), h.Name+".uts")
}

// Command builds, without starting it, an exec.Cmd that runs s inside the
// host through nsenter (which execs the program, so the Cmd's PID is the
// program's). The process leads a process group of its own. The bed does
// not track it: use Start for that, or kill it yourself. ctx kills the
// whole process group when done.
func (h *Host) Command(ctx context.Context, s Spec) *exec.Cmd {
	dir := s.Dir
	if dir == "" {
		dir = h.Dir
	}
	var cmd *exec.Cmd
	if h.inside() {
		// Already in the host (a boot script running cmd/testbed): its
		// namespace files are not mounted in its own mount namespace, and
		// there is nothing to enter.
		cmd = exec.CommandContext(ctx, s.Path, s.Args...)
	} else {
		args := []string{"--net=/run/netns/" + h.Netns}
		if s.Mode == FullHost {
			mnt, uts := h.nsFiles()
			// Entering a mount namespace moves to its root: --wd sets the
			// working directory afterwards.
			args = append(args, "--mount="+mnt, "--uts="+uts, "--wd="+dir)
		}
		args = append(args, "--", s.Path)
		args = append(args, s.Args...)
		cmd = exec.CommandContext(ctx, "nsenter", args...)
	}
	cmd.Dir = dir
	cmd.Env = append(append(append([]string(nil), os.Environ()...), h.Env()...), s.Env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s.Stdin, s.Stdout, s.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// inside reports whether this process runs in the host's network namespace
// (then, by the bed's rules, in the whole host).
func (h *Host) inside() bool {
	self, err1 := os.Stat("/proc/self/ns/net")
	ns, err2 := os.Stat("/run/netns/" + h.Netns)
	return err1 == nil && err2 == nil && os.SameFile(self, ns)
}

// Process is a process the bed started in a host and tracks: PowerOff,
// AgentKill and Destroy kill it, and its PID file lets the fence agent and
// other processes find it.
type Process struct {
	Host *Host
	Role string
	Cmd  *exec.Cmd
	PID  int

	done chan struct{}
	err  error // set before done closes
}

// Wait waits for the process to end and returns its exit error.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process's whole process group.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	if err := syscall.Kill(-p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s process %d on host %q: %w", p.Role, p.PID, p.Host.Name, err)
	}
	return nil
}

// Kill sends SIGKILL to the process group and waits for the process to end.
func (p *Process) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	return nil
}

// Start starts s in the host and tracks it until it ends. ctx ending kills
// the process group. It fails with ErrHostOff while the host is powered off.
func (h *Host) Start(ctx context.Context, s Spec) (*Process, error) {
	h.powerMu.RLock()
	defer h.powerMu.RUnlock()
	if !h.PoweredOn() {
		return nil, fmt.Errorf("start %q on host %q: %w (PowerOn it first)", s.Path, h.Name, ErrHostOff)
	}
	cmd := h.Command(ctx, s)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %q on host %q: %w", s.Path, h.Name, err)
	}
	p := &Process{Host: h, Role: s.Role, Cmd: cmd, PID: cmd.Process.Pid, done: make(chan struct{})}
	start, _ := procStart(p.PID)
	rec := ProcRecord{PID: p.PID, Start: start, Role: s.Role, Command: strings.Join(append([]string{s.Path}, s.Args...), " ")}
	if err := writeFileAtomic(h.procFile(p.PID), []byte(rec.String())); err != nil {
		h.bed.log.Error("record process", "node", h.Name, "pid", p.PID, "err", err)
	}
	h.bed.mu.Lock()
	h.bed.procs[p.PID] = p
	h.bed.mu.Unlock()
	h.bed.log.Debug("started process", "node", h.Name, "pid", p.PID, "role", s.Role, "cmd", rec.Command)
	go func() {
		p.err = cmd.Wait()
		os.Remove(h.procFile(p.PID))
		h.bed.mu.Lock()
		delete(h.bed.procs, p.PID)
		h.bed.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Run runs s in the host to its end and returns its output (stdout and
// stderr together, unless s names its own writers).
func (h *Host) Run(ctx context.Context, s Spec) ([]byte, error) {
	var buf bytes.Buffer
	if s.Stdout == nil {
		s.Stdout = &buf
	}
	if s.Stderr == nil {
		s.Stderr = &buf
	}
	p, err := h.Start(ctx, s)
	if err != nil {
		return nil, err
	}
	if err := p.Wait(); err != nil {
		return buf.Bytes(), fmt.Errorf("run %q on host %q: %w: %s", s.Path, h.Name, err, strings.TrimSpace(buf.String()))
	}
	return buf.Bytes(), nil
}

// Shell runs a sh -c script in the host (FullHost mode) and returns its
// output.
func (h *Host) Shell(ctx context.Context, script string) (string, error) {
	out, err := h.Run(ctx, Spec{Path: "sh", Args: []string{"-c", script}, Role: "shell"})
	return string(out), err
}

// BindMount bind-mounts src onto dst inside the host's own mount namespace
// (dst is created if missing), for per-host copies of /etc/libvirt,
// /var/lib/libvirt, /run/libvirt... The mount lasts as long as the bed.
func (h *Host) BindMount(ctx context.Context, src, dst string) error {
	script := fmt.Sprintf("mkdir -p %s && mount --bind %s %s", shellQuote(dst), shellQuote(src), shellQuote(dst))
	if _, err := h.Shell(ctx, script); err != nil {
		return fmt.Errorf("bind-mount %s on %s in host %q: %w", src, dst, h.Name, err)
	}
	return nil
}

// ProcRecord is a process's PID file in the state directory:
// host/<name>/procs/<pid>, one line "start=TICKS role=ROLE cmd=COMMAND".
type ProcRecord struct {
	PID     int
	Start   uint64 // start time in clock ticks since boot; tells a reused PID apart
	Role    string
	Command string
}

func (r ProcRecord) String() string {
	role := r.Role
	if role == "" {
		role = "-"
	}
	return fmt.Sprintf("start=%d role=%s cmd=%s\n", r.Start, strings.ReplaceAll(role, " ", "_"), strings.ReplaceAll(r.Command, "\n", " "))
}

// ParseProcRecord parses a PID file's content.
func ParseProcRecord(pid int, data string) (ProcRecord, error) {
	r := ProcRecord{PID: pid}
	line := strings.TrimRight(data, "\n")
	rest := line
	for rest != "" {
		var field string
		if strings.HasPrefix(rest, "cmd=") {
			field, rest = rest, ""
		} else {
			field, rest, _ = strings.Cut(rest, " ")
		}
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return r, fmt.Errorf("parse PID file of %d: field %q has no '='", pid, field)
		}
		switch k {
		case "start":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return r, fmt.Errorf("parse PID file of %d: start: %w", pid, err)
			}
			r.Start = n
		case "role":
			if v != "-" {
				r.Role = v
			}
		case "cmd":
			r.Command = v
		}
	}
	return r, nil
}

func (h *Host) procFile(pid int) string {
	return filepath.Join(h.bed.hostDir(h.Name), "procs", strconv.Itoa(pid))
}

// Processes returns the host's PID files whose processes still run, from
// this Bed value or any other process using the bed.
func (h *Host) Processes() []ProcRecord {
	dir := filepath.Join(h.bed.hostDir(h.Name), "procs")
	entries, _ := os.ReadDir(dir)
	var out []ProcRecord
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		r, err := ParseProcRecord(pid, string(data))
		if err != nil || !processAlive(pid, r.Start) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// PIDs returns every process running in the host's network namespace,
// whoever started it.
func (h *Host) PIDs() ([]int, error) { return netnsPIDs(h.Netns) }

// StartDetached starts s in the host as a process of its own session, not a
// child this process waits for, and records its PID file; it survives the
// caller (scripts/testbed.sh start). Output goes to s.Stdout/s.Stderr, which
// should be files. PowerOff, AgentKill and Destroy find it by its PID file
// and its namespace.
func (h *Host) StartDetached(s Spec) (int, error) {
	if !h.PoweredOn() {
		return 0, fmt.Errorf("start %q on host %q: %w (power it on first)", s.Path, h.Name, ErrHostOff)
	}
	cmd := h.Command(context.Background(), s)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %q on host %q: %w", s.Path, h.Name, err)
	}
	pid := cmd.Process.Pid
	start, _ := procStart(pid)
	rec := ProcRecord{PID: pid, Start: start, Role: s.Role, Command: strings.Join(append([]string{s.Path}, s.Args...), " ")}
	if err := writeFileAtomic(h.procFile(pid), []byte(rec.String())); err != nil {
		return pid, fmt.Errorf("record process %d on host %q: %w", pid, h.Name, err)
	}
	cmd.Process.Release()
	return pid, nil
}

// PrivateDir gives the host a private copy of path: a directory of this
// machine (host/<name>/root/<path> in the bed dir, returned) bind-mounted
// over path inside the host's mount namespace. Write configuration into the
// returned directory; programs in the host (FullHost mode) see it at path.
// path is created on this machine's filesystem when missing (a mount point
// must exist), and stays as it is outside the hosts.
// For libvirt: /etc/libvirt, /run/libvirt, /var/lib/libvirt,
// /var/log/libvirt, /var/cache/libvirt.
func (h *Host) PrivateDir(ctx context.Context, path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("private dir %q of host %q: want an absolute path", path, h.Name)
	}
	src := filepath.Join(h.bed.hostDir(h.Name), "root", filepath.Clean(path))
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", fmt.Errorf("private dir %s of host %q: %w", path, h.Name, err)
	}
	if err := h.BindMount(ctx, src, path); err != nil {
		return "", err
	}
	return src, nil
}
