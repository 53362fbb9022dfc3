package libvirttest

import (
	"errors"
	"os"
	"syscall"
	"testing"
)

// TestPairCleanup starts two namespace hosts in a subtest and checks that
// its cleanup leaves no daemon and no namespace behind.
func TestPairCleanup(t *testing.T) {
	Require(t)
	var pids []int
	var netns []string
	t.Run("pair", func(t *testing.T) {
		a, b := StartPair(t)
		for _, h := range []*Host{a, b} {
			if h.URI == "" || h.Addr == "" || h.NetNS == "" {
				t.Fatalf("host %s has no address: %+v", h.Name, h)
			}
			pids = append(pids, h.LibvirtdPID(), h.virtlogd.Process.Pid)
			netns = append(netns, h.NetNS)
		}
		if a.Addr == b.Addr || a.NetNS == b.NetNS {
			t.Fatalf("hosts share an address or namespace: %s %s", a.Addr, b.Addr)
		}
	})
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still exists after cleanup (kill 0: %v)", pid, err)
		}
	}
	for _, ns := range netns {
		if _, err := os.Stat("/run/netns/" + ns); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("network namespace %s still exists after cleanup", ns)
		}
	}
}
