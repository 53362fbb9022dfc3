package watchdog

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FileDevicePrefix selects the emulated device in an agent's
// --watchdog-device: "file:/path".
const FileDevicePrefix = "file:"

// FileDevice is a watchdog for hosts that share one kernel, such as the
// namespace hosts of the test bed, where arming the machine's real watchdog
// would reset every host at once. Instead of a countdown in hardware it keeps,
// in a file, the moment its countdown ends; a supervisor outside the host (the
// test bed's) powers the host off when that moment passes. Everything else
// (arming, pets only with proof, the magic close) is the Watchdog's, unchanged.
//
// The file holds "armed UNIX-NANOS" or "disarmed".
type FileDevice struct {
	path string
	now  func() time.Time

	mu      sync.Mutex
	timeout time.Duration
	closed  bool
}

// OpenFile arms an emulated watchdog backed by the file at path, with a
// default timeout of 60 s until SetTimeout.
func OpenFile(path string) (Device, error) {
	d := &FileDevice{path: path, now: time.Now, timeout: 60 * time.Second}
	if err := d.write(); err != nil {
		return nil, err
	}
	return d, nil
}

// OpenAny opens "file:PATH" as a FileDevice and anything else as a real
// Linux watchdog device.
func OpenAny(path string) (Device, error) {
	if p, ok := strings.CutPrefix(path, FileDevicePrefix); ok {
		return OpenFile(p)
	}
	return Open(path)
}

func (d *FileDevice) write() error {
	line := "armed " + strconv.FormatInt(d.now().Add(d.timeout).UnixNano(), 10) + "\n"
	tmp := d.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(line), 0o644); err != nil {
		return fmt.Errorf("emulated watchdog %s: %w", d.path, err)
	}
	return os.Rename(tmp, d.path)
}

// SetTimeout sets the countdown and restarts it.
func (d *FileDevice) SetTimeout(seconds int) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.timeout = time.Duration(seconds) * time.Second
	return seconds, d.write()
}

// Timeout returns the countdown in seconds.
func (d *FileDevice) Timeout() (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return int(d.timeout / time.Second), nil
}

// Keepalive restarts the countdown.
func (d *FileDevice) Keepalive() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("emulated watchdog %s: closed", d.path)
	}
	return d.write()
}

// Disarm is the magic close.
func (d *FileDevice) Disarm() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := os.WriteFile(d.path, []byte("disarmed\n"), 0o644); err != nil {
		return fmt.Errorf("emulated watchdog %s: %w", d.path, err)
	}
	d.closed = true
	return nil
}

// Close leaves the countdown running.
func (d *FileDevice) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	return nil
}

// ReadFileDevice tells a supervisor whether the emulated watchdog at path is
// armed and when its countdown ends.
func ReadFileDevice(path string) (armed bool, deadline time.Time, err error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return false, time.Time{}, nil
	}
	if err != nil {
		return false, time.Time{}, err
	}
	f := strings.Fields(string(b))
	if len(f) == 2 && f[0] == "armed" {
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return false, time.Time{}, fmt.Errorf("emulated watchdog %s: bad deadline %q", path, f[1])
		}
		return true, time.Unix(0, ns), nil
	}
	return false, time.Time{}, nil
}
