package guestdef

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func validDef() Definition {
	return Definition{
		Name: "web1", VCPUs: 2, Memory: 512 << 20,
		Disks: []Disk{{Path: "/srv/vm/web1.qcow2", Format: "qcow2", Bus: "virtio"}},
		NICs:  []NIC{{Bridge: "br0", MAC: "52:54:00:12:34:56", Model: "virtio"}},
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Definition)
		field  string // "" = valid
	}{
		{"valid", func(d *Definition) {}, ""},
		{"pool disk", func(d *Definition) { d.Disks[0] = Disk{Pool: "san", Volume: "web1.qcow2", Format: "qcow2"} }, ""},
		{"kernel boot without disk", func(d *Definition) { d.Disks = nil; d.Boot = Boot{Kernel: "/k", Initrd: "/i", Cmdline: "quiet"} }, ""},
		{"empty name", func(d *Definition) { d.Name = "" }, "name"},
		{"name with slash", func(d *Definition) { d.Name = "a/b" }, "name"},
		{"name with space", func(d *Definition) { d.Name = "a b" }, "name"},
		{"name too long", func(d *Definition) { d.Name = strings.Repeat("a", 64) }, "name"},
		{"name starting with dash", func(d *Definition) { d.Name = "-a" }, "name"},
		{"zero vcpus", func(d *Definition) { d.VCPUs = 0 }, "vcpus"},
		{"negative vcpus", func(d *Definition) { d.VCPUs = -1 }, "vcpus"},
		{"64 MiB", func(d *Definition) { d.Memory = 64 << 20 }, "memory"},
		{"95 MiB", func(d *Definition) { d.Memory = 95 << 20 }, "memory"},
		{"96 MiB ok", func(d *Definition) { d.Memory = 96 << 20 }, ""},
		{"disk path and pool", func(d *Definition) { d.Disks[0].Pool = "san"; d.Disks[0].Volume = "v" }, "disks[0]"},
		{"disk nothing", func(d *Definition) { d.Disks[0] = Disk{} }, "disks[0]"},
		{"volume without pool", func(d *Definition) { d.Disks[0] = Disk{Volume: "v"} }, "disks[0].pool"},
		{"pool without volume", func(d *Definition) { d.Disks[0] = Disk{Pool: "p"} }, "disks[0].volume"},
		{"volume with slash", func(d *Definition) { d.Disks[0] = Disk{Pool: "p", Volume: "../x"} }, "disks[0].volume"},
		{"relative path", func(d *Definition) { d.Disks[0].Path = "web1.img" }, "disks[0].path"},
		{"vmdk", func(d *Definition) { d.Disks[0].Format = "vmdk" }, "disks[0].format"},
		{"usb bus", func(d *Definition) { d.Disks[0].Bus = "usb" }, "disks[0].bus"},
		{"nic bad mac", func(d *Definition) { d.NICs[0].MAC = "zz" }, "nics[0].mac"},
		{"nic no bridge", func(d *Definition) { d.NICs[0].Bridge = "" }, "nics[0].bridge"},
		{"nic both", func(d *Definition) { d.NICs[0].User = true }, "nics[0]"},
		{"nic model", func(d *Definition) { d.NICs[0].Model = "ne2k" }, "nics[0].model"},
		{"nothing to boot", func(d *Definition) { d.Disks = nil }, "boot"},
		{"initrd without kernel", func(d *Definition) { d.Boot.Initrd = "/i" }, "boot.initrd"},
		{"relative kernel", func(d *Definition) { d.Boot.Kernel = "vmlinuz" }, "boot.kernel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := validDef()
			tt.mutate(&d)
			err := d.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("Validate = %v, want a FieldError on %q", err, tt.field)
			}
			if !strings.Contains(err.Error(), `guest "`+d.Name+`"`) {
				t.Errorf("error %q does not name the guest", err)
			}
		})
	}
}

func TestValidateReportsEveryField(t *testing.T) {
	err := Definition{Name: "x y", VCPUs: 0, Memory: 1}.Validate()
	for _, f := range []string{"name:", "vcpus:", "memory:", "boot:"} {
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("error %v does not mention %s", err, f)
		}
	}
}

// The same guest written three ways: Haven's own JSON, libvirt XML, Xen xl.
const havenJSON = `{
  "name": "web1", "vcpus": 2, "memory": 536870912,
  "disks": [
    {"path": "/srv/vm/web1.qcow2", "format": "qcow2", "bus": "virtio"},
    {"path": "/dev/vg0/web1-data", "format": "raw", "bus": "virtio"},
    {"path": "/srv/iso/tools.iso", "format": "raw", "bus": "ide", "readonly": true}
  ],
  "nics": [
    {"bridge": "br0", "mac": "00:16:3e:12:34:56", "model": "virtio"},
    {"bridge": "br1", "model": "e1000"}
  ],
  "boot": {"kernel": "/boot/vmlinuz-web", "initrd": "/boot/initrd-web",
           "cmdline": "root=/dev/vda1 ro console=ttyS0"}
}`

const libvirtXML = `<domain type='kvm'>
  <name>web1</name>
  <memory unit='KiB'>524288</memory>
  <currentMemory unit='KiB'>524288</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>/boot/vmlinuz-web</kernel>
    <initrd>/boot/initrd-web</initrd>
    <cmdline>root=/dev/vda1 ro console=ttyS0</cmdline>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/srv/vm/web1.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/web1-data'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/srv/iso/tools.iso'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='hdd' bus='ide'/>
    </disk>
    <interface type='bridge'>
      <mac address='00:16:3E:12:34:56'/>
      <source bridge='br0'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <source bridge='br1'/>
      <model type='e1000'/>
    </interface>
  </devices>
</domain>`

const xenConfig = `# Xen xl config for web1
name = "web1"
builder = 'generic'   # ignored
memory = 512
vcpus = 2
kernel = "/boot/vmlinuz-web"
ramdisk = "/boot/initrd-web"
root = "/dev/vda1 ro"
extra = "console=ttyS0"
disk = [ 'tap:qcow2:/srv/vm/web1.qcow2,xvda,w',
         'phy:/dev/vg0/web1-data,xvdb,w',
         'file:/srv/iso/tools.iso,hdc:cdrom,r',
       ]
vif = [ 'mac=00:16:3e:12:34:56,bridge=br0',
        "bridge=br1,model=e1000", ]
on_crash = 'restart'
`

func TestImportsMatchHavenDefinition(t *testing.T) {
	var want Definition
	if err := json.Unmarshal([]byte(havenJSON), &want); err != nil {
		t.Fatal(err)
	}
	if err := want.Validate(); err != nil {
		t.Fatal(err)
	}
	fromXML, err := FromLibvirtXML([]byte(libvirtXML))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromXML, want) {
		t.Errorf("libvirt import:\n got %+v\nwant %+v", fromXML, want)
	}
	fromXen, err := FromXenConfig([]byte(xenConfig))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromXen, want) {
		t.Errorf("Xen import:\n got %+v\nwant %+v", fromXen, want)
	}
}

func TestXenImportForms(t *testing.T) {
	tests := []struct {
		name string
		cfg  string
		want Definition
	}{
		{"xl keyed disk and pygrub",
			"name='db'\nmemory=1024\nbootloader='pygrub'\ndisk=['format=qcow2, vdev=xvda, access=rw, target=/srv/db,1.qcow2']\n",
			Definition{Name: "db", VCPUs: 1, Memory: 1 << 30, Disks: []Disk{{Path: "/srv/db,1.qcow2", Format: "qcow2", Bus: "virtio"}}}},
		{"semicolons, single disk string, cmdline",
			"name = \"k\"; memory = 128; vcpus = 1; kernel = '/k'; cmdline = 'quiet'; disk = 'phy:/dev/sdb,xvda,r'",
			Definition{Name: "k", VCPUs: 1, Memory: 128 << 20, Boot: Boot{Kernel: "/k", Cmdline: "quiet"},
				Disks: []Disk{{Path: "/dev/sdb", Format: "raw", Bus: "virtio", ReadOnly: true}}}},
		{"line continuation and hex",
			"name = 'c'\nmemory = \\\n 0x100\ndisk=['/srv/c.img,xvda,w']",
			Definition{Name: "c", VCPUs: 1, Memory: 256 << 20, Disks: []Disk{{Path: "/srv/c.img", Format: "raw", Bus: "virtio"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromXenConfig([]byte(tt.cfg))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestImportRefusesNamingTheField(t *testing.T) {
	tests := []struct {
		name string
		xen  bool
		in   string
		want string // substring: the field named
	}{
		{"xen syntax", true, "name = 'a'\nmemory = = 3\n", "line 2"},
		{"xen unterminated list", true, "name='a'\nmemory=512\ndisk=['/x,xvda,w'", "unterminated list"},
		{"xen unterminated string", true, "name='a\n", "unterminated string"},
		{"xen missing memory", true, "name='a'\ndisk=['/x,xvda,w']", "memory: missing"},
		{"xen memory string", true, "name='a'\nmemory='lots'\ndisk=['/x,xvda,w']", "memory:"},
		{"xen small memory", true, "name='a'\nmemory=64\ndisk=['/x,xvda,w']", "memory:"},
		{"xen bad disk", true, "name='a'\nmemory=512\ndisk=['/x']", "disk[0]"},
		{"xen vhd disk", true, "name='a'\nmemory=512\ndisk=['vhd:/x.vhd,xvda,w']", "disk[0]"},
		{"xen vif without bridge", true, "name='a'\nmemory=512\ndisk=['/x,xvda,w']\nvif=['mac=00:16:3e:00:00:01']", "vif[0]"},
		{"xen bad name", true, "name='a b'\nmemory=512\ndisk=['/x,xvda,w']", "name:"},
		{"xml garbage", false, "<domain><name>x</name", "not a valid domain"},
		{"xml no memory", false, "<domain><name>x</name><devices><disk type='file'><source file='/x'/></disk></devices></domain>", "memory: missing"},
		{"xml bad unit", false, "<domain><name>x</name><memory unit='parsecs'>1</memory></domain>", "memory:"},
		{"xml network disk", false, "<domain><name>x</name><memory unit='MiB'>512</memory><devices><disk type='network'><source protocol='rbd' name='p/i'/></disk></devices></domain>", "devices/disk[0]/source"},
		{"xml libvirt network", false, "<domain><name>x</name><memory unit='MiB'>512</memory><devices><disk type='file'><source file='/x'/></disk><interface type='network'><source network='default'/></interface></devices></domain>", "devices/interface[0]/source"},
		{"xml usb disk", false, "<domain><name>x</name><memory unit='MiB'>512</memory><devices><disk type='file'><source file='/x'/><target dev='sda' bus='usb'/></disk></devices></domain>", "devices/disk[0]/target"},
		{"xml zero vcpus", false, "<domain><name>x</name><memory unit='MiB'>512</memory><vcpu>0</vcpu><devices><disk type='file'><source file='/x'/></disk></devices></domain>", "vcpus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.xen {
				_, err = FromXenConfig([]byte(tt.in))
			} else {
				_, err = FromLibvirtXML([]byte(tt.in))
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestLibvirtPoolVolumeAndUserNet(t *testing.T) {
	x := `<domain type='qemu'><name>t1</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>
<devices><disk type='volume' device='disk'><driver name='qemu' type='qcow2'/><source pool='san' volume='t1.qcow2'/><target dev='vda' bus='virtio'/></disk>
<interface type='user'><mac address='52:54:00:00:00:01'/></interface>
<serial type='file'><source path='/var/log/t1.log'/></serial></devices></domain>`
	got, err := FromLibvirtXML([]byte(x))
	if err != nil {
		t.Fatal(err)
	}
	want := Definition{Name: "t1", VCPUs: 1, Memory: 128 << 20,
		Disks:     []Disk{{Pool: "san", Volume: "t1.qcow2", Format: "qcow2", Bus: "virtio"}},
		NICs:      []NIC{{User: true, MAC: "52:54:00:00:00:01", Model: "virtio"}},
		SerialLog: "/var/log/t1.log"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func FuzzFromXenConfig(f *testing.F) {
	f.Add(xenConfig)
	f.Add("name='a'\nmemory=512\ndisk=['format=raw,vdev=xvda,target=/a']\n")
	f.Add("a=[\n'x',\n]\n;b=-1")
	f.Add("name = \"q\\\"x\"\nmemory=0x200")
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := parseXenConfig(s)
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
		def, err := FromXenConfig([]byte(s))
		if err == nil {
			if verr := def.Validate(); verr != nil {
				t.Fatalf("import accepted an invalid definition: %v", verr)
			}
		}
	})
}

func FuzzFromLibvirtXML(f *testing.F) {
	f.Add(libvirtXML)
	f.Fuzz(func(t *testing.T, s string) {
		def, err := FromLibvirtXML([]byte(s))
		if err == nil {
			if verr := def.Validate(); verr != nil {
				t.Fatalf("import accepted an invalid definition: %v", verr)
			}
		}
	})
}
