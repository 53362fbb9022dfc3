package testguest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseSerial(t *testing.T) {
	tests := []struct {
		name string
		log  string
		want Serial
	}{
		{"empty", "", Serial{}},
		{"firmware noise before ready",
			"\x1bc\x1b[?7lSeaBIOS\r\nBooting from ROM..HAVEN-READY b1\r\nHAVEN-COUNT b1 10\r\nHAVEN-COUNT b1 20\r\n",
			Serial{Ready: true, BootID: "b1", Count: 20, Boots: 1}},
		{"torn last line", "HAVEN-READY b1\nHAVEN-COUNT b1 7\nHAVEN-COUNT b1 8", Serial{Ready: true, BootID: "b1", Count: 8, Boots: 1}},
		{"garbage count ignored", "HAVEN-READY b1\nHAVEN-COUNT b1 7\nHAVEN-COUNT b1 x\n", Serial{Ready: true, BootID: "b1", Count: 7, Boots: 1}},
		{"reboot resets", "HAVEN-READY b1\nHAVEN-COUNT b1 70\nHAVEN-READY b2\nHAVEN-COUNT b2 3\n", Serial{Ready: true, BootID: "b2", Count: 3, Boots: 2}},
		{"poweroff", "HAVEN-READY b1\nHAVEN-COUNT b1 1\nHAVEN-POWEROFF b1\n", Serial{Ready: true, BootID: "b1", Count: 1, Boots: 1, PoweredOff: true}},
		{"no acpi", "HAVEN-NOACPI b1\nHAVEN-READY b1\n", Serial{Ready: true, BootID: "b1", Boots: 1, NoACPI: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSerial(strings.NewReader(tt.log))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("ParseSerial = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseRecord(t *testing.T) {
	pad := func(s string) []byte { b := make([]byte, 512); copy(b, s); return b }
	tests := []struct {
		name    string
		sector  []byte
		want    Record
		wantErr bool
	}{
		{"record", pad("HAVEN 7c1c-aa 101\n"), Record{"7c1c-aa", 101}, false},
		{"zeros", make([]byte, 512), Record{}, true},
		{"no newline", pad("HAVEN b 1"), Record{}, true},
		{"bad count", pad("HAVEN b x\n"), Record{}, true},
		{"qcow2", pad("QFI\xfb\x00\x00\x00\x03"), Record{}, true},
		{"short", []byte("HAVEN b 3\n"), Record{"b", 3}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRecord(tt.sector)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseRecord = %+v, %v; want %+v, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	if _, err := ParseRecord(make([]byte, 512)); !errors.Is(err, ErrNoRecord) {
		t.Errorf("zeros: err = %v, want ErrNoRecord", err)
	}
}

func FuzzParseSerial(f *testing.F) {
	f.Add("HAVEN-READY b1\r\nHAVEN-COUNT b1 10\r\n")
	f.Add("HAVEN-COUNT\nHAVEN-READY\nHAVEN-")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseSerial(strings.NewReader(s))
		if err == nil && got.Count < 0 && !strings.Contains(s, "-") {
			t.Errorf("negative count from %q", s)
		}
	})
}

func FuzzParseRecord(f *testing.F) {
	f.Add([]byte("HAVEN b 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRecord(b)
		if err == nil && r.BootID == "" {
			t.Errorf("record without boot id from %q", b)
		}
	})
}

// TestGuestBoots boots the built guest in a bare QEMU (no Haven driver) and
// checks everything the guest promises: serial counter, disk record sharing
// the counter, and power-off on the ACPI power button.
func TestGuestBoots(t *testing.T) {
	files := Build(t)
	dir := t.TempDir()
	serial, disk, sock := filepath.Join(dir, "serial.log"), filepath.Join(dir, "disk.raw"), filepath.Join(dir, "qmp.sock")
	if err := CreateDisk(disk, 1<<20); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("qemu-system-x86_64", "-accel", "tcg", "-m", "128", "-smp", "1",
		"-nographic", "-nodefaults", "-no-user-config",
		"-kernel", files.Kernel, "-initrd", files.Initrd, "-append", Cmdline,
		"-serial", "file:"+serial,
		"-drive", "file="+disk+",format=raw,if=virtio",
		"-qmp", "unix:"+sock+",server=on,wait=off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := WaitSerial(ctx, serial, func(s Serial) bool { return s.Count >= 20 })
	if err != nil {
		t.Fatal(err)
	}
	if s.NoACPI {
		t.Errorf("guest found no ACPI power button")
	}
	rec, err := ReadRecord(disk)
	if err != nil {
		t.Fatal(err)
	}
	if rec.BootID != s.BootID || rec.Count < s.Count {
		t.Errorf("disk record %+v does not continue serial %+v", rec, s)
	}

	// ACPI power button: the guest powers off and QEMU exits by itself.
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"qmp_capabilities", "system_powerdown"} {
		b, _ := json.Marshal(map[string]string{"execute": c})
		if _, err := conn.Write(append(b, '\n')); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("qemu exit after powerdown: %v", waitErr)
		}
	case <-ctx.Done():
		t.Fatal("guest did not power off on the ACPI power button")
	}
	s, err = ReadSerial(serial)
	if err != nil || !s.PoweredOff {
		t.Errorf("serial after powerdown: %+v, %v", s, err)
	}
	if _, err := os.Stat(disk); err != nil {
		t.Fatal(err)
	}
}
