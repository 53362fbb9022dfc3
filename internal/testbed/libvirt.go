package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/haven-ha/haven/internal/hypervisor/libvirt/libvirtd"
)

// Roles of a host's libvirt daemons (Spec.Role, shown by status).
const (
	RoleLibvirtd = "libvirtd"
	RoleVirtlogd = "virtlogd"
)

// libvirtRoot holds the host's private libvirt directories (etc, run, lib,
// log, cache), mounted over /etc/libvirt... inside the host.
func (h *Host) libvirtRoot() string { return filepath.Join(h.bed.hostDir(h.Name), "libvirt") }

// LibvirtSocket is the path, on this machine, of the read-write socket of
// the host's libvirtd (/run/libvirt/libvirt-sock inside the host).
func (h *Host) LibvirtSocket() string {
	return filepath.Join(h.libvirtRoot(), "run", libvirtd.Socket)
}

// LibvirtURI is the URI the host's peers migrate guests to it with: TLS
// with the certificates their agents write in their /etc/libvirt/haven-pki
// (the only way in: the host's libvirtd does not listen on plain TCP).
func (h *Host) LibvirtURI() string {
	return "qemu+tls://" + h.Addr.String() + "/system?pkipath=" + libvirtd.PKIPath
}

// StartLibvirt boots the host's libvirt, as a host's init would: private
// /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt,
// /var/cache/libvirt and /etc/pki mounted in the host (once; the mounts
// last as long as the bed), an empty /run/libvirt, then virtlogd and libvirtd, listening
// with TLS on the host's address for peer-to-peer migration: a client
// must present a certificate of the CA in /etc/libvirt/haven-pki, which
// the host's Haven agent fills with the cluster's (until then a
// placeholder CA of the host's own: libvirtd.Config.ListenTLS).
// It returns once libvirtd accepts connections on its socket. The daemons
// are the host's processes (roles RoleVirtlogd and RoleLibvirtd): PowerOff
// kills them with the guests they run, and ctx ending kills them too.
//
// Detached starts them as StartDetached does, to outlive the caller
// (scripts/testbed.sh); ctx then only bounds the wait.
//
// The calling process becomes the subreaper of the qemu processes libvirtd
// orphans, so that libvirt sees them gone at once (libvirtd.StartReaper).
func (h *Host) StartLibvirt(ctx context.Context, detached bool) error {
	if err := requireLibvirt(); err != nil {
		return fmt.Errorf("start libvirt on host %q: %w", h.Name, err)
	}
	for _, r := range h.Processes() {
		if r.Role == RoleLibvirtd || r.Role == RoleVirtlogd {
			return fmt.Errorf("start libvirt on host %q: %s already runs (pid %d)", h.Name, r.Role, r.PID)
		}
	}
	root := h.libvirtRoot()
	cfg := libvirtd.Config{UUID: libvirtd.HostUUID(h.bed.cfg.ID+"-"+h.Name, time.Now().UnixNano()), ListenAddr: h.Addr.String(), ListenTLS: true, MigrateTLS: true}
	if err := libvirtd.Prepare(root, cfg); err != nil {
		return fmt.Errorf("start libvirt on host %q: %w", h.Name, err)
	}
	if err := h.mountLibvirt(ctx, root); err != nil {
		return err
	}
	if !detached {
		libvirtd.StartReaper()
	}
	logDir := filepath.Join(root, "log")
	vl, err := h.launch(ctx, detached, Spec{Path: "virtlogd", Args: []string{"--pid-file", libvirtd.VirtlogdPIDFile}, Role: RoleVirtlogd}, filepath.Join(logDir, "virtlogd.out"))
	if err != nil {
		return fmt.Errorf("start libvirt on host %q: %w", h.Name, err)
	}
	if err := h.waitDaemon(ctx, RoleVirtlogd, vl, filepath.Join(root, "run", "virtlogd-sock"), filepath.Join(logDir, "virtlogd.out")); err != nil {
		return err
	}
	lv, err := h.launch(ctx, detached, Spec{Path: "libvirtd", Args: []string{"--listen", "--pid-file", libvirtd.PIDFile}, Role: RoleLibvirtd}, filepath.Join(logDir, "libvirtd.out"))
	if err != nil {
		return fmt.Errorf("start libvirt on host %q: %w", h.Name, err)
	}
	if err := h.waitDaemon(ctx, RoleLibvirtd, lv, h.LibvirtSocket(), filepath.Join(logDir, "libvirtd.out")); err != nil {
		return err
	}
	h.bed.log.Info("libvirt up", "node", h.Name, "socket", h.LibvirtSocket())
	return nil
}

// SaveLibvirtCapabilities saves the QEMU capabilities probed by the host's
// libvirtd in the shared cache, for the next daemon (call it when the bed is
// done); the bed kills the daemons with the host.
func (h *Host) SaveLibvirtCapabilities() {
	libvirtd.SaveCapabilities(filepath.Join(h.libvirtRoot(), "cache"))
}

// mountLibvirt mounts the private directories in the host, once.
func (h *Host) mountLibvirt(ctx context.Context, root string) error {
	marker := filepath.Join(h.bed.hostDir(h.Name), "libvirt.mounted")
	if fileExists(marker) {
		return nil
	}
	for _, d := range libvirtd.Dirs {
		if err := h.BindMount(ctx, filepath.Join(root, d.Sub), d.Path); err != nil {
			return fmt.Errorf("start libvirt: %w", err)
		}
	}
	return writeFileAtomic(marker, nil)
}

// launch starts s with its output appended to logFile, tracked or detached,
// and returns a check of whether the process has ended.
func (h *Host) launch(ctx context.Context, detached bool, s Spec, logFile string) (exited func() bool, err error) {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s.Stdout, s.Stderr = f, f
	if detached {
		pid, err := h.StartDetached(s)
		if err != nil {
			return nil, err
		}
		start, _ := procStart(pid)
		return func() bool { return !processAlive(pid, start) }, nil
	}
	p, err := h.Start(ctx, s)
	if err != nil {
		return nil, err
	}
	return p.Exited, nil
}

// waitDaemon waits until socket accepts connections, failing if the daemon
// exits first or within 30 s.
func (h *Host) waitDaemon(ctx context.Context, role string, exited func() bool, socket, logFile string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if exited() {
			b, _ := os.ReadFile(logFile)
			return fmt.Errorf("start libvirt on host %q: %s exited at start: %s", h.Name, role, tailBytes(b, 2000))
		}
		if c, err := net.DialTimeout("unix", socket, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			b, _ := os.ReadFile(logFile)
			return fmt.Errorf("start libvirt on host %q: %s not answering on %s: %w: %s", h.Name, role, socket, ctx.Err(), tailBytes(b, 2000))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// LibvirtdKill kills the host's libvirtd with SIGKILL, as a crash of the
// daemon: its guests keep running. RestartLibvirtd starts it again.
func (b *Bed) LibvirtdKill(ctx context.Context, host string) error {
	h, err := b.lookup(host)
	if err != nil {
		return err
	}
	n := 0
	for _, r := range h.Processes() {
		if r.Role == RoleLibvirtd {
			n++
			killGroup(r.PID, r.Start)
		}
	}
	if n == 0 {
		return fmt.Errorf("kill libvirtd on host %q: it does not run (StartLibvirt first)", host)
	}
	b.log.Info("libvirtd killed", "node", host, "op", "libvirtdkill")
	return b.waitGone(ctx, h, func(r ProcRecord) bool { return r.Role == RoleLibvirtd })
}

// RestartLibvirtd starts the host's libvirtd again after LibvirtdKill,
// without touching virtlogd or /run/libvirt (the guests' state files): the
// daemon reconnects to the guests still running.
func (h *Host) RestartLibvirtd(ctx context.Context, detached bool) error {
	logFile := filepath.Join(h.libvirtRoot(), "log", "libvirtd.out")
	lv, err := h.launch(ctx, detached, Spec{Path: "libvirtd", Args: []string{"--listen", "--pid-file", libvirtd.PIDFile}, Role: RoleLibvirtd}, logFile)
	if err != nil {
		return fmt.Errorf("restart libvirtd on host %q: %w", h.Name, err)
	}
	return h.waitDaemon(ctx, RoleLibvirtd, lv, h.LibvirtSocket(), logFile)
}

// LibvirtLog returns the tail of the host's libvirtd output and log.
func (h *Host) LibvirtLog() string {
	var out string
	for _, f := range []string{"libvirtd.out", "libvirtd.log"} {
		b, _ := os.ReadFile(filepath.Join(h.libvirtRoot(), "log", f))
		out += fmt.Sprintf("== %s of %s\n%s\n", f, h.Name, tailBytes(b, 3000))
	}
	return out
}

func requireLibvirt() error {
	for _, tool := range []string{"libvirtd", "virtlogd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return errors.New(tool + " not installed (scripts/deps.sh installs libvirt-daemon-system)")
		}
	}
	return nil
}

func tailBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
