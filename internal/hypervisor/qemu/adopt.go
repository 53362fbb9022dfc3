package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
)

// watchAdopted waits for an adopted QEMU (not our child) to exit.
func (d *Driver) watchAdopted(g *guest, pidfd int) {
	defer unix.Close(pidfd)
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if err == nil && fds[0].Revents != 0 {
			break
		}
		if err != nil && err != unix.EINTR {
			d.log.Error("watch adopted qemu", "guest", g.name, "pid", g.pid, "err", err)
			// Fall back to polling the process.
			for processAlive(g.pid) {
				time.Sleep(100 * time.Millisecond)
			}
			break
		}
	}
	d.onExit(g, "qemu exited")
}

// adoptAll adopts every guest directory whose QEMU still runs and removes the
// rest.
func (d *Driver) adoptAll(ctx context.Context) {
	entries, err := os.ReadDir(d.cfg.RunDir)
	if err != nil {
		d.log.Error("read run dir", "err", err)
		return
	}
	// In parallel: a guest whose monitor does not answer costs AdoptTimeout,
	// once, not once per guest.
	var wg sync.WaitGroup
	for _, e := range entries {
		if !e.IsDir() || !guestdef.ValidName(e.Name()) {
			continue
		}
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			if err := d.adopt(ctx, name); err != nil {
				d.log.Warn("not adopting guest", "guest", name, "err", err)
			}
		}(e.Name())
	}
	wg.Wait()
}

func (d *Driver) adopt(ctx context.Context, name string) error {
	dir := d.guestDir(name)
	sock := filepath.Join(dir, "qmp.sock")
	pid := readPID(dir)
	if pid <= 0 || !processAlive(pid) || !isOurQEMU(pid, sock) {
		os.RemoveAll(dir)
		return fmt.Errorf("no QEMU runs it any more (pid %d); removed %s", pid, dir)
	}
	var def guestdef.Definition
	if b, err := os.ReadFile(filepath.Join(dir, "def.json")); err == nil {
		json.Unmarshal(b, &def)
	}
	def.Name = name
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("watch QEMU pid %d: %w", pid, err)
	}
	_, incErr := os.Stat(filepath.Join(dir, "incoming"))
	g := &guest{name: name, dir: dir, def: def, pid: pid, exited: make(chan struct{}), agentMu: make(chan struct{}, 1), incoming: incErr == nil}
	d.setState(g, hypervisor.Running, "adopted")
	d.mu.Lock()
	d.guests[name] = g
	d.mu.Unlock()
	go d.watchAdopted(g, pidfd)
	actx, cancel := context.WithTimeout(ctx, d.cfg.AdoptTimeout)
	defer cancel()
	mon, err := d.connect(actx, g, sock)
	if err != nil {
		d.log.Error("adopted guest has no QMP monitor: it can only be killed", "guest", name, "pid", pid, "err", err)
		d.mu.Lock()
		d.setState(g, hypervisor.Running, "adopted without monitor")
		d.mu.Unlock()
		return nil
	}
	d.mu.Lock()
	g.mon = mon
	d.mu.Unlock()
	var st struct {
		Status string `json:"status"`
	}
	if err := mon.run(actx, "query-status", nil, &st); err == nil {
		d.mu.Lock()
		d.applyRunState(g, st.Status)
		if st.Status == "running" {
			g.incoming = false
		}
		d.mu.Unlock()
	}
	d.log.Info("adopted guest", "guest", name, "pid", pid, "state", g.state)
	return nil
}

func readPID(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "qemu.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// isOurQEMU reports whether pid's command line uses the QMP socket sock (so a
// recycled pid is not mistaken for the guest).
func isOurQEMU(pid int, sock string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	return strings.Contains(string(b), "unix:"+sock+",")
}
