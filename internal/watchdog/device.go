package watchdog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Device is an open kernel watchdog. Opening the device file armed it: from
// then on the machine resets unless Keepalive is called more often than the
// timeout, or the device is disarmed.
type Device interface {
	// SetTimeout asks for a timeout in whole seconds and returns the one the
	// driver actually set (drivers round to what the hardware can do).
	SetTimeout(seconds int) (actual int, err error)
	// Timeout returns the current timeout in seconds.
	Timeout() (int, error)
	// Keepalive restarts the countdown.
	Keepalive() error
	// Disarm stops the watchdog with the magic close: it writes 'V' and
	// closes the device. If the write fails the device stays open (and
	// armed) so the caller can keep it alive and retry.
	Disarm() error
	// Close closes the device without the magic character: the countdown
	// goes on and the machine resets when it ends.
	Close() error
}

// Opener opens, and so arms, the watchdog device file at path.
type Opener func(path string) (Device, error)

// Linux watchdog ioctl requests (linux/watchdog.h): _IOR('W', 5, int) and so
// on, for an int-sized argument.
const (
	wdiocKeepalive  = 0x80045705
	wdiocSetTimeout = 0xc0045706
	wdiocGetTimeout = 0x80045707
)

// ioctlFunc issues an ioctl whose argument is a pointer to an int.
type ioctlFunc func(fd uintptr, req uint, arg *int32) error

func sysIoctl(fd uintptr, req uint, arg *int32) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(unsafe.Pointer(arg)))
	if errno != 0 {
		return errno
	}
	return nil
}

// LinuxDevice is a Device over a Linux watchdog device file
// (/dev/watchdog, /dev/watchdogN).
type LinuxDevice struct {
	f     *os.File
	ioctl ioctlFunc
}

// Open opens the watchdog device at path. This ARMS the watchdog: the
// machine resets after the driver's current timeout unless the device is
// kept alive or disarmed. It is an Opener.
func Open(path string) (Device, error) { return openWith(path, sysIoctl) }

func openWith(path string, ioctl ioctlFunc) (*LinuxDevice, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open watchdog %s: %w", path, err)
	}
	return &LinuxDevice{f: f, ioctl: ioctl}, nil
}

func (d *LinuxDevice) call(what string, req uint, v *int32) error {
	if err := d.ioctl(d.f.Fd(), req, v); err != nil {
		return fmt.Errorf("watchdog %s: %s: %w", d.f.Name(), what, err)
	}
	return nil
}

// SetTimeout implements Device with WDIOC_SETTIMEOUT.
func (d *LinuxDevice) SetTimeout(seconds int) (int, error) {
	if seconds < 1 || seconds > 1<<16 {
		return 0, fmt.Errorf("watchdog %s: timeout %ds out of range", d.f.Name(), seconds)
	}
	v := int32(seconds)
	if err := d.call("set timeout", wdiocSetTimeout, &v); err != nil {
		return 0, err
	}
	return int(v), nil
}

// Timeout implements Device with WDIOC_GETTIMEOUT.
func (d *LinuxDevice) Timeout() (int, error) {
	var v int32
	if err := d.call("get timeout", wdiocGetTimeout, &v); err != nil {
		return 0, err
	}
	return int(v), nil
}

// Keepalive implements Device with WDIOC_KEEPALIVE, falling back to a write
// (any character but 'V') for drivers without the ioctl.
func (d *LinuxDevice) Keepalive() error {
	var v int32
	err := d.ioctl(d.f.Fd(), wdiocKeepalive, &v)
	if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
		_, err = d.f.Write([]byte{'k'})
	}
	if err != nil {
		return fmt.Errorf("watchdog %s: keepalive: %w", d.f.Name(), err)
	}
	return nil
}

// Disarm implements Device with the magic close.
func (d *LinuxDevice) Disarm() error {
	if _, err := d.f.Write([]byte{'V'}); err != nil {
		return fmt.Errorf("watchdog %s: disarm (magic close): %w; it is still armed", d.f.Name(), err)
	}
	if err := d.f.Close(); err != nil {
		return fmt.Errorf("watchdog %s: disarm: close: %w", d.f.Name(), err)
	}
	return nil
}

// Close implements Device: it closes without disarming.
func (d *LinuxDevice) Close() error { return d.f.Close() }

// Host is where a node's watchdog lives.
type Host struct {
	// Device is the watchdog device file; "" means /dev/watchdog.
	Device string
	// SysfsDir is the watchdog class directory; "" means
	// /sys/class/watchdog.
	SysfsDir string
	// Modprobe is the modprobe command; "" means "modprobe" on $PATH.
	Modprobe string
}

// DefaultDevice is the watchdog device file Haven uses by default.
const DefaultDevice = "/dev/watchdog"

func (h Host) device() string   { return cmpOr(h.Device, DefaultDevice) }
func (h Host) sysfs() string    { return cmpOr(h.SysfsDir, "/sys/class/watchdog") }
func (h Host) modprobe() string { return cmpOr(h.Modprobe, "modprobe") }

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Ensure makes sure the host has a watchdog device Haven can disarm, without
// opening (arming) it: when the device file is missing it loads the softdog
// module and waits, until ctx ends, for the device to appear. It refuses a
// watchdog whose driver has nowayout set, since Haven could then never
// disarm it once armed.
func (h Host) Ensure(ctx context.Context) error {
	dev := h.device()
	if _, err := os.Stat(dev); errors.Is(err, os.ErrNotExist) {
		out, err := exec.CommandContext(ctx, h.modprobe(), "softdog").CombinedOutput()
		if err != nil {
			return fmt.Errorf("watchdog: %s does not exist and loading softdog failed (%s softdog: %v: %s): load your hardware watchdog's driver (such as iTCO_wdt or ipmi_watchdog), install the kernel's modules, or use fence devices instead of watchdog mode",
				dev, h.modprobe(), err, strings.TrimSpace(string(out)))
		}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := os.Stat(dev); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("watchdog: softdog loaded but %s did not appear: %w; check that devtmpfs is mounted on /dev", dev, ctx.Err())
			case <-tick.C:
			}
		}
	} else if err != nil {
		return fmt.Errorf("watchdog: %w", err)
	}
	nowayout, err := h.nowayout()
	if err != nil {
		return err
	}
	if nowayout {
		return fmt.Errorf("watchdog: %s has nowayout set, so Haven could never disarm it: reload its driver with nowayout=0 (for softdog: modprobe -r softdog; modprobe softdog nowayout=0)", dev)
	}
	return nil
}

// nowayout reports whether the watchdog behind the device file has nowayout
// set, as sysfs says. A kernel without the attribute reports false.
func (h Host) nowayout() (bool, error) {
	name := filepath.Base(h.device())
	if name == "watchdog" {
		// The legacy device is the first watchdog registered.
		name = "watchdog0"
	}
	b, err := os.ReadFile(filepath.Join(h.sysfs(), name, "nowayout"))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("watchdog: read nowayout of %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)) == "1", nil
}
