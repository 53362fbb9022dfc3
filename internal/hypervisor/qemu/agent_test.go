package qemu

import (
	"slices"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/guestdef"
)

func TestAgentAndPanicDevices(t *testing.T) {
	d := &Driver{cfg: Config{Machine: "pc"}}
	plain := guestdef.Definition{Name: "g", VCPUs: 1, Memory: 128 << 20}
	a := strings.Join(d.args(plain, "/run/h/g"), " ")
	if !strings.Contains(a, "-device pvpanic") {
		t.Errorf("no pvpanic device by default: %s", a)
	}
	if strings.Contains(a, "qga") {
		t.Errorf("agent channel without a guest agent: %s", a)
	}
	off := plain
	off.NoPanicDevice = true
	if a := d.args(off, "/run/h/g"); slices.Contains(a, "pvpanic") {
		t.Errorf("pvpanic despite no_panic_device: %v", a)
	}
	if strings.Contains(a, "-vnc") {
		t.Errorf("a display without display: vnc: %s", a)
	}
	vnc := plain
	vnc.Display = "vnc"
	if a := strings.Join(d.args(vnc, "/run/h/g"), " "); !strings.Contains(a, "-vga std -vnc unix:/run/h/g/vnc.sock") {
		t.Errorf("display vnc: %s", a)
	}
	if !strings.Contains(a, "socket,id=serial0,path=/run/h/g/console.sock,server=on,wait=off") {
		t.Errorf("no console socket: %s", a)
	}
	withAgent := plain
	withAgent.Health = []guestdef.Check{{Exec: []string{"/bin/true"}}}
	a = strings.Join(d.args(withAgent, "/run/h/g"), " ")
	for _, w := range []string{"socket,id=qga0,path=/run/h/g/qga.sock,server=on,wait=off", "virtio-serial-pci", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0"} {
		if !strings.Contains(a, w) {
			t.Errorf("args lack %s: %s", w, a)
		}
	}
}
