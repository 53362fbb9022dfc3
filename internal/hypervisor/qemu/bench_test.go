package qemu

// Benchmarks of the driver against raw QEMU (started by hand with the same
// arguments, driven over QMP directly). Each iteration boots a guest, so run
// them with a small count: go test -run XXX -bench . -benchtime 3x
//
// Metrics (per op): ready_s = start to the guest's first serial line;
// call_s = until the start call returns (QEMU up, QMP connected);
// event_ms = SIGKILL to the crash being seen; migrate_s = migrate call to
// completion; downtime_ms = QEMU's reported downtime.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/testguest"
)

// rawQEMU is a QEMU started by hand.
type rawQEMU struct {
	cmd    *exec.Cmd
	exited chan struct{}
	mon    *monitor
}

// startRaw runs QEMU with the driver's arguments for def, in dir, plus
// extra, and connects to its QMP socket.
func startRaw(b *testing.B, d *Driver, def guestdef.Definition, dir string, extra ...string) *rawQEMU {
	b.Helper()
	os.MkdirAll(dir, 0o755)
	args := append(d.args(def, dir), extra...)
	cmd := exec.Command(d.cfg.Binary, args...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	r := &rawQEMU{cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(r.exited) }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		m, err := dialMonitor(ctx, filepath.Join(dir, "qmp.sock"), nil)
		if err == nil {
			r.mon = m
			return r
		}
		select {
		case <-r.exited:
			b.Fatal("raw qemu exited")
		case <-ctx.Done():
			b.Fatal(err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (r *rawQEMU) kill() {
	r.cmd.Process.Kill()
	<-r.exited
	if r.mon != nil {
		r.mon.close()
	}
}

func waitReady(b *testing.B, serial string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := testguest.WaitSerial(ctx, serial, func(s testguest.Serial) bool { return s.Ready }); err != nil {
		b.Fatal(err)
	}
}

func benchSetup(b *testing.B) (testguest.Files, string, *Driver) {
	files := testguest.Build(b)
	dir := shortDir(b)
	d := newDriver(b, filepath.Join(dir, "a"), "a")
	return files, dir, d
}

func BenchmarkStart(b *testing.B) {
	files, dir, d := benchSetup(b)
	b.Run("driver", func(b *testing.B) {
		var ready, call time.Duration
		for i := 0; i < b.N; i++ {
			serial := filepath.Join(dir, "d"+strconv.Itoa(i)+".log")
			def := testguest.Definition("g", files, serial, "")
			t0 := time.Now()
			if err := d.Start(context.Background(), def); err != nil {
				b.Fatal(err)
			}
			call += time.Since(t0)
			waitReady(b, serial)
			ready += time.Since(t0)
			b.StopTimer()
			d.Kill(context.Background(), "g")
			b.StartTimer()
		}
		b.ReportMetric(ready.Seconds()/float64(b.N), "ready_s")
		b.ReportMetric(call.Seconds()/float64(b.N), "call_s")
	})
	b.Run("raw", func(b *testing.B) {
		var ready, call time.Duration
		for i := 0; i < b.N; i++ {
			serial := filepath.Join(dir, "r"+strconv.Itoa(i)+".log")
			def := testguest.Definition("g", files, serial, "")
			t0 := time.Now()
			r := startRaw(b, d, def, filepath.Join(dir, "raw"))
			call += time.Since(t0)
			waitReady(b, serial)
			ready += time.Since(t0)
			b.StopTimer()
			r.kill()
			b.StartTimer()
		}
		b.ReportMetric(ready.Seconds()/float64(b.N), "ready_s")
		b.ReportMetric(call.Seconds()/float64(b.N), "call_s")
	})
}

func BenchmarkCrashEvent(b *testing.B) {
	files, dir, d := benchSetup(b)
	b.Run("driver", func(b *testing.B) {
		var total time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			serial := filepath.Join(dir, "d"+strconv.Itoa(i)+".log")
			if err := d.Start(context.Background(), testguest.Definition("g", files, serial, "")); err != nil {
				b.Fatal(err)
			}
			waitReady(b, serial)
			st, _ := d.Status(context.Background(), "g")
			drain(d)
			b.StartTimer()
			t0 := time.Now()
			syscall.Kill(st.PID, syscall.SIGKILL)
			waitEvent(b, d, "g", hypervisor.EventCrashed, 10*time.Second)
			total += time.Since(t0)
		}
		b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "event_ms")
	})
	b.Run("raw", func(b *testing.B) {
		var total time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			serial := filepath.Join(dir, "r"+strconv.Itoa(i)+".log")
			r := startRaw(b, d, testguest.Definition("g", files, serial, ""), filepath.Join(dir, "raw"))
			waitReady(b, serial)
			b.StartTimer()
			t0 := time.Now()
			r.cmd.Process.Signal(syscall.SIGKILL)
			<-r.exited
			total += time.Since(t0)
			r.mon.close()
		}
		b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "event_ms")
	})
}

func drain(d *Driver) {
	for {
		select {
		case <-d.Events():
		default:
			return
		}
	}
}

func BenchmarkMigrate(b *testing.B) {
	files, dir, a := benchSetup(b)
	bd := newDriver(b, filepath.Join(dir, "b"), "b")
	b.Run("driver", func(b *testing.B) {
		var total time.Duration
		var downtime time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			serial := filepath.Join(dir, "d"+strconv.Itoa(i)+".log")
			def := testguest.Definition("g", files, serial, "")
			src, dst := a, bd
			if err := src.Start(context.Background(), def); err != nil {
				b.Fatal(err)
			}
			waitReady(b, serial)
			target, err := dst.PrepareIncoming(context.Background(), def, hypervisor.IncomingOptions{TLS: true})
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			t0 := time.Now()
			var last hypervisor.Progress
			if err := src.Migrate(context.Background(), "g", target, func(p hypervisor.Progress) { last = p }); err != nil {
				b.Fatal(err)
			}
			total += time.Since(t0)
			downtime += last.Downtime
			b.StopTimer()
			dst.Kill(context.Background(), "g")
			b.StartTimer()
		}
		b.ReportMetric(total.Seconds()/float64(b.N), "migrate_s")
		b.ReportMetric(float64(downtime.Milliseconds())/float64(b.N), "downtime_ms")
	})
	b.Run("raw", func(b *testing.B) {
		var total time.Duration
		var downtime time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			serial := filepath.Join(dir, "r"+strconv.Itoa(i)+".log")
			def := testguest.Definition("g", files, serial, "")
			src := startRaw(b, a, def, filepath.Join(dir, "rawa"))
			waitReady(b, serial)
			port, _ := freePort("127.0.0.1")
			uri := "tcp:127.0.0.1:" + strconv.Itoa(port)
			dst := startRaw(b, a, def, filepath.Join(dir, "rawb"), "-incoming", uri)
			b.StartTimer()
			t0 := time.Now()
			ctx := context.Background()
			if err := src.mon.run(ctx, "migrate", map[string]any{"uri": uri}, nil); err != nil {
				b.Fatal(err)
			}
			var mi migrationInfo
			for {
				mi = migrationInfo{}
				if err := src.mon.run(ctx, "query-migrate", nil, &mi); err != nil {
					b.Fatal(err)
				}
				if mi.Status == "completed" || mi.Status == "failed" {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if mi.Status != "completed" {
				b.Fatalf("raw migration %s: %s", mi.Status, mi.ErrorDesc)
			}
			total += time.Since(t0)
			downtime += time.Duration(mi.Downtime) * time.Millisecond
			b.StopTimer()
			src.kill()
			dst.kill()
			b.StartTimer()
		}
		b.ReportMetric(total.Seconds()/float64(b.N), "migrate_s")
		b.ReportMetric(float64(downtime.Milliseconds())/float64(b.N), "downtime_ms")
	})
}
