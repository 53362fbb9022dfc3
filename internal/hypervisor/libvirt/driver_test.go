package libvirt_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/hypervisor/libvirt"
	"github.com/haven-ha/haven/internal/hypervisor/libvirt/libvirtd"
	"github.com/haven-ha/haven/internal/hypervisor/libvirt/libvirttest"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/testguest"
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("HAVEN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newDriver(t testing.TB, h *libvirttest.Host, node string) *libvirt.Driver {
	t.Helper()
	return newDriverWith(t, h, node, nil)
}

// newDriverWith is newDriver with edit applied to the driver's config.
func newDriverWith(t testing.TB, h *libvirttest.Host, node string, edit func(*libvirt.Config)) *libvirt.Driver {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := libvirt.Config{
		Socket:       h.Socket,
		QEMUPIDDir:   h.QEMUPIDDir,
		MigrationURI: h.URI,
		Node:         node,
		CallTimeout:  20 * time.Second,
		ReconnectMin: 50 * time.Millisecond,
		ReconnectMax: 500 * time.Millisecond,
		Heartbeat:    500 * time.Millisecond,
		Logger:       testLogger(t),
	}
	if h.TLSDir != "" {
		cfg.MigrationTLSDir = h.TLSDir
		cfg.TLSCA, cfg.TLSCert, cfg.TLSKey = tlsFiles(t, node, h.Addr)
		g, err := user.LookupGroup(libvirtd.QEMUGroup)
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLSGroup, _ = strconv.Atoi(g.Gid)
	}
	if edit != nil {
		edit(&cfg)
	}
	d, err := libvirt.New(ctx, cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, h.LibvirtdLog())
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// guestDef is the test guest named name with its serial log in dir.
func guestDef(t testing.TB, name string) guestdef.Definition {
	files := testguest.Build(t)
	return testguest.Definition(name, files, filepath.Join(t.TempDir(), name+".serial"), "")
}

// testCA is the cluster CA of the tests' migration TLS credentials.
var testCA = sync.OnceValues(func() (*pki.CA, error) { return pki.NewCA("test", time.Now()) })

// tlsFiles writes the test CA and a certificate of node (and addr) issued
// by it, as an agent keeps them, and returns their paths.
func tlsFiles(t testing.TB, node, addr string) (ca, cert, key string) {
	t.Helper()
	c, err := testCA()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := c.IssueNode(node, []string{addr}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca, cert, key = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
	for p, b := range map[string][]byte{ca: c.CertPEM, cert: certPEM, key: keyPEM} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca, cert, key
}

// qemuDir is a temporary directory libvirt's QEMU, which runs as its own
// unprivileged user, can reach (t.TempDir's are root's alone).
func qemuDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// checkConfined fails t unless guest's QEMU on h runs as libvirtd.QEMUUser
// (not root) under a seccomp filter.
func checkConfined(t testing.TB, h *libvirttest.Host, guest string) {
	t.Helper()
	pid, err := h.QEMUPID(guest)
	if err != nil {
		t.Fatal(err)
	}
	u, err := user.Lookup(libvirtd.QEMUUser)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var uids, seccomp string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			uids = strings.Join(strings.Fields(v), " ")
		}
		if v, ok := strings.CutPrefix(line, "Seccomp:"); ok {
			seccomp = strings.TrimSpace(v)
		}
	}
	if want := strings.Repeat(u.Uid+" ", 4); uids+" " != want {
		t.Errorf("QEMU of guest %q (pid %d) runs with uids %q, want %s's %s everywhere", guest, pid, uids, libvirtd.QEMUUser, u.Uid)
	}
	if seccomp != "2" {
		t.Errorf("QEMU of guest %q (pid %d): Seccomp %q, want 2 (filtered: -sandbox on)", guest, pid, seccomp)
	}
}

func waitCount(t testing.TB, def guestdef.Definition, d time.Duration, cond func(testguest.Serial) bool) testguest.Serial {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	s, err := testguest.WaitSerial(ctx, def.SerialLog, cond)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitEvent returns the first event for guest of kind, failing on timeout.
func waitEvent(t testing.TB, d hypervisor.Driver, guest string, kind hypervisor.EventKind, within time.Duration) hypervisor.Event {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case ev := <-d.Events():
			t.Logf("event: %+v", ev)
			if ev.Guest == guest && ev.Kind == kind {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no %s event for guest %q within %s", kind, guest, within)
		}
	}
}

// waitAnyEvent returns the next event for guest.
func waitAnyEvent(t testing.TB, d hypervisor.Driver, guest string, within time.Duration) hypervisor.Event {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case ev := <-d.Events():
			t.Logf("event: %+v", ev)
			if ev.Guest == guest {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no event for guest %q within %s", guest, within)
		}
	}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestLifecycle boots the test guest, sees its counter, kills its qemu and
// gets a crash event, then starts it again and stops it gracefully.
func TestLifecycle(t *testing.T) {
	h := libvirttest.Start(t)
	d := newDriver(t, h, "n1")
	if d.DomainType() != "qemu" {
		t.Logf("domain type %s", d.DomainType())
	}
	def := guestDef(t, "lt1")

	if _, err := d.Status(ctxT(t, 10*time.Second), def.Name); !errors.Is(err, hypervisor.ErrNotFound) {
		t.Fatalf("Status before start: err = %v, want ErrNotFound", err)
	}
	if err := d.Start(ctxT(t, 30*time.Second), def); err != nil {
		t.Fatalf("%v\n%s", err, h.LibvirtdLog())
	}
	waitEvent(t, d, def.Name, hypervisor.EventStarted, 10*time.Second)
	if err := d.Start(ctxT(t, 30*time.Second), def); !errors.Is(err, hypervisor.ErrAlreadyRunning) {
		t.Fatalf("second Start: err = %v, want ErrAlreadyRunning", err)
	}
	s := waitCount(t, def, 60*time.Second, func(s testguest.Serial) bool { return s.Count >= 2 })
	t.Logf("serial: %+v", s)

	st, err := d.Status(ctxT(t, 10*time.Second), def.Name)
	if err != nil || st.State != hypervisor.Running || st.PID == 0 {
		t.Fatalf("Status = %+v, %v; want running with a pid", st, err)
	}
	list, err := d.List(ctxT(t, 10*time.Second))
	if err != nil || len(list) != 1 || list[0].Name != def.Name {
		t.Fatalf("List = %+v, %v; want just %s", list, err, def.Name)
	}

	// Kill qemu behind libvirt's back: a crash event.
	killed := time.Now()
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(t, d, def.Name, hypervisor.EventCrashed, 20*time.Second)
	t.Logf("crash-to-event latency: %s (reason %q)", ev.At.Sub(killed), ev.Reason)
	st, err = d.Status(ctxT(t, 10*time.Second), def.Name)
	if err != nil || st.State != hypervisor.Shutoff {
		t.Fatalf("Status after kill = %+v, %v; want shutoff", st, err)
	}

	// Start again (the definition is kept, with its UUID), then a graceful
	// stop: the test guest powers off on the ACPI button.
	if err := d.Start(ctxT(t, 30*time.Second), def); err != nil {
		t.Fatal(err)
	}
	waitCount(t, def, 60*time.Second, func(s testguest.Serial) bool { return s.Boots >= 2 && s.Count >= 1 })
	begin := time.Now()
	if err := d.Stop(ctxT(t, 60*time.Second), def.Name, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ev = waitEvent(t, d, def.Name, hypervisor.EventStopped, 10*time.Second)
	t.Logf("graceful stop took %s (reason %q)", time.Since(begin), ev.Reason)
	if s, _ := testguest.ReadSerial(def.SerialLog); !s.PoweredOff && ev.Reason != "destroyed" {
		t.Errorf("stop: guest did not report the power button and was not destroyed: %+v, %+v", s, ev)
	}
	if err := d.Stop(ctxT(t, 10*time.Second), def.Name, time.Second); err != nil {
		t.Errorf("Stop of a stopped guest: %v", err)
	}

	// A shutdown the driver did not ask for (the power button pressed by
	// someone else): a clean stop, not a crash.
	if err := d.Start(ctxT(t, 30*time.Second), def); err != nil {
		t.Fatal(err)
	}
	waitCount(t, def, 60*time.Second, func(s testguest.Serial) bool { return s.Boots >= 3 && s.Count >= 1 })
	if _, err := d.Status(ctxT(t, 10*time.Second), def.Name); err != nil {
		t.Fatal(err)
	}
	l := golibvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(h.Socket)))
	if err := l.ConnectToURI(golibvirt.QEMUSystem); err != nil {
		t.Fatal(err)
	}
	defer l.Disconnect()
	dom, err := l.DomainLookupByName(def.Name)
	if err != nil {
		t.Fatal(err)
	}
	// The press is repeated until the guest acts on it: a guest still
	// booting (its ACPI handler not yet running) ignores it, as a real one
	// would.
	deadline := time.Now().Add(60 * time.Second)
press:
	for {
		if err := l.DomainShutdownFlags(dom, golibvirt.DomainShutdownAcpiPowerBtn); err != nil {
			t.Fatal(err)
		}
		timer := time.NewTimer(5 * time.Second)
		for {
			select {
			case ev := <-d.Events():
				t.Logf("event: %+v", ev)
				if ev.Guest != def.Name || ev.Kind == hypervisor.EventStarted {
					continue
				}
				timer.Stop()
				if ev.Kind != hypervisor.EventStopped || ev.Reason != "shutdown" {
					t.Fatalf("guest powered off from inside reported as %+v, want stopped (shutdown)", ev)
				}
				break press
			case <-timer.C:
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest %q never acted on the ACPI power button", def.Name)
		}
	}
	if err := d.Kill(ctxT(t, 10*time.Second), "no-such-guest"); err != nil {
		t.Errorf("Kill of an unknown guest: %v", err)
	}
}

// TestReconnect kills libvirtd under a running guest, starts it again, and
// checks that the driver reconnects by itself and that events still arrive.
// It also hangs libvirtd (SIGSTOP) and checks that a call returns at its
// deadline instead of hanging.
func TestReconnect(t *testing.T) {
	h := libvirttest.Start(t)
	d := newDriver(t, h, "n1")
	def := guestDef(t, "rc1")
	if err := d.Start(ctxT(t, 30*time.Second), def); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, d, def.Name, hypervisor.EventStarted, 10*time.Second)

	h.KillLibvirtd()
	if err := pollUntil(10*time.Second, func() bool { return !d.Connected() }); err != nil {
		t.Fatal("driver did not notice libvirtd died")
	}
	if _, err := d.Status(ctxT(t, 5*time.Second), def.Name); !errors.Is(err, hypervisor.ErrUnavailable) {
		t.Fatalf("Status while libvirtd is down: err = %v, want ErrUnavailable", err)
	}
	if err := h.StartLibvirtd(); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := pollUntil(30*time.Second, d.Connected); err != nil {
		t.Fatalf("driver did not reconnect: %v", err)
	}
	t.Logf("reconnected %s after libvirtd accepted connections", time.Since(begin))
	st, err := d.Status(ctxT(t, 10*time.Second), def.Name)
	if err != nil || st.State != hypervisor.Running {
		t.Fatalf("Status after reconnect = %+v, %v; want running (the guest survives libvirtd)", st, err)
	}
	// Events flow on the new connection.
	if err := d.Kill(ctxT(t, 30*time.Second), def.Name); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, d, def.Name, hypervisor.EventStopped, 10*time.Second)

	// A hung libvirtd: the call returns at its deadline, then the driver
	// reconnects once libvirtd continues.
	h.SuspendLibvirtd()
	resumed := false
	defer func() {
		if !resumed {
			h.ResumeLibvirtd()
		}
	}()
	begin = time.Now()
	_, err = d.Status(ctxT(t, 500*time.Millisecond), def.Name)
	if !errors.Is(err, hypervisor.ErrUnavailable) {
		t.Fatalf("Status on a hung libvirtd: err = %v, want ErrUnavailable", err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Fatalf("Status on a hung libvirtd took %s", took)
	}
	h.ResumeLibvirtd()
	resumed = true
	if err := pollUntil(30*time.Second, d.Connected); err != nil {
		t.Fatalf("driver did not reconnect after libvirtd continued: %v", err)
	}

	// A hang with no call in flight: the heartbeat notices it.
	h.SuspendLibvirtd()
	resumed = false
	if err := pollUntil(30*time.Second, func() bool { return !d.Connected() }); err != nil {
		t.Fatalf("driver did not notice an idle hung libvirtd: %v", err)
	}
	h.ResumeLibvirtd()
	resumed = true
	if err := pollUntil(30*time.Second, d.Connected); err != nil {
		t.Fatalf("driver did not reconnect after libvirtd continued: %v", err)
	}
	if err := d.Start(ctxT(t, 30*time.Second), def); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, d, def.Name, hypervisor.EventStarted, 10*time.Second)

	// A guest that dies while libvirtd is down is reported after the
	// reconnection.
	st, err = d.Status(ctxT(t, 10*time.Second), def.Name)
	if err != nil || st.PID == 0 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	h.KillLibvirtd()
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := h.StartLibvirtd(); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(t, d, def.Name, hypervisor.EventCrashed, 30*time.Second)
	t.Logf("death during the outage reported as %+v", ev)
}

func pollUntil(d time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// TestStopForced boots the test guest without ACPI, so it cannot see the
// power button: Stop waits out its timeout, then forces the guest off.
func TestStopForced(t *testing.T) {
	h := libvirttest.Start(t)
	d := newDriver(t, h, "n1")
	def := guestDef(t, "sf1")
	def.RawXML = `<domain type="qemu"><features><pae/></features></domain>`
	if err := d.Start(ctxT(t, 30*time.Second), def); err != nil {
		t.Fatal(err)
	}
	waitCount(t, def, 60*time.Second, func(s testguest.Serial) bool { return s.Count >= 1 })

	// Pause and resume behind the driver's back: both are reported.
	l := golibvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(h.Socket)))
	if err := l.ConnectToURI(golibvirt.QEMUSystem); err != nil {
		t.Fatal(err)
	}
	defer l.Disconnect()
	dom, err := l.DomainLookupByName(def.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.DomainSuspend(dom); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, d, def.Name, hypervisor.EventPaused, 10*time.Second)
	if st, err := d.Status(ctxT(t, 10*time.Second), def.Name); err != nil || st.State != hypervisor.Paused {
		t.Fatalf("Status of a paused guest = %+v, %v", st, err)
	}
	if err := l.DomainResume(dom); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, d, def.Name, hypervisor.EventResumed, 10*time.Second)

	const timeout = 2 * time.Second
	begin := time.Now()
	if err := d.Stop(ctxT(t, 60*time.Second), def.Name, timeout); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	ev := waitEvent(t, d, def.Name, hypervisor.EventStopped, 10*time.Second)
	t.Logf("forced stop took %s (%+v)", took, ev)
	if took < timeout || ev.Reason != "destroyed" {
		t.Errorf("Stop took %s with reason %q; want at least %s and destroyed", took, ev.Reason, timeout)
	}
	if s, _ := testguest.ReadSerial(def.SerialLog); s.PoweredOff {
		t.Errorf("the guest powered off by itself: %+v", s)
	}
}

func TestHandshakeFailed(t *testing.T) {
	for msg, want := range map[string]bool{
		"Unable to read TLS confirmation: Input/output error":                   true,
		"TLS handshake failed: The TLS connection was non-properly terminated.": true,
		"operation failed: migration out job: unexpectedly failed":              false,
		"Requested operation is not valid: domain is not running":               false,
	} {
		if got := libvirt.HandshakeFailed(errors.New(msg)); got != want {
			t.Errorf("handshakeFailed(%q) = %v, want %v", msg, got, want)
		}
	}
}
