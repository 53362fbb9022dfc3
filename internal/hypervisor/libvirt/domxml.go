package libvirt

import (
	"crypto/sha1"
	"errors"
	"fmt"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
)

// uuidNamespace seeds the name-derived UUIDs of guests Haven defines, so the
// same guest has the same libvirt UUID on every host (libvirt refuses to
// redefine a name with another UUID, and migration keeps the UUID).
const uuidNamespace = "haven-ha guest "

// GuestUUID returns the libvirt UUID Haven gives a guest named name when its
// definition carries none: a name-based (version 5 style) UUID.
func GuestUUID(name string) string {
	sum := sha1.Sum([]byte(uuidNamespace + name))
	b := sum[:16]
	b[6] = (b[6] & 0x0f) | 0x50 // version 5
	b[8] = (b[8] & 0x3f) | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// DomainXML turns def into a libvirt domain XML document. domainType is the
// libvirt domain type to run under ("kvm" or "qemu"); uuid, when not empty,
// overrides the UUID (used to keep the UUID of an existing definition).
//
// When def.RawXML is set it is the base: its devices and tuning are kept, and
// def's name, size, boot, disks, NICs and serial log are applied on top when
// set. The domain type is always domainType, because a "kvm" domain cannot
// start on a host without working KVM.
func DomainXML(def guestdef.Definition, domainType, uuid string) (string, error) {
	if def.Name == "" {
		return "", errors.New("build domain XML: the guest definition has no name")
	}
	if domainType == "" {
		domainType = "qemu"
	}
	dom := &libvirtxml.Domain{}
	if strings.TrimSpace(def.RawXML) != "" {
		if err := dom.Unmarshal(def.RawXML); err != nil {
			return "", fmt.Errorf("build domain XML for guest %q: parse its raw libvirt XML: %w", def.Name, err)
		}
	}
	// Raw XML is a base for tuning, never a way around Haven's checks:
	// no emulator binary, security label or command line of its own, and
	// no device that opens host files or hardware (disks and the serial
	// log come from def, checked against the storage pools).
	dom.SecLabel = nil
	dom.QEMUCommandline, dom.QEMUCapabilities, dom.QEMUOverride = nil, nil, nil
	dom.QEMUCapabilities = quickCPUCheck()
	dom.BHyveCommandline, dom.XenCommandline, dom.LXCNamespace = nil, nil, nil
	dom.OS = stripOSFiles(dom.OS)
	if dv := dom.Devices; dv != nil {
		dv.Emulator = ""
		dv.Disks, dv.Filesystems, dv.Hostdevs, dv.RedirDevs, dv.Smartcards = nil, nil, nil, nil, nil
		dv.Serials, dv.Parallels, dv.Consoles, dv.Channels = nil, nil, nil, nil
		dv.TPMs, dv.RNGs, dv.Shmems, dv.NVRAM, dv.Leases, dv.PStore = nil, nil, nil, nil, nil, nil
	}
	dom.Type = domainType
	dom.Name = def.Name
	switch {
	case uuid != "":
		dom.UUID = uuid
	case dom.UUID == "":
		dom.UUID = GuestUUID(def.Name)
	}
	if def.Memory > 0 {
		kib := uint(def.Memory / 1024)
		dom.Memory = &libvirtxml.DomainMemory{Value: kib, Unit: "KiB"}
		dom.CurrentMemory = nil
	}
	if dom.Memory == nil {
		return "", fmt.Errorf("build domain XML for guest %q: no memory size: set the definition's memory", def.Name)
	}
	if def.VCPUs > 0 {
		dom.VCPU = &libvirtxml.DomainVCPU{Value: uint(def.VCPUs)}
	}
	if dom.VCPU == nil {
		dom.VCPU = &libvirtxml.DomainVCPU{Value: 1}
	}
	if domainType == "kvm" && def.CPUModel != "" {
		dom.CPU = domainCPU(def.CPUModel)
	}
	if dom.OS == nil {
		dom.OS = &libvirtxml.DomainOS{}
	}
	if dom.OS.Type == nil {
		dom.OS.Type = &libvirtxml.DomainOSType{Type: "hvm"}
	}
	if def.Boot.Kernel != "" {
		dom.OS.Kernel = def.Boot.Kernel
		dom.OS.Initrd = def.Boot.Initrd
		dom.OS.Cmdline = def.Boot.Cmdline
	}
	if dom.Features == nil {
		// ACPI, so that a graceful stop (the power button) reaches the guest.
		dom.Features = &libvirtxml.DomainFeatureList{
			ACPI: &libvirtxml.DomainFeature{},
			APIC: &libvirtxml.DomainFeatureAPIC{},
		}
	}
	if dom.OnPoweroff == "" {
		dom.OnPoweroff = "destroy"
	}
	if dom.OnReboot == "" {
		dom.OnReboot = "restart"
	}
	if dom.OnCrash == "" {
		dom.OnCrash = "destroy"
	}
	if dom.Devices == nil {
		dom.Devices = &libvirtxml.DomainDeviceList{}
	}
	dev := dom.Devices
	if len(def.Disks) > 0 {
		dev.Disks = nil
		for i, d := range def.Disks {
			disk, err := diskXML(i, d)
			if err != nil {
				return "", fmt.Errorf("build domain XML for guest %q: %w", def.Name, err)
			}
			dev.Disks = append(dev.Disks, disk)
		}
	}
	if len(def.NICs) > 0 {
		dev.Interfaces = nil
		for i, n := range def.NICs {
			nic, err := nicXML(n)
			if err != nil {
				return "", fmt.Errorf("build domain XML for guest %q: NIC %d: %w", def.Name, i, err)
			}
			dev.Interfaces = append(dev.Interfaces, nic)
		}
	}
	if def.SerialLog != "" || len(dev.Serials) == 0 {
		// The first serial port is a pty (haven guest console attaches to
		// it, OpenConsole), also written to the serial log when set.
		port := uint(0)
		ser := libvirtxml.DomainSerial{
			Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
			Target: &libvirtxml.DomainSerialTarget{Port: &port},
		}
		if def.SerialLog != "" {
			// append: a migration's destination opens the same path; it
			// must not cut what the source wrote.
			ser.Log = &libvirtxml.DomainChardevLog{File: def.SerialLog, Append: "on"}
		}
		dev.Serials = []libvirtxml.DomainSerial{ser}
		dev.Consoles = nil
	}
	if !def.NoPanicDevice && len(dev.Panics) == 0 {
		// pvpanic: a guest kernel panic is a crashed event at once
		// (on_crash destroy ends the domain).
		dev.Panics = []libvirtxml.DomainPanic{{Model: "isa"}}
	}
	if def.NeedsAgent() && !hasAgentChannel(dev) {
		// The guest agent's channel; libvirt picks the socket path in its
		// own per-domain directory and Haven reaches the agent through
		// libvirt (AgentCommand).
		dev.Channels = append(dev.Channels, libvirtxml.DomainChannel{
			Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind"}},
			Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: AgentChannel}},
		})
	}
	if def.Display == "vnc" && len(dev.Graphics) == 0 {
		// VGA, and VNC on a unix socket libvirt places (OpenDisplay reads
		// it from the live XML): no port open to the network.
		dev.Graphics = []libvirtxml.DomainGraphic{{VNC: &libvirtxml.DomainGraphicVNC{
			Listeners: []libvirtxml.DomainGraphicListener{{Socket: &libvirtxml.DomainGraphicListenerSocket{}}}}}}
		if len(dev.Videos) == 0 {
			dev.Videos = []libvirtxml.DomainVideo{{Model: libvirtxml.DomainVideoModel{Type: "vga"}}}
		}
	}
	if def.RawXML == "" {
		// A lean machine: no balloon, no USB; fewer devices boot faster.
		dev.MemBalloon = &libvirtxml.DomainMemBalloon{Model: "none"}
		zero := uint(0)
		dev.Controllers = append(dev.Controllers, libvirtxml.DomainController{Type: "usb", Index: &zero, Model: "none"})
	}
	out, err := dom.Marshal()
	if err != nil {
		return "", fmt.Errorf("build domain XML for guest %q: %w", def.Name, err)
	}
	return out, nil
}

// AgentChannel is the virtio-serial port name qemu-guest-agent listens on.
const AgentChannel = "org.qemu.guest_agent.0"

func hasAgentChannel(dev *libvirtxml.DomainDeviceList) bool {
	for _, c := range dev.Channels {
		if c.Target != nil && c.Target.VirtIO != nil && c.Target.VirtIO.Name == AgentChannel {
			return true
		}
	}
	return false
}

// stripOSFiles drops the files raw XML's <os> could name (kernel, initrd,
// device tree, loader, NVRAM): def's kernel and initrd are set afterwards.
func stripOSFiles(os *libvirtxml.DomainOS) *libvirtxml.DomainOS {
	if os == nil {
		return nil
	}
	os.Kernel, os.Initrd, os.DTB, os.Loader, os.NVRam = "", "", "", nil, nil
	return os
}

func diskXML(i int, d guestdef.Disk) (libvirtxml.DomainDisk, error) {
	if d.Path == "" {
		return libvirtxml.DomainDisk{}, fmt.Errorf("disk %d has no resolved path (pool %q volume %q): resolve storage before starting", i, d.Pool, d.Volume)
	}
	if i > 25 {
		return libvirtxml.DomainDisk{}, fmt.Errorf("disk %d: at most 26 disks are supported", i)
	}
	bus := d.Bus
	if bus == "" {
		bus = "virtio"
	}
	prefix := "vd"
	switch bus {
	case "virtio":
	case "ide":
		prefix = "hd"
	case "scsi", "sata":
		prefix = "sd"
	default:
		return libvirtxml.DomainDisk{}, fmt.Errorf("disk %d: unknown bus %q (want virtio, ide, scsi or sata)", i, bus)
	}
	format := d.Format
	if format == "" {
		format = "raw"
	}
	disk := libvirtxml.DomainDisk{
		Device: "disk",
		Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: format, Cache: "none"},
		Target: &libvirtxml.DomainDiskTarget{Dev: prefix + string(rune('a'+i)), Bus: bus},
	}
	if strings.HasPrefix(d.Path, "/dev/") {
		disk.Source = &libvirtxml.DomainDiskSource{Block: &libvirtxml.DomainDiskSourceBlock{Dev: d.Path}}
	} else {
		disk.Source = &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: d.Path}}
	}
	if d.ReadOnly {
		disk.ReadOnly = &libvirtxml.DomainDiskReadOnly{}
	}
	if d.NoImageLock {
		// libvirt has no switch for QEMU's image locking; a shareable disk
		// (share-rw=on) lets a second writer open the image, which is what
		// the test bed needs to see a double run on its disk.
		if format != "raw" {
			return libvirtxml.DomainDisk{}, fmt.Errorf("disk %d: no_image_lock needs a raw image under libvirt (it shares only raw images between writers), not %s", i, format)
		}
		disk.Shareable = &libvirtxml.DomainDiskShareable{}
	}
	return disk, nil
}

func nicXML(n guestdef.NIC) (libvirtxml.DomainInterface, error) {
	model := n.Model
	if model == "" {
		model = "virtio"
	}
	nic := libvirtxml.DomainInterface{Model: &libvirtxml.DomainInterfaceModel{Type: model}}
	switch {
	case n.Bridge != "":
		nic.Source = &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: n.Bridge}}
	case n.User:
		nic.Source = &libvirtxml.DomainInterfaceSource{User: &libvirtxml.DomainInterfaceSourceUser{}}
	default:
		return nic, errors.New("neither a bridge nor user networking is set")
	}
	if n.MAC != "" {
		nic.MAC = &libvirtxml.DomainInterfaceMAC{Address: n.MAC}
	}
	return nic, nil
}

// DisksUncached reports whether every writable disk of a domain XML bypasses
// the host's page cache (cache "none" or "directsync"): with shared storage,
// the condition libvirt sets for a live migration to be safe, besides its
// filesystem-type test. Disks without a source and read-only disks do not
// count.
func DisksUncached(domainXML string) (bool, error) {
	dom := &libvirtxml.Domain{}
	if err := dom.Unmarshal(domainXML); err != nil {
		return false, fmt.Errorf("read the domain's disks: %w", err)
	}
	if dom.Devices == nil {
		return true, nil
	}
	for _, disk := range dom.Devices.Disks {
		if disk.Source == nil || disk.ReadOnly != nil || (disk.Device != "" && disk.Device != "disk" && disk.Device != "lun") {
			continue
		}
		cache := ""
		if disk.Driver != nil {
			cache = disk.Driver.Cache
		}
		if cache != "none" && cache != "directsync" {
			return false, nil
		}
	}
	return true, nil
}

// quickCPUCheck is the <qemu:capabilities> of every domain Haven defines.
// At every start of an x86 guest (a restart after a crash, the target of a
// live migration) libvirt reads the guest's CPU from QEMU to verify and
// record it. With QEMU's "unavailable-features" capability, libvirt 9.0
// does it with one QMP qom-get per property of the CPU object, about 400
// round trips: 1.2-1.4 s of a 1.8 s domain start on a loaded 2-core
// machine, 75% of a crashed guest's restart. Without that capability it
// reads the same CPUID words in two (feature-words, filtered-features),
// its x86 path for QEMUs without it, which still verifies the model's
// required features. libvirt logs the domain as tainted
// ("custom-hypervisor-feature"), as for any capability changed in the
// domain XML.
func quickCPUCheck() *libvirtxml.DomainQEMUCapabilities {
	return &libvirtxml.DomainQEMUCapabilities{Del: []libvirtxml.DomainQEMUCapabilitiesEntry{{Name: "cpu-unavailable-features"}}}
}

// domainCPU is the <cpu> of a KVM domain for a CPU model (docs/manager.md,
// CPU model): host-passthrough for host; for an x86-64 level, qemu64 with
// the level's features required (fallback forbidden, so a host that cannot
// offer them refuses the start or the incoming migration); any other name
// as a libvirt model. Under TCG ("qemu" domains) the emulated default is
// kept.
func domainCPU(name string) *libvirtxml.DomainCPU {
	host, base, features := hypervisor.CPUModel(name)
	if host {
		return &libvirtxml.DomainCPU{Mode: "host-passthrough"}
	}
	c := &libvirtxml.DomainCPU{Mode: "custom", Match: "exact", Check: "partial", Model: &libvirtxml.DomainCPUModel{Value: base, Fallback: "forbid"}}
	for _, f := range features {
		c.Features = append(c.Features, libvirtxml.DomainCPUFeature{Policy: "require", Name: f})
	}
	return c
}
