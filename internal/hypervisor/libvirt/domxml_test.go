package libvirt

import (
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"

	"github.com/haven-ha/haven/internal/guestdef"
)

func TestDomainXML(t *testing.T) {
	base := guestdef.Definition{
		Name: "web1", VCPUs: 2, Memory: 256 << 20,
		Boot:      guestdef.Boot{Kernel: "/k", Initrd: "/i", Cmdline: "console=ttyS0"},
		SerialLog: "/var/log/web1.serial",
	}
	withDisks := base
	withDisks.Disks = []guestdef.Disk{
		{Path: "/var/lib/web1.qcow2", Format: "qcow2"},
		{Path: "/dev/vg/data", Bus: "scsi", ReadOnly: true},
	}
	withDisks.NICs = []guestdef.NIC{{Bridge: "br0", MAC: "52:54:00:00:00:01"}, {User: true, Model: "e1000"}}
	raw := base
	raw.RawXML = `<domain type='kvm'><name>old</name><uuid>11111111-2222-3333-4444-555555555555</uuid>
<memory unit='KiB'>1024</memory><os><type arch='x86_64'>hvm</type></os>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator><watchdog model='i6300esb' action='reset'/></devices></domain>`

	tests := []struct {
		name    string
		def     guestdef.Definition
		typ     string
		uuid    string
		want    []string // substrings of the XML
		wantErr string
	}{
		{"kernel boot", base, "qemu", "", []string{
			`type="qemu"`, `<name>web1</name>`, `<uuid>` + GuestUUID("web1") + `</uuid>`,
			`<memory unit="KiB">262144</memory>`, `<vcpu>2</vcpu>`, `<kernel>/k</kernel>`, `<initrd>/i</initrd>`,
			`<cmdline>console=ttyS0</cmdline>`, `<acpi></acpi>`, `<serial type="pty">`,
			`<log file="/var/log/web1.serial" append="on">`, `<memballoon model="none">`, `<on_crash>destroy</on_crash>`,
		}, ""},
		{"kvm and a kept uuid", base, "kvm", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", []string{`type="kvm"`, `<uuid>aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee</uuid>`}, ""},
		{"disks and nics", withDisks, "qemu", "", []string{
			`<source file="/var/lib/web1.qcow2">`, `<driver name="qemu" type="qcow2" cache="none">`, `<target dev="vda" bus="virtio">`,
			`<source dev="/dev/vg/data">`, `<target dev="sdb" bus="scsi">`, `<readonly>`,
			`<interface type="bridge">`, `<source bridge="br0">`, `<mac address="52:54:00:00:00:01">`, `<model type="virtio">`,
			`<interface type="user">`, `<model type="e1000">`,
		}, ""},
		{"raw xml is the base", raw, "qemu", "", []string{
			`type="qemu"`, `<name>web1</name>`, `<uuid>11111111-2222-3333-4444-555555555555</uuid>`,
			`<memory unit="KiB">262144</memory>`, `<watchdog model="i6300esb" action="reset">`,
		}, ""},
		{"no image lock", guestdef.Definition{Name: "x", Memory: 1 << 30, Disks: []guestdef.Disk{{Path: "/d.img", NoImageLock: true}}}, "qemu", "", []string{`<shareable></shareable>`}, ""},
		{"no image lock on qcow2", guestdef.Definition{Name: "x", Memory: 1 << 30, Disks: []guestdef.Disk{{Path: "/d.qcow2", Format: "qcow2", NoImageLock: true}}}, "qemu", "", nil, "needs a raw image"},
		{"pvpanic by default", guestdef.Definition{Name: "x", Memory: 1 << 30}, "qemu", "", []string{`<panic model="isa">`}, ""},
		{"guest agent channel", guestdef.Definition{Name: "x", Memory: 1 << 30, GuestAgent: true}, "qemu", "", []string{
			`<channel type="unix">`, `<source mode="bind">`, `<target type="virtio" name="org.qemu.guest_agent.0">`}, ""},
		{"vnc display on a socket", guestdef.Definition{Name: "x", Memory: 1 << 30, Display: "vnc"}, "qemu", "", []string{
			`<graphics type="vnc">`, `<listen type="socket">`, `<model type="vga">`}, ""},
		{"no name", guestdef.Definition{Memory: 1 << 20}, "qemu", "", nil, "no name"},
		{"no memory", guestdef.Definition{Name: "x"}, "qemu", "", nil, "no memory"},
		{"unresolved volume", guestdef.Definition{Name: "x", Memory: 1 << 30, Disks: []guestdef.Disk{{Pool: "p", Volume: "v"}}}, "qemu", "", nil, "no resolved path"},
		{"bad bus", guestdef.Definition{Name: "x", Memory: 1 << 30, Disks: []guestdef.Disk{{Path: "/d", Bus: "floppy"}}}, "qemu", "", nil, "unknown bus"},
		{"nic without backend", guestdef.Definition{Name: "x", Memory: 1 << 30, NICs: []guestdef.NIC{{}}}, "qemu", "", nil, "neither a bridge"},
		{"bad raw xml", guestdef.Definition{Name: "x", Memory: 1 << 30, RawXML: "<domain"}, "qemu", "", nil, "parse its raw libvirt XML"},
	}
	noPanic, _ := DomainXML(guestdef.Definition{Name: "x", Memory: 1 << 30, NoPanicDevice: true}, "qemu", "")
	if strings.Contains(noPanic, "<panic") || strings.Contains(noPanic, "<channel") {
		t.Errorf("no_panic_device and no agent still give devices:\n%s", noPanic)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DomainXML(tt.def, tt.typ, tt.uuid)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("XML lacks %s:\n%s", w, got)
				}
			}
			var back libvirtxml.Domain
			if err := back.Unmarshal(got); err != nil {
				t.Fatalf("the XML does not parse back: %v", err)
			}
		})
	}
}

func TestGuestUUID(t *testing.T) {
	a, b := GuestUUID("web1"), GuestUUID("web2")
	if a != GuestUUID("web1") || a == b {
		t.Fatalf("GuestUUID not a stable function of the name: %s %s", a, b)
	}
	if len(a) != 36 || a[14] != '5' || !strings.ContainsRune("89ab", rune(a[19])) {
		t.Fatalf("GuestUUID(web1) = %s, not a version 5 RFC 4122 UUID", a)
	}
}

// FuzzDomainXML feeds arbitrary raw XML: DomainXML must not panic, and
// whatever it accepts must parse back with the definition's name.
// Issue 10, High 1: raw XML cannot bring its own emulator binary, command
// line, security label or devices that open host files.
func TestRawXMLCannotEscape(t *testing.T) {
	def := guestdef.Definition{Name: "x", Memory: 1 << 30, RawXML: `<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>x</name><memory>1</memory>
<os><type>hvm</type><kernel>/etc/shadow</kernel><loader>/etc/passwd</loader></os><seclabel type='none'/>
<devices><emulator>/bin/sh</emulator><disk type='file'><source file='/etc/shadow'/><target dev='vda'/></disk>
<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='0' slot='1' function='0'/></source></hostdev>
<filesystem type='mount'><source dir='/'/><target dir='root'/></filesystem>
<serial type='file'><source path='/etc/cron.d/x'/></serial></devices>
<qemu:commandline><qemu:arg value='-drive'/><qemu:arg value='file=/etc/shadow'/></qemu:commandline></domain>`}
	x, err := DomainXML(def, "qemu", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"/bin/sh", "/etc/shadow", "/etc/passwd", "/etc/cron.d", "hostdev", "filesystem", "seclabel", "commandline"} {
		if strings.Contains(x, bad) {
			t.Errorf("domain XML keeps %q from the raw XML:\n%s", bad, x)
		}
	}
}

// TestDomainXMLQuickCPUCheck: every domain drops QEMU's
// cpu-unavailable-features capability (libvirt then checks the CPU with two
// QMP reads instead of one per feature), whatever the raw XML asked for.
func TestDomainXMLQuickCPUCheck(t *testing.T) {
	for _, raw := range []string{"", `<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>x</name><memory>1</memory>
<qemu:capabilities><qemu:add capability='blockdev'/></qemu:capabilities></domain>`} {
		x, err := DomainXML(guestdef.Definition{Name: "x", Memory: 1 << 30, RawXML: raw}, "qemu", "")
		if err != nil {
			t.Fatal(err)
		}
		var back libvirtxml.Domain
		if err := back.Unmarshal(x); err != nil {
			t.Fatal(err)
		}
		c := back.QEMUCapabilities
		if c == nil || len(c.Add) != 0 || len(c.Del) != 1 || c.Del[0].Name != "cpu-unavailable-features" {
			t.Errorf("raw XML %q: qemu:capabilities %+v, want only cpu-unavailable-features deleted:\n%s", raw, c, x)
		}
	}
}

func FuzzDomainXML(f *testing.F) {
	f.Add(`<domain type='kvm'><name>a</name><memory>1024</memory><devices><disk type='file'/></devices></domain>`)
	f.Add(`<domain><os><type>hvm</type><kernel>/k</kernel></os></domain>`)
	f.Add(`<domain`)
	f.Add(``)
	f.Fuzz(func(t *testing.T, raw string) {
		def := guestdef.Definition{Name: "g", Memory: 64 << 20, RawXML: raw, SerialLog: "/tmp/s"}
		out, err := DomainXML(def, "qemu", "")
		if err != nil {
			return
		}
		var back libvirtxml.Domain
		if err := back.Unmarshal(out); err != nil {
			t.Fatalf("accepted XML does not parse back: %v\n%s", err, out)
		}
		if back.Name != "g" || back.Type != "qemu" {
			t.Fatalf("name %q type %q, want g and qemu", back.Name, back.Type)
		}
	})
}

func TestDisksUncached(t *testing.T) {
	disk := func(attrs, extra string) string {
		return `<disk type="file" device="disk"><driver name="qemu" type="raw"` + attrs + `/><source file="/d"/><target dev="vda"/>` + extra + `</disk>`
	}
	for _, tc := range []struct {
		name  string
		disks string
		want  bool
	}{
		{"no disks", ``, true},
		{"cache none", disk(` cache="none"`, ``), true},
		{"directsync", disk(` cache="directsync"`, ``), true},
		{"default cache", disk(``, ``), false},
		{"writeback", disk(` cache="writeback"`, ``), false},
		{"writeback but read-only", disk(` cache="writeback"`, `<readonly/>`), true},
		{"one of two cached", disk(` cache="none"`, ``) + disk(` cache="unsafe"`, ``), false},
		{"empty cdrom", `<disk type="file" device="cdrom"><target dev="hdc"/></disk>`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DisksUncached(`<domain type="qemu"><name>x</name><devices>` + tc.disks + `</devices></domain>`)
			if err != nil || got != tc.want {
				t.Errorf("DisksUncached = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	if _, err := DisksUncached("<domain"); err == nil {
		t.Error("DisksUncached of broken XML: no error")
	}
}
