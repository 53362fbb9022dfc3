package libvirt_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/hypervisor/guestagent"
	"github.com/haven-ha/haven/internal/hypervisor/libvirt/libvirttest"
	"github.com/haven-ha/haven/internal/testguest"
)

// Under libvirt: the console is the pty of the first serial port (a command
// typed there is answered), the guest agent answers through libvirt, and a
// kernel panic (pvpanic) is a crash.
func TestConsoleAgentAndPanic(t *testing.T) {
	h := libvirttest.Start(t)
	d := newDriver(t, h, "n1")
	def := guestDef(t, "lc1")
	def.GuestAgent = true
	if err := d.Start(ctxT(t, 30*time.Second), def); err != nil {
		t.Fatalf("%v\n%s", err, h.LibvirtdLog())
	}
	waitEvent(t, d, def.Name, hypervisor.EventStarted, 10*time.Second)
	waitCount(t, def, 90*time.Second, func(s testguest.Serial) bool { return s.Agent && s.Ready })

	conn, err := d.OpenConsole(ctxT(t, 10*time.Second), def.Name)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := conn.Write([]byte("echo hv-$((6*7))\n")); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte("hv-42")) {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("console: %v; read so far: %q", err, got)
		}
		got = append(got, buf[:n]...)
	}
	conn.Close()

	call := func(ctx context.Context, cmd []byte) (json.RawMessage, error) {
		return d.AgentCommand(ctx, def.Name, cmd)
	}
	actx := ctxT(t, 30*time.Second)
	if err := guestagent.Ping(actx, call); err != nil {
		t.Fatalf("guest-ping through libvirt: %v", err)
	}
	res, err := guestagent.Exec(actx, call, []string{"/bin/pidof", "httpd"})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("pidof httpd: %+v, %v", res, err)
	}
	ectx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	guestagent.Exec(ectx, call, []string{"/bin/haven-fault", "panic"})
	cancel()
	ev := waitEvent(t, d, def.Name, hypervisor.EventCrashed, 30*time.Second)
	t.Logf("panic reported: %q", ev.Reason)
	if ev.Reason != "guest panicked" {
		t.Errorf("panic reported as %q, want guest panicked", ev.Reason)
	}
}
