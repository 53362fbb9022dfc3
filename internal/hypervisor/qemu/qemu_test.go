package qemu

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/testguest"
)

func testLogger() *slog.Logger {
	if os.Getenv("HAVEN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newDriver opens a driver on runDir; cleanup kills its guests and closes it.
func newDriver(t testing.TB, runDir, node string) *Driver {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := New(ctx, Config{RunDir: runDir, Node: node, Logger: testLogger().With("node", node)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killAll(d) })
	return d
}

// killAll kills every guest of d (adopting, if d was closed, through a new
// driver on the same run dir) and closes it.
func killAll(d *Driver) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if d.isClosed() {
		nd, err := New(ctx, d.cfg)
		if err != nil {
			return // another driver owns the run dir and cleans it
		}
		d = nd
	}
	list, _ := d.List(ctx)
	for _, s := range list {
		d.Kill(ctx, s.Name)
	}
	d.Close()
}

// shortDir returns a temp dir with a short path (QMP socket paths are limited
// to 107 bytes).
func shortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hq")
	if err != nil {
		t.Fatal(err)
	}
	// QEMU's unprivileged user must reach the disks (handOver).
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// waitEvent waits for an event of guest of kind, skipping others.
func waitEvent(t testing.TB, d *Driver, guest string, kind hypervisor.EventKind, within time.Duration) hypervisor.Event {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case e := <-d.Events():
			if e.Guest == guest && e.Kind == kind {
				return e
			}
		case <-timer.C:
			t.Fatalf("no %s event for guest %q within %s", kind, guest, within)
		}
	}
}

func waitSerial(t testing.TB, path string, cond func(testguest.Serial) bool) testguest.Serial {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := testguest.WaitSerial(ctx, path, cond)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type fixture struct {
	files  testguest.Files
	dir    string
	serial string
	disk   string
}

func newFixture(t testing.TB) fixture {
	files := testguest.Build(t)
	dir := shortDir(t)
	f := fixture{files: files, dir: dir, serial: filepath.Join(dir, "serial.log"), disk: filepath.Join(dir, "disk.raw")}
	if err := testguest.CreateDisk(f.disk, 1<<20); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f fixture) def(name string) guestdef.Definition {
	return testguest.Definition(name, f.files, f.serial, f.disk)
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestStartAndGracefulStop(t *testing.T) {
	f := newFixture(t)
	d := newDriver(t, filepath.Join(f.dir, "a"), "a")
	ctx := ctxT(t, 2*time.Minute)
	if err := d.Start(ctx, f.def("g1")); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, d, "g1", hypervisor.EventStarted, 5*time.Second)
	if err := d.Start(ctx, f.def("g1")); !errors.Is(err, hypervisor.ErrAlreadyRunning) {
		t.Errorf("second start: err = %v, want ErrAlreadyRunning", err)
	}
	s := waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Count >= 10 })
	if s.NoACPI {
		t.Error("guest has no power button")
	}
	st, err := d.Status(ctx, "g1")
	if err != nil || st.State != hypervisor.Running || st.PID == 0 {
		t.Fatalf("status = %+v, %v; want running with a pid", st, err)
	}
	list, err := d.List(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "g1" {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if rec, err := testguest.ReadRecord(f.disk); err != nil || rec.BootID != s.BootID {
		t.Errorf("disk record = %+v, %v; want boot %s", rec, err, s.BootID)
	}

	if err := d.Stop(ctx, "g1", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	e := waitEvent(t, d, "g1", hypervisor.EventStopped, 5*time.Second)
	if e.Reason != "shutdown from inside" {
		// system_powerdown makes the guest shut itself down; anything else
		// means the stop was forced.
		t.Errorf("stop reason = %q, want a guest shutdown", e.Reason)
	}
	if s, _ := testguest.ReadSerial(f.serial); !s.PoweredOff {
		t.Error("guest did not see the power button: the stop was forced")
	}
	if _, err := os.Stat(filepath.Join(f.dir, "a", "g1", "qemu.pid")); !os.IsNotExist(err) {
		t.Errorf("pid file left after stop: %v", err)
	}
	st, err = d.Status(ctx, "g1")
	if err != nil || st.State != hypervisor.Shutoff {
		t.Errorf("status after stop = %+v, %v", st, err)
	}
	if list, _ := d.List(ctx); len(list) != 0 {
		t.Errorf("list after stop = %+v", list)
	}
	if err := d.Stop(ctx, "g1", time.Second); !errors.Is(err, hypervisor.ErrNotFound) {
		t.Errorf("stop of a stopped guest: err = %v, want ErrNotFound", err)
	}
}

func TestStartRejectsInvalidDefinition(t *testing.T) {
	files := testguest.Build(t)
	d := newDriver(t, filepath.Join(shortDir(t), "a"), "a")
	def := testguest.Definition("bad name", files, "", "")
	err := d.Start(ctxT(t, 10*time.Second), def)
	var fe *guestdef.FieldError
	if !errors.As(err, &fe) || fe.Field != "name" {
		t.Errorf("start with a bad name: err = %v, want a name FieldError", err)
	}
	def = testguest.Definition("g", files, "", "")
	def.Disks = []guestdef.Disk{{Pool: "p", Volume: "v"}}
	if err := d.Start(ctxT(t, 10*time.Second), def); err == nil || !strings.Contains(err.Error(), "resolve") {
		t.Errorf("start with an unresolved pool disk: err = %v", err)
	}
}

func TestCrashDetected(t *testing.T) {
	f := newFixture(t)
	d := newDriver(t, filepath.Join(f.dir, "a"), "a")
	ctx := ctxT(t, 2*time.Minute)
	if err := d.Start(ctx, f.def("g1")); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, d, "g1", hypervisor.EventStarted, 5*time.Second)
	waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Ready })
	st, err := d.Status(ctx, "g1")
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e := waitEvent(t, d, "g1", hypervisor.EventCrashed, 5*time.Second)
	t.Logf("crash event after %s: %q", time.Since(killed), e.Reason)
	if !strings.Contains(e.Reason, "killed") {
		t.Errorf("crash reason = %q, want it to say the process was killed", e.Reason)
	}
	st, err = d.Status(ctx, "g1")
	if err != nil || st.State != hypervisor.Crashed {
		t.Errorf("status after crash = %+v, %v", st, err)
	}
	// It can be started again.
	if err := d.Start(ctx, f.def("g1")); err != nil {
		t.Fatalf("restart after crash: %v", err)
	}
	if err := d.Kill(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	if e := waitEvent(t, d, "g1", hypervisor.EventStopped, 5*time.Second); e.Reason != "stopped by haven" {
		t.Errorf("kill reported %q", e.Reason)
	}
}

func TestLiveMigration(t *testing.T) {
	f := newFixture(t)
	a := newDriver(t, filepath.Join(f.dir, "a"), "a")
	a.cfg.MigrationBandwidth = 1 << 30
	b := newDriver(t, filepath.Join(f.dir, "b"), "b")
	ctx := ctxT(t, 2*time.Minute)
	def := f.def("g1")
	if err := a.Start(ctx, def); err != nil {
		t.Fatal(err)
	}
	before := waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Count >= 20 })

	target, err := b.PrepareIncoming(ctx, def, hypervisor.IncomingOptions{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	if target.Node != "b" || !strings.HasPrefix(target.URI, "tcp:127.0.0.1:") {
		t.Errorf("target = %+v", target)
	}
	if st, err := b.Status(ctx, "g1"); err != nil || st.State != hypervisor.Incoming {
		t.Errorf("target status before migration = %+v, %v", st, err)
	}
	var last hypervisor.Progress
	if err := a.Migrate(ctx, "g1", target, func(p hypervisor.Progress) { last = p }); err != nil {
		t.Fatal(err)
	}
	t.Logf("migrated: total %d bytes, downtime %s", last.Total, last.Downtime)
	if last.Total == 0 || last.Remaining != 0 {
		t.Errorf("last progress = %+v", last)
	}
	waitEvent(t, a, "g1", hypervisor.EventMigrated, 5*time.Second)
	waitEvent(t, b, "g1", hypervisor.EventResumed, 5*time.Second)
	if st, err := b.Status(ctx, "g1"); err != nil || st.State != hypervisor.Running {
		t.Errorf("target status = %+v, %v", st, err)
	}
	// The source QEMU is gone when Migrate returns, without a crash event.
	if l, _ := a.List(ctx); len(l) != 0 {
		t.Fatalf("source still lists %+v after migration", l)
	}
	select {
	case e := <-a.Events():
		t.Errorf("unexpected event on the source after migration: %+v", e)
	default:
	}
	after := waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Count >= before.Count+20 })
	if after.BootID != before.BootID || after.Boots != 1 {
		t.Errorf("guest rebooted during migration: before %+v after %+v", before, after)
	}
	rec, err := testguest.ReadRecord(f.disk)
	if err != nil || rec.BootID != before.BootID || rec.Count < after.Count {
		t.Errorf("disk record after migration = %+v, %v; serial %+v", rec, err, after)
	}

	// And straight back (failback): the name is free again on a.
	back, err := a.PrepareIncoming(ctx, def, hypervisor.IncomingOptions{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Migrate(ctx, "g1", back, nil); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, a, "g1", hypervisor.EventResumed, 5*time.Second)
	final := waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Count >= after.Count+20 })
	if final.BootID != before.BootID || final.Boots != 1 {
		t.Errorf("guest rebooted migrating back: %+v", final)
	}
	if l, _ := b.List(ctx); len(l) != 0 {
		t.Errorf("b still lists %+v", l)
	}
}

func TestMigrationFailureKeepsSource(t *testing.T) {
	f := newFixture(t)
	a := newDriver(t, filepath.Join(f.dir, "a"), "a")
	b := newDriver(t, filepath.Join(f.dir, "b"), "b")
	ctx := ctxT(t, 2*time.Minute)
	def := f.def("g1")
	if err := a.Start(ctx, def); err != nil {
		t.Fatal(err)
	}
	s0 := waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Count >= 10 })

	t.Run("target not listening", func(t *testing.T) {
		port, err := freePort("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		err = a.Migrate(ctx, "g1", hypervisor.MigrationTarget{Node: "b", URI: "tcp:127.0.0.1:" + itoa(port)}, nil)
		if err == nil {
			t.Fatal("migration to nowhere succeeded")
		}
		t.Logf("migration error: %v", err)
	})
	t.Run("target killed", func(t *testing.T) {
		target, err := b.PrepareIncoming(ctx, def, hypervisor.IncomingOptions{TLS: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Kill(ctx, "g1"); err != nil {
			t.Fatal(err)
		}
		if err := a.Migrate(ctx, "g1", target, nil); err == nil {
			t.Fatal("migration to a killed target succeeded")
		}
	})
	t.Run("cancelled by deadline", func(t *testing.T) {
		target, err := b.PrepareIncoming(ctx, def, hypervisor.IncomingOptions{TLS: true})
		if err != nil {
			t.Fatal(err)
		}
		mctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := a.Migrate(mctx, "g1", target, nil); err == nil {
			t.Fatal("migration with a cancelled context succeeded")
		}
		b.Kill(ctx, "g1")
	})
	st, err := a.Status(ctx, "g1")
	if err != nil || st.State != hypervisor.Running {
		t.Fatalf("source after failed migrations = %+v, %v", st, err)
	}
	s1 := waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Count >= s0.Count+20 })
	if s1.BootID != s0.BootID {
		t.Errorf("guest rebooted: %+v then %+v", s0, s1)
	}
	select {
	case e := <-a.Events():
		if e.Kind == hypervisor.EventCrashed || e.Kind == hypervisor.EventMigrated || e.Kind == hypervisor.EventStopped {
			t.Errorf("unexpected source event %+v", e)
		}
	default:
	}
}

func TestAdoption(t *testing.T) {
	f := newFixture(t)
	runDir := filepath.Join(f.dir, "a")
	d1 := newDriver(t, runDir, "a")
	ctx := ctxT(t, 2*time.Minute)
	if err := d1.Start(ctx, f.def("g1")); err != nil {
		t.Fatal(err)
	}
	s0 := waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Count >= 10 })
	st1, _ := d1.Status(ctx, "g1")
	if _, err := New(ctx, Config{RunDir: runDir}); err == nil {
		t.Error("a second driver opened a run dir in use")
	}
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}

	d2 := newDriver(t, runDir, "a")
	list, err := d2.List(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "g1" || list[0].PID != st1.PID || list[0].State != hypervisor.Running {
		t.Fatalf("adopted list = %+v, %v; want g1 running as pid %d", list, err, st1.PID)
	}
	def, err := d2.Definition("g1")
	if err != nil || def.SerialLog != f.serial {
		t.Errorf("adopted definition = %+v, %v", def, err)
	}
	s1 := waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Count >= s0.Count+10 })
	if s1.BootID != s0.BootID {
		t.Error("guest rebooted across adoption")
	}
	// An adopted guest's crash is seen too (pidfd, not a child).
	killed := time.Now()
	syscall.Kill(st1.PID, syscall.SIGKILL)
	e := waitEvent(t, d2, "g1", hypervisor.EventCrashed, 5*time.Second)
	t.Logf("adopted guest crash event after %s: %q", time.Since(killed), e.Reason)
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestPauseAndResumeEvents(t *testing.T) {
	f := newFixture(t)
	d := newDriver(t, filepath.Join(f.dir, "a"), "a")
	ctx := ctxT(t, time.Minute)
	if err := d.Start(ctx, f.def("g1")); err != nil {
		t.Fatal(err)
	}
	g, err := d.live("g1")
	if err != nil {
		t.Fatal(err)
	}
	// Someone pauses the guest through QEMU.
	if err := g.mon.run(ctx, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	if e := waitEvent(t, d, "g1", hypervisor.EventPaused, 5*time.Second); e.Reason != "paused" {
		t.Errorf("pause reason = %q", e.Reason)
	}
	if st, _ := d.Status(ctx, "g1"); st.State != hypervisor.Paused {
		t.Errorf("status = %+v, want paused", st)
	}
	if err := g.mon.run(ctx, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, d, "g1", hypervisor.EventResumed, 5*time.Second)
	if st, _ := d.Status(ctx, "g1"); st.State != hypervisor.Running {
		t.Errorf("status = %+v, want running", st)
	}
}

// TestIOErrorEvent feeds the QMP event QEMU sends when a disk write fails
// with werror=stop (the driver's setting) and checks the guest is reported
// paused on an I/O error.
func TestIOErrorEvent(t *testing.T) {
	d := &Driver{cfg: Config{Now: time.Now}, log: testLogger(), events: newEventQueue(), guests: map[string]*guest{}}
	defer d.events.close()
	g := &guest{name: "g1", state: hypervisor.Running}
	d.guests["g1"] = g
	d.onQMPEvent(g, qmpEvent{Event: "BLOCK_IO_ERROR", Data: []byte(`{"device":"disk0","node-name":"#block123","operation":"write","action":"stop","nospace":false,"reason":"Input/output error"}`)})
	d.onQMPEvent(g, qmpEvent{Event: "STOP"})
	e := <-d.Events()
	if e.Kind != hypervisor.EventPaused || !strings.HasPrefix(e.Reason, "io-error") || !strings.Contains(e.Reason, "Input/output error") {
		t.Errorf("event = %+v", e)
	}
	if g.state != hypervisor.Paused || g.reason != "io-error" {
		t.Errorf("state = %s %q", g.state, g.reason)
	}
	d.onQMPEvent(g, qmpEvent{Event: "RESUME"})
	if e := <-d.Events(); e.Kind != hypervisor.EventResumed {
		t.Errorf("event after RESUME = %+v", e)
	}
	select {
	case e := <-d.Events():
		t.Errorf("extra event %+v (the STOP after the I/O error must not add one)", e)
	default:
	}
}

func TestStopIncomingIsImmediate(t *testing.T) {
	f := newFixture(t)
	d := newDriver(t, filepath.Join(f.dir, "b"), "b")
	ctx := ctxT(t, time.Minute)
	if _, err := d.PrepareIncoming(ctx, f.def("g1"), hypervisor.IncomingOptions{TLS: true}); err != nil {
		t.Fatal(err)
	}
	// A long timeout: an incoming QEMU has no guest to power down, so
	// waiting for it would only delay the caller.
	stopped := make(chan error, 1)
	go func() { stopped <- d.Stop(ctx, "g1", time.Hour) }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("stop of an incoming guest waited for its timeout")
	}
	if st, err := d.Status(ctx, "g1"); err != nil || st.State != hypervisor.Shutoff {
		t.Errorf("status = %+v, %v", st, err)
	}
}

func TestStartFailureReportsQEMUError(t *testing.T) {
	files := testguest.Build(t)
	d := newDriver(t, filepath.Join(shortDir(t), "a"), "a")
	ctx := ctxT(t, 30*time.Second)
	files.Kernel = "/nonexistent/vmlinux"
	err := d.Start(ctx, testguest.Definition("g1", files, "", ""))
	if err == nil || !strings.Contains(err.Error(), "qemu said") || !strings.Contains(err.Error(), "/nonexistent/vmlinux") {
		t.Fatalf("start with a missing kernel: err = %v, want QEMU's complaint", err)
	}
	select {
	case e := <-d.Events():
		t.Errorf("event for a guest that never started: %+v", e)
	default:
	}
	if _, err := d.Status(ctx, "g1"); !errors.Is(err, hypervisor.ErrNotFound) {
		t.Errorf("status after failed start: %v", err)
	}
}

func TestStopForcesAGuestThatIgnoresThePowerButton(t *testing.T) {
	f := newFixture(t)
	d := newDriver(t, filepath.Join(f.dir, "a"), "a")
	ctx := ctxT(t, time.Minute)
	if err := d.Start(ctx, f.def("g1")); err != nil {
		t.Fatal(err)
	}
	waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Ready })
	// A paused guest cannot react to the power button.
	g, _ := d.live("g1")
	if err := g.mon.run(ctx, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(ctx, "g1", 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if e := waitEvent(t, d, "g1", hypervisor.EventStopped, 5*time.Second); e.Reason != "stopped by haven" {
		t.Errorf("stop reason = %q", e.Reason)
	}
	if s, _ := testguest.ReadSerial(f.serial); s.PoweredOff {
		t.Error("a paused guest powered off by itself?")
	}
}

// TestGuestOutlivesAgent starts a guest from a separate process (this test
// binary re-run as a stand-in agent), kills that process with SIGKILL, and
// adopts the orphaned QEMU from here.
func TestGuestOutlivesAgent(t *testing.T) {
	if os.Getenv("HAVEN_QEMU_AGENT_RUNDIR") != "" {
		t.Skip("inside the stand-in agent")
	}
	f := newFixture(t)
	runDir := filepath.Join(f.dir, "a")
	agent := exec.Command(os.Args[0], "-test.run", "^TestStandInAgent$", "-test.v")
	agent.Env = append(os.Environ(), "HAVEN_QEMU_AGENT_RUNDIR="+runDir,
		"HAVEN_QEMU_AGENT_SERIAL="+f.serial, "HAVEN_QEMU_AGENT_DISK="+f.disk)
	// The stand-in dies with this test binary, whatever happens to it.
	agent.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	agent.Stderr = agent.Stdout
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		agent.Process.Kill()
		agent.Wait()
		// Its QEMU outlives it by design: kill it through a driver on the
		// same run dir, whatever point the test reached.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if nd, err := New(ctx, Config{RunDir: runDir, Logger: testLogger()}); err == nil {
			killAll(nd)
		}
	})
	// The stand-in agent prints STARTED once its guest runs, then blocks.
	buf := make([]byte, 0, 4096)
	for !strings.Contains(string(buf), "STARTED") {
		b := make([]byte, 512)
		n, err := out.Read(b)
		if err != nil {
			t.Fatalf("stand-in agent: %v: %s", err, buf)
		}
		buf = append(buf, b[:n]...)
	}
	s0 := waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Count >= 10 })
	agent.Process.Signal(syscall.SIGKILL)
	agent.Wait()

	d := newDriver(t, runDir, "a")
	ctx := ctxT(t, time.Minute)
	list, err := d.List(ctx)
	if err != nil || len(list) != 1 || list[0].State != hypervisor.Running {
		t.Fatalf("after the agent died: list = %+v, %v", list, err)
	}
	s1 := waitSerial(t, f.serial, func(s testguest.Serial) bool { return s.Count >= s0.Count+10 })
	if s1.BootID != s0.BootID {
		t.Error("guest rebooted")
	}
	if err := d.Stop(ctx, "g1", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if e := waitEvent(t, d, "g1", hypervisor.EventStopped, 5*time.Second); e.Reason != "shutdown from inside" {
		t.Errorf("stop of an adopted guest: %q", e.Reason)
	}
}

// TestStandInAgent is the stand-in agent of TestGuestOutlivesAgent.
func TestStandInAgent(t *testing.T) {
	runDir := os.Getenv("HAVEN_QEMU_AGENT_RUNDIR")
	if runDir == "" {
		t.Skip("only run by TestGuestOutlivesAgent")
	}
	files, err := testguest.Ensure()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d, err := New(ctx, Config{RunDir: runDir, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	def := testguest.Definition("g1", files, os.Getenv("HAVEN_QEMU_AGENT_SERIAL"), os.Getenv("HAVEN_QEMU_AGENT_DISK"))
	if err := d.Start(ctx, def); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("STARTED\n")
	select {} // until killed
}

// TestIOErrorPausesGuest gives the guest a disk on a full filesystem (a
// tmpfs mounted in a private mount namespace by a wrapper around QEMU): its
// first write fails with ENOSPC, QEMU pauses it (werror=stop) and the driver
// reports it paused on an I/O error.
func TestIOErrorPausesGuest(t *testing.T) {
	files := testguest.Build(t)
	if os.Getuid() != 0 {
		t.Skip("needs root to mount a tmpfs in a private mount namespace")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) missing")
	}
	dir := shortDir(t)
	mnt := filepath.Join(dir, "full")
	os.Mkdir(mnt, 0o755)
	wrapper := filepath.Join(dir, "qemu-on-full-disk")
	script := `#!/bin/sh
exec unshare -m --propagation private sh -c '
mount -t tmpfs -o size=256k tmpfs "$0" || exit 1
truncate -s 1M "$0/disk.raw"
dd if=/dev/zero of="$0/fill" bs=4k 2>/dev/null
exec qemu-system-x86_64 "$@"' ` + mnt + ` "$@"
`
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, time.Minute)
	// The disk exists only in the wrapper's mount namespace: no hand-over.
	d, err := New(ctx, Config{RunDir: filepath.Join(dir, "a"), Binary: wrapper, Accel: hypervisor.AccelTCG, User: "-", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killAll(d) })
	serial := filepath.Join(dir, "serial.log")
	if err := d.Start(ctx, testguest.Definition("g1", files, serial, filepath.Join(mnt, "disk.raw"))); err != nil {
		t.Fatal(err)
	}
	e := waitEvent(t, d, "g1", hypervisor.EventPaused, 60*time.Second)
	if !strings.HasPrefix(e.Reason, "io-error") {
		t.Errorf("pause reason = %q, want io-error", e.Reason)
	}
	t.Logf("paused: %s", e.Reason)
	st, err := d.Status(ctx, "g1")
	if err != nil || st.State != hypervisor.Paused || st.Reason != "io-error" {
		t.Errorf("status = %+v, %v; want paused on io-error", st, err)
	}
}

// TestSecondCopyRefusedByImageLock: QEMU's image locking is a second line of
// defence against two copies of a guest. Two "hosts" on one machine share the
// disk file; the second start must fail while the first runs.
func TestSecondCopyRefusedByImageLock(t *testing.T) {
	f := newFixture(t)
	a := newDriver(t, filepath.Join(f.dir, "a"), "a")
	b := newDriver(t, filepath.Join(f.dir, "b"), "b")
	ctx := ctxT(t, time.Minute)
	if err := a.Start(ctx, f.def("g1")); err != nil {
		t.Fatal(err)
	}
	err := b.Start(ctx, f.def("g1"))
	if err == nil {
		t.Fatal("a second copy of the guest started on another host")
	}
	if !strings.Contains(err.Error(), "lock") {
		t.Errorf("second start: %v, want QEMU's image lock error", err)
	}
}
