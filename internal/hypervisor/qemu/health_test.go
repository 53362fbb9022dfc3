package qemu

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/hypervisor/guestagent"
	"github.com/haven-ha/haven/internal/testguest"
)

// The test guest's agent answers through the channel the driver adds, runs
// commands, and a kernel panic (pvpanic) is a crash with its reason.
func TestGuestAgentAndPanic(t *testing.T) {
	f := newFixture(t)
	d := newDriver(t, shortDir(t), "a")
	ctx := ctxT(t, 3*time.Minute)
	def := f.def("g1")
	def.GuestAgent = true
	if err := d.Start(ctx, def); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, d, "g1", hypervisor.EventStarted, 5*time.Second)
	waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Agent && s.HTTPD })
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := guestagent.Ping(pctx, d.agentCaller("g1")); err != nil {
		t.Fatalf("guest-ping: %v", err)
	}
	res, err := guestagent.Exec(pctx, d.agentCaller("g1"), []string{"/bin/pidof", "httpd"})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("pidof httpd before: %+v, %v", res, err)
	}
	if _, err := guestagent.Exec(pctx, d.agentCaller("g1"), []string{"/bin/haven-fault", "service"}); err != nil {
		t.Fatal(err)
	}
	res, err = guestagent.Exec(pctx, d.agentCaller("g1"), []string{"/bin/pidof", "httpd"})
	if err != nil || res.ExitCode == 0 {
		t.Fatalf("pidof httpd after haven-fault service: %+v, %v (want it gone)", res, err)
	}
	// A panic: guest-exec answers before the panic or never; either way the
	// driver reports the crash.
	ectx, ecancel := context.WithTimeout(ctx, 3*time.Second)
	guestagent.Exec(ectx, d.agentCaller("g1"), []string{"/bin/haven-fault", "panic"})
	ecancel()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(f.serial)
			t.Logf("serial log:\n%s", b)
		}
	})
	e := waitEvent(t, d, "g1", hypervisor.EventCrashed, 20*time.Second)
	if e.Reason != "guest panicked" {
		t.Errorf("panic reported as %q", e.Reason)
	}
	if st, err := d.Status(ctx, "g1"); err != nil || st.State != hypervisor.Crashed {
		t.Errorf("status after the panic = %+v, %v", st, err)
	}
}

// A guest whose processes all stop and whose kernel idles (haven-fault hang)
// no longer answers its guest agent: the health monitor's heartbeat fails
// it within failures × interval + timeout.
func TestHungGuestFailsHeartbeat(t *testing.T) {
	f := newFixture(t)
	d := newDriver(t, shortDir(t), "a")
	ctx := ctxT(t, 3*time.Minute)
	def := f.def("g2")
	def.GuestAgent = true
	def.Health = []guestdef.Check{{Agent: true, Interval: guestdef.Duration(time.Second), Timeout: guestdef.Duration(time.Second), Failures: 3, StartGrace: guestdef.Duration(time.Minute)}}
	if err := d.Start(ctx, def); err != nil {
		t.Fatal(err)
	}
	waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Agent })
	failed := make(chan string, 1)
	m := health.New(health.Config{Agent: d.AgentCommand, Logger: testLogger(), OnFail: func(g, why string) { failed <- why }})
	go m.Run(ctx)
	m.Watch(def)
	// Healthy: the checks pass (and the pass ends the start grace).
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := m.Results("g2")
		if len(r) == 1 && r[0].OK && !r[0].At.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the heartbeat never passed: %+v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case why := <-failed:
		t.Fatalf("a healthy guest failed: %s", why)
	case <-time.After(3 * time.Second):
	}
	ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if _, err := guestagent.Exec(ectx, d.agentCaller("g2"), []string{"/bin/haven-fault", "hang"}); err != nil {
		t.Fatalf("haven-fault hang: %v", err)
	}
	cancel()
	hung := time.Now()
	select {
	case why := <-failed:
		took := time.Since(hung)
		t.Logf("hang noticed after %s (the fault stops the guest after 1 s): %s", took, why)
		if took > 12*time.Second {
			t.Errorf("noticed after %s, want about 1 s + 3 × 1 s + 1 s", took)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the hung guest was not noticed within 30 s")
	}
	if st, err := d.Status(ctx, "g2"); err != nil || st.State != hypervisor.Running {
		t.Errorf("a hung guest still runs to QEMU: %+v, %v", st, err)
	}
}

// The console is the guest's first serial port: a command typed there is
// answered there, and the serial log still gets everything.
func TestConsole(t *testing.T) {
	f := newFixture(t)
	d := newDriver(t, shortDir(t), "a")
	ctx := ctxT(t, 2*time.Minute)
	if err := d.Start(ctx, f.def("g3")); err != nil {
		t.Fatal(err)
	}
	waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Ready })
	conn, err := d.OpenConsole(ctx, "g3")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
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
	waitSerial(t, f.serial, func(testguest.Serial) bool {
		b, _ := os.ReadFile(f.serial)
		return bytes.Contains(b, []byte("hv-42"))
	})
}
