package libvirt

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/hypervisor"
)

// The driver watches each guest's qemu process itself, through a pidfd, in
// addition to libvirt's events: a pidfd turns readable the moment the
// process exits, while libvirt reports the death only once the process has
// been reaped (it polls for it; on a host whose init reaps orphans slowly
// that costs seconds) and, right after a libvirtd restart, sometimes not at
// all. An exit that no stop, kill, migration or guest shutdown explains is
// reported as a crash (at once when qemu died of a signal or an error);
// libvirt's own report of it follows and is folded into the first (a run
// ends once).

// watchQEMU starts watching the qemu process of guest name, once per
// process. It needs the pid file in cfg.QEMUPIDDir; without it the driver
// relies on libvirt's events alone.
func (d *Driver) watchQEMU(name string) {
	if d.stopR < 0 {
		return
	}
	pid := d.qemuPID(name)
	if pid <= 1 {
		return
	}
	d.mu.Lock()
	if d.watched[name] == pid {
		d.mu.Unlock()
		return
	}
	select {
	case <-d.closed:
		d.mu.Unlock()
		return
	default:
	}
	d.watched[name] = pid
	d.wg.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.wg.Done()
		exited, err := d.waitExit(pid, name)
		if err != nil {
			d.log.Debug("cannot watch qemu process", "guest", name, "pid", pid, "err", err)
			d.mu.Lock()
			if d.watched[name] == pid {
				delete(d.watched, name)
			}
			d.mu.Unlock()
			return
		}
		if exited {
			st, known := exitStatus(pid)
			d.qemuExited(name, pid, st, known)
		}
	}()
}

// waitExit blocks until process pid exits (true) or the driver closes
// (false). It checks first that pid is the qemu of guest name.
func (d *Driver) waitExit(pid int, name string) (bool, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false, fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(fd)
	// Opened first, checked second: the pidfd pins the process we checked.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false, err
	}
	if !bytes.Contains(cmdline, []byte("guest="+name+",")) && !bytes.Contains(cmdline, []byte("guest="+name+"\x00")) {
		return false, errors.New("the pid file names a process that is not this guest's qemu")
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(d.stopR), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, err
		}
		if fds[1].Revents != 0 {
			return false, nil
		}
		if fds[0].Revents != 0 {
			return true, nil
		}
	}
}

// qemuExited handles the exit of a watched qemu process. A qemu that dies
// of a signal or exits with an error crashed: that is reported at once. A
// clean exit (status 0: qemu was asked to quit, by libvirt after a guest
// powered off, or by someone's destroy) or one whose status can no longer
// be read waits up to exitGrace for libvirt's explanation; only when none
// comes is it a crash.
func (d *Driver) qemuExited(name string, pid int, status int, statusKnown bool) {
	d.mu.Lock()
	if d.watched[name] == pid {
		delete(d.watched, name)
	}
	d.exited[name] = pid
	d.mu.Unlock()
	crashed := statusKnown && status != 0
	if !crashed {
		deadline := time.NewTimer(exitGrace)
		defer deadline.Stop()
	wait:
		for {
			d.mu.Lock()
			explained := d.quiet[name] || d.ended[name]
			changed := d.changed
			d.mu.Unlock()
			if explained {
				break wait
			}
			select {
			case <-changed:
			case <-deadline.C:
				break wait
			case <-d.closed:
				return
			}
		}
	}
	d.mu.Lock()
	expected := d.quiet[name]
	d.mu.Unlock()
	if expected {
		d.log.Debug("qemu exited as expected", "guest", name, "pid", pid)
		return
	}
	reason := "qemu-exited"
	if statusKnown {
		reason = exitReason(status)
	}
	d.emit(hypervisor.Event{Guest: name, Kind: hypervisor.EventCrashed, Reason: reason, At: d.cfg.Now()})
}

// exitGrace is how long a clean qemu exit waits for libvirt to say why.
const exitGrace = 300 * time.Millisecond

// exitStatus reads a zombie's wait status from /proc (field 52 of stat,
// "exit_code"); false once the process has been reaped.
func exitStatus(pid int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); exit_code is field 52.
	if len(f) < 50 || f[0] != "Z" {
		return 0, false
	}
	st, err := strconv.Atoi(f[49])
	if err != nil {
		return 0, false
	}
	return st, true
}

// exitReason describes a wait status: "qemu-killed-by-SIGKILL",
// "qemu-exit-1".
func exitReason(status int) string {
	ws := syscall.WaitStatus(status)
	if ws.Signaled() {
		return "qemu-killed-by-" + unix.SignalName(ws.Signal())
	}
	return fmt.Sprintf("qemu-exit-%d", ws.ExitStatus())
}

// expectExit marks that the guest's qemu may exit now without that being a
// crash (our stop, kill or migration); done undoes it when the operation
// failed and the guest still runs.
func (d *Driver) expectExit(name string) (done func(failed bool)) {
	d.mu.Lock()
	d.quiet[name] = true
	d.mu.Unlock()
	return func(failed bool) {
		if failed {
			d.mu.Lock()
			d.quiet[name] = false
			d.mu.Unlock()
		}
	}
}

// qemuGone reports whether the driver saw the guest's qemu exit and libvirt
// has not started another since: its pid file names the exited process, or
// is already gone (libvirt removes it while it tears the guest down).
func (d *Driver) qemuGone(name string) bool {
	pid := d.qemuPID(name)
	d.mu.Lock()
	defer d.mu.Unlock()
	ex := d.exited[name]
	return ex != 0 && (pid == 0 || pid == ex)
}
