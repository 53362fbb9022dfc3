package libvirt_test

// Benchmarks against a real libvirtd started by the harness. Each runs the
// same operation three ways where it makes sense: through the driver, as raw
// go-libvirt calls, and with virsh, so the driver's overhead shows. Guests
// are slow to boot under TCG: run with a small -benchtime, e.g.
//
//	go test -run XXX -bench . -benchtime 3x ./internal/hypervisor/libvirt/

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/hypervisor/libvirt"
	"github.com/haven-ha/haven/internal/hypervisor/libvirt/libvirttest"
	"github.com/haven-ha/haven/internal/testguest"
)

func rawConn(b *testing.B, h *libvirttest.Host) *golibvirt.Libvirt {
	b.Helper()
	l := golibvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(h.Socket)))
	if err := l.ConnectToURI(golibvirt.QEMUSystem); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Disconnect() })
	return l
}

func virsh(b *testing.B, h *libvirttest.Host, args ...string) {
	b.Helper()
	full := append([]string{"-q", "-c", "qemu:///system?socket=" + h.Socket}, args...)
	if out, err := exec.Command("virsh", full...).CombinedOutput(); err != nil {
		b.Fatalf("virsh %v: %v: %s", args, err, out)
	}
}

func needVirsh(b *testing.B) {
	if _, err := exec.LookPath("virsh"); err != nil {
		b.Skip("virsh not installed (libvirt-clients)")
	}
}

// BenchmarkStart: define and boot the test guest (until the call returns;
// libvirt has launched qemu and the vCPUs run), then kill it untimed.
func BenchmarkStart(b *testing.B) {
	h := libvirttest.Start(b)
	d := newDriver(b, h, "n1")
	def := guestDef(b, "bs1")
	xml, err := libvirt.DomainXML(def, d.DomainType(), "")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	// Warm up once: libvirt probes qemu on its first guest.
	if err := d.Start(ctx, def); err != nil {
		b.Fatal(err)
	}
	d.Kill(ctx, def.Name)

	b.Run("driver", func(b *testing.B) {
		for b.Loop() {
			if err := d.Start(ctx, def); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := d.Kill(ctx, def.Name); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	b.Run("raw", func(b *testing.B) {
		l := rawConn(b, h)
		for b.Loop() {
			dom, err := l.DomainDefineXMLFlags(xml, 0)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := l.DomainCreateWithFlags(dom, 0); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := l.DomainDestroyFlags(dom, 0); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	b.Run("virsh", func(b *testing.B) {
		needVirsh(b)
		f := b.TempDir() + "/dom.xml"
		if err := os.WriteFile(f, []byte(xml), 0o644); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			virsh(b, h, "define", f)
			virsh(b, h, "start", def.Name)
			b.StopTimer()
			virsh(b, h, "destroy", def.Name)
			b.StartTimer()
		}
	})
}

// BenchmarkStatus: one state query of a running guest.
func BenchmarkStatus(b *testing.B) {
	h := libvirttest.Start(b)
	d := newDriver(b, h, "n1")
	def := guestDef(b, "bq1")
	ctx := context.Background()
	if err := d.Start(ctx, def); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Kill(context.Background(), def.Name) })
	b.Run("driver", func(b *testing.B) {
		for b.Loop() {
			if _, err := d.Status(ctx, def.Name); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		l := rawConn(b, h)
		for b.Loop() {
			dom, err := l.DomainLookupByName(def.Name)
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := l.DomainGetState(dom, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("virsh", func(b *testing.B) {
		needVirsh(b)
		for b.Loop() {
			virsh(b, h, "domstate", def.Name)
		}
	})
}

// BenchmarkCrashToEvent: kill the guest's qemu with SIGKILL and time the
// crash event: the driver's (its pidfd watch) and libvirt's own lifecycle
// event on a raw subscription, side by side.
func BenchmarkCrashToEvent(b *testing.B) {
	h := libvirttest.Start(b)
	d := newDriver(b, h, "n1")
	def := guestDef(b, "bc1")
	l := rawConn(b, h)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	raw, err := l.LifecycleEvents(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var driverTotal, rawTotal time.Duration
	n := 0
	for b.Loop() {
		b.StopTimer()
		if err := d.Start(ctx, def); err != nil {
			b.Fatal(err)
		}
		drainUntil(b, d, def.Name, hypervisor.EventStarted)
		st, err := d.Status(ctx, def.Name)
		if err != nil || st.PID == 0 {
			b.Fatalf("status %+v %v", st, err)
		}
		b.StartTimer()
		killed := time.Now()
		if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		ev := drainUntil(b, d, def.Name, hypervisor.EventCrashed)
		driverTotal += ev.At.Sub(killed)
		b.StopTimer()
		// libvirt's own report of the same death.
		for msg := range raw {
			if msg.Dom.Name == def.Name && msg.Event == int32(golibvirt.DomainEventStopped) {
				rawTotal += time.Since(killed)
				break
			}
		}
		n++
		b.StartTimer()
	}
	b.ReportMetric(float64(driverTotal.Milliseconds())/float64(n), "ms-driver-event")
	b.ReportMetric(float64(rawTotal.Milliseconds())/float64(n), "ms-libvirt-event")
}

// BenchmarkMigrate: live-migrate the running test guest back and forth
// between two namespace hosts, through the driver and with virsh.
func BenchmarkMigrate(b *testing.B) {
	a, c := libvirttest.StartPair(b)
	da, dc := newDriver(b, a, "a"), newDriver(b, c, "c")
	def := guestDef(b, "bm1")
	ctx := context.Background()
	if err := da.Start(ctx, def); err != nil {
		b.Fatal(err)
	}
	if _, err := testguest.WaitSerial(ctxT(b, 60*time.Second), def.SerialLog, func(s testguest.Serial) bool { return s.Count >= 1 }); err != nil {
		b.Fatal(err)
	}
	hosts := []*libvirttest.Host{a, c}
	drivers := []*libvirt.Driver{da, dc}
	at := 0
	b.Cleanup(func() { drivers[at].Kill(context.Background(), def.Name) })

	b.Run("driver", func(b *testing.B) {
		var downtime time.Duration
		n := 0
		for b.Loop() {
			to := 1 - at
			target, err := drivers[to].PrepareIncoming(ctx, def, hypervisor.IncomingOptions{TLS: true})
			if err != nil {
				b.Fatal(err)
			}
			err = drivers[at].Migrate(ctx, def.Name, target, func(p hypervisor.Progress) { downtime += p.Downtime })
			if err != nil {
				b.Fatal(err)
			}
			at = to
			n++
		}
		b.ReportMetric(float64(downtime.Milliseconds())/float64(n), "ms-downtime")
	})
	b.Run("virsh", func(b *testing.B) {
		needVirsh(b)
		for b.Loop() {
			to := 1 - at
			virsh(b, hosts[at], "migrate", "--live", "--p2p", "--persistent", "--undefinesource", def.Name, hosts[to].URI)
			at = to
		}
	})
}

func drainUntil(b *testing.B, d hypervisor.Driver, guest string, kind hypervisor.EventKind) hypervisor.Event {
	b.Helper()
	timer := time.NewTimer(60 * time.Second)
	defer timer.Stop()
	for {
		select {
		case ev := <-d.Events():
			if ev.Guest == guest && ev.Kind == kind {
				return ev
			}
		case <-timer.C:
			b.Fatalf("no %s event for %s", kind, guest)
		}
	}
}
