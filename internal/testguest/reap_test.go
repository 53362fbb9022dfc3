package testguest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestKillUnder(t *testing.T) {
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "run", "g1", "qemu.pid")
	if err := os.MkdirAll(filepath.Dir(pidfile), 0o755); err != nil {
		t.Fatal(err)
	}
	// A process whose command line names the pid file, as QEMU's does.
	cmd := exec.Command("sh", "-c", "sleep 60", "-pidfile", pidfile)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	if err := os.WriteFile(pidfile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A pid file naming a process that is not ours is left alone.
	other := filepath.Join(dir, "run", "g2", "qemu.pid")
	os.MkdirAll(filepath.Dir(other), 0o755)
	os.WriteFile(other, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)

	if n := KillUnder(dir); n != 1 {
		t.Fatalf("KillUnder killed %d processes, want 1", n)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the process named by the pid file still runs")
	}
}
