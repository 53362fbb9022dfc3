package testguest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// KillUnder kills every QEMU process whose pid file lies under dir (the QEMU
// driver keeps RUN_DIR/GUEST/qemu.pid). Guests outlive their agent by
// design, so tests that run agents call it at cleanup. A PID is killed only
// while its command line still names that pid file, so a reused PID is left
// alone. It returns how many it killed.
func KillUnder(dir string) int {
	killed := 0
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "qemu.pid" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			return nil
		}
		cmd, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil || !strings.Contains(string(cmd), path) {
			return nil
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			killed++
		}
		return nil
	})
	return killed
}
