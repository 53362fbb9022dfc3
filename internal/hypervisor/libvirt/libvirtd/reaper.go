package libvirtd

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// libvirtd daemonizes each qemu: the process is orphaned at once and
// belongs to whoever reaps orphans. libvirt then polls for the process to be
// gone after it stops a guest (destroy, shutdown, migration, or its death),
// and a zombie counts as alive. On a host whose init reaps orphans slowly
// (this test machine's takes about 1.5 s) every stop, crash report and
// migration of libvirt takes that much longer than on a systemd host.
//
// So the test process makes itself a child subreaper: orphaned qemu
// processes become its children and are reaped as soon as they exit. Only
// zombies named qemu-system-* are reaped; the test's own commands are left
// to os/exec. HAVEN_LIBVIRTTEST_NO_REAPER=1 turns this off, to measure with
// the machine's init instead.

var reaperOnce sync.Once

// StartReaper makes this process the subreaper of qemu processes, once.
func StartReaper() {
	reaperOnce.Do(func() {
		if os.Getenv("HAVEN_LIBVIRTTEST_NO_REAPER") != "" {
			return
		}
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return
		}
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGCHLD)
		go func() {
			// SIGCHLD wakes it; a slow tick catches a coalesced signal.
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-ch:
				case <-tick.C:
				}
				reapQEMUZombies()
			}
		}()
	})
}

// reapQEMUZombies reaps this process's zombie children named qemu-system-*.
func reapQEMUZombies() {
	self := os.Getpid()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		b, err := os.ReadFile(dir + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || close < open || len(b) < close+4 {
			continue
		}
		comm := string(b[open+1 : close])
		var state byte
		var ppid int
		if _, err := fmt.Sscanf(string(b[close+2:]), "%c %d", &state, &ppid); err != nil {
			continue
		}
		if ppid != self || state != 'Z' || len(comm) < 11 || comm[:11] != "qemu-system" {
			continue
		}
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	}
}
