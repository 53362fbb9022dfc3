package failover

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/hypervisor/guestagent"
	"github.com/haven-ha/haven/internal/testguest"
)

// TestGuestHealth: a guest whose service is killed, whose kernel panics or
// which hangs is noticed on its host and restarted there, with the reason
// in the event log. Its check: `pidof httpd` through the guest agent every
// 2 s, 3 failures; it declares a guest agent, so it also has the heartbeat.
func TestGuestHealth(t *testing.T) {
	eachHypervisor(t, func(t *testing.T, hv string) {
		c := newCluster(t, options{hypervisor: hv})
		c.domain("h1-only", "h1")
		const interval, failures = 2 * time.Second, 3
		c.guestWith("g1", "h1-only", "", map[string]any{
			"guest_agent":  true,
			"max_restarts": 5,
			"health": []map[string]any{{"name": "httpd", "exec": []string{"/bin/pidof", "httpd"},
				"interval": interval.String(), "timeout": "2s", "failures": failures, "start_grace": "60s"}},
		})
		c.waitRunning(120*time.Second, func(g, n string) bool { return n == "h1" })
		serial := filepath.Join(c.bed.SharedDir(), "g1.serial")
		h1 := c.node("h1")
		passes := 0
		for _, fault := range []struct{ name, reason string }{
			{"service", `health check "httpd" (exec) failed 3 times in a row`},
			{"panic", "guest panicked"},
			{"hang", "failed 3 times in a row"},
		} {
			c.poll("g1's guest agent and httpd up", 90*time.Second, func() bool {
				s, err := testguest.ReadSerial(serial)
				return err == nil && s.Agent && s.HTTPD
			})
			// Its check has passed in this run (the agent logs the first
			// pass of each run): failures count at once, not after the
			// start grace.
			passes++
			c.poll("g1's check passing", 60*time.Second, func() bool {
				n := 0
				for _, l := range strings.Split(c.logOf(h1), "\n") {
					if strings.Contains(l, "health check passed") && strings.Contains(l, "httpd") && (strings.Contains(l, "guest=g1") || strings.Contains(l, `"guest":"g1"`)) {
						n++
					}
				}
				return n >= passes
			})
			// Running, writing its disk, its agent and service up.
			c.waitStamp("g1", time.Now(), 30*time.Second)
			t0 := time.Now()
			c.guestExec(hv, "h1", "g1", "/bin/haven-fault", fault.name)
			seg := c.waitNewBoot("g1", t0, 90*time.Second)
			c.waitRunning(30*time.Second, func(g, n string) bool { return n == "h1" })
			found, crashed := "", time.Time{}
			for _, e := range c.events() {
				if e.At.After(t0) && strings.Contains(e.Msg, "g1 crashed on h1") {
					found, crashed = e.Msg, e.At
				}
			}
			t.Logf("%s: crash seen %v after the fault; g1 runs again (new boot writing its disk) %v after the fault",
				fault.name, crashed.Sub(t0).Round(100*time.Millisecond), seg.First.Sub(t0).Round(100*time.Millisecond))
			if !strings.Contains(found, fault.reason) {
				t.Errorf("%s: event log says %q, want a crash of g1 on h1 saying %q", fault.name, found, fault.reason)
			}
			c.noDoubleRun()
		}
	})
}

// guestExec starts a command in a guest through its guest agent, from
// outside Haven: the QEMU driver's agent socket, or virsh on the host's
// libvirtd. It does not wait for the command.
func (c *testCluster) guestExec(hv, node, guest string, argv ...string) {
	c.t.Helper()
	cmd := guestagent.Command("guest-exec", map[string]any{"path": argv[0], "arg": argv[1:]})
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	n := c.node(node)
	if hv == "libvirt" {
		out, err := exec.CommandContext(ctx, "virsh", "-c", "qemu:///system?socket="+n.h.LibvirtSocket(),
			"qemu-agent-command", guest, string(cmd)).CombinedOutput()
		if err != nil {
			c.t.Fatalf("virsh qemu-agent-command %s %s: %v: %s", guest, cmd, err, out)
		}
		return
	}
	sock := filepath.Join(n.dir, "qemu", guest, "qga.sock")
	conn, err := net.Dial("unix", sock)
	if err != nil {
		c.t.Fatalf("guest agent of %s: %v", guest, err)
	}
	defer conn.Close()
	if _, err := guestagent.Exchange(ctx, conn, cmd); err != nil {
		c.t.Fatal(fmt.Errorf("guest-exec %v in %s: %w", argv, guest, err))
	}
}
