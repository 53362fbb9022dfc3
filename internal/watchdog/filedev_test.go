package watchdog

import (
	"path/filepath"
	"testing"
	"time"
)

func TestFileDevice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wd")
	now := time.Unix(1000, 0)
	dev, err := OpenAny(FileDevicePrefix + path)
	if err != nil {
		t.Fatal(err)
	}
	d := dev.(*FileDevice)
	d.now = func() time.Time { return now }
	if got, err := d.SetTimeout(7); err != nil || got != 7 {
		t.Fatalf("SetTimeout = %d, %v", got, err)
	}
	armed, deadline, err := ReadFileDevice(path)
	if err != nil || !armed || !deadline.Equal(now.Add(7*time.Second)) {
		t.Fatalf("after SetTimeout: armed %v deadline %v err %v", armed, deadline, err)
	}
	now = now.Add(3 * time.Second)
	if err := d.Keepalive(); err != nil {
		t.Fatal(err)
	}
	if _, deadline, _ = ReadFileDevice(path); !deadline.Equal(now.Add(7 * time.Second)) {
		t.Fatalf("keepalive did not restart the countdown: %v", deadline)
	}
	if err := d.Disarm(); err != nil {
		t.Fatal(err)
	}
	if armed, _, _ := ReadFileDevice(path); armed {
		t.Fatal("still armed after the magic close")
	}
	if err := d.Keepalive(); err == nil {
		t.Fatal("keepalive after close succeeded")
	}
}
