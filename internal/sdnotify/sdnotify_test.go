package sdnotify

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func listen(t *testing.T) (string, *net.UnixConn) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return path, c
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 512)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestNotifySendsDatagram(t *testing.T) {
	path, c := listen(t)
	n := FromEnv(func(k string) string { return map[string]string{"NOTIFY_SOCKET": path}[k] })
	if err := n.Notify(Ready, "STATUS=serving"); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); got != "READY=1\nSTATUS=serving\n" {
		t.Fatalf("got %q", got)
	}
}

func TestNoSocketIsQuiet(t *testing.T) {
	n := FromEnv(func(string) string { return "" })
	if n.Enabled() || n.Notify(Ready) != nil || n.WatchdogInterval() != 0 {
		t.Fatal("a notifier without NOTIFY_SOCKET acts")
	}
}

func TestWatchdogOnlyWhileHealthy(t *testing.T) {
	path, c := listen(t)
	env := map[string]string{"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000", "WATCHDOG_PID": strconv.Itoa(os.Getpid())}
	n := FromEnv(func(k string) string { return env[k] })
	if n.WatchdogInterval() != 40*time.Millisecond {
		t.Fatalf("interval %v", n.WatchdogInterval())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var healthy atomic.Bool
	healthy.Store(true)
	sick := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.RunWatchdog(ctx, func(context.Context) error {
			if healthy.Load() {
				return nil
			}
			return errors.New("store unreachable")
		}, func(err error) {
			select {
			case sick <- err:
			default:
			}
		})
	}()
	if got := read(t, c); got != "WATCHDOG=1\n" {
		t.Fatalf("got %q", got)
	}
	healthy.Store(false)
	select {
	case err := <-sick:
		if err.Error() != "store unreachable" {
			t.Fatalf("unhealthy reported %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a failing health check was not reported")
	}
	cancel()
	<-done
}

func TestWatchdogOfAnotherPID(t *testing.T) {
	env := map[string]string{"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "40000", "WATCHDOG_PID": "1"}
	if FromEnv(func(k string) string { return env[k] }).WatchdogInterval() != 0 {
		t.Fatal("watchdog meant for pid 1 taken as ours")
	}
}
