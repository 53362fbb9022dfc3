package testbed

import (
	"context"
	"path/filepath"
	"time"

	"github.com/haven-ha/haven/internal/watchdog"
)

// WatchdogDevice is the --watchdog-device an agent in host h uses: an
// emulated watchdog (watchdog.FileDevice) whose countdown the bed enforces,
// because the hosts share one kernel and the machine's real watchdog would
// reset them all.
func (h *Host) WatchdogDevice() string { return watchdog.FileDevicePrefix + h.watchdogFile() }

func (h *Host) watchdogFile() string { return filepath.Join(h.bed.hostDir(h.Name), "watchdog") }

// WatchWatchdogs plays the hosts' watchdog hardware: every interval it powers
// off each host whose armed emulated watchdog's countdown has run out, as a
// real watchdog resets its machine. A host powered off this way stays off
// until PowerOn (or WatchPower's hooks bring it back). Call stop to end it.
func (b *Bed) WatchWatchdogs(ctx context.Context, interval time.Duration) (stop func()) {
	if interval <= 0 {
		interval = 50 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for _, h := range b.hosts {
				armed, deadline, err := watchdog.ReadFileDevice(h.watchdogFile())
				if err != nil || !armed || time.Now().Before(deadline) || !h.PoweredOn() {
					continue
				}
				b.log.Warn("watchdog expired: powering the host off", "host", h.Name, "deadline", deadline)
				if err := b.PowerOff(ctx, h.Name); err != nil {
					b.log.Error("watchdog power-off failed", "host", h.Name, "err", err)
					continue
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// disarmEmulatedWatchdog resets the host's emulated watchdog, as a power
// loss resets a real one.
func disarmEmulatedWatchdog(h *Host) error {
	if !fileExists(h.watchdogFile()) {
		return nil
	}
	return writeFileAtomic(h.watchdogFile(), []byte("disarmed\n"))
}
