package guestdef

import (
	"errors"
	"fmt"
	"strings"

	"libvirt.org/go/libvirtxml"
)

// FromLibvirtXML imports a libvirt domain XML (as `virsh dumpxml` prints it):
// name, vCPUs, memory, disks (file, block device or pool volume), bridged or
// user network interfaces, direct kernel boot, and a file serial port. Parts
// Haven cannot express (network disks, libvirt networks without a bridge,
// USB disks) are refused with the element named. The result is validated. It
// does not set RawXML; a caller that wants the libvirt driver to keep devices
// Haven does not model sets def.RawXML = string(data) itself.
func FromLibvirtXML(data []byte) (Definition, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(string(data)); err != nil {
		return Definition{}, fmt.Errorf("import libvirt domain XML: not a valid domain: %w", err)
	}
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)})
	}
	def := Definition{Name: dom.Name}
	if dom.VCPU != nil {
		def.VCPUs = int(dom.VCPU.Value)
		if dom.VCPU.Current != 0 {
			def.VCPUs = int(dom.VCPU.Current)
		}
	} else {
		def.VCPUs = 1 // libvirt's default
	}
	switch {
	case dom.Memory != nil:
		m, err := libvirtSize(dom.Memory.Value, dom.Memory.Unit)
		if err != nil {
			bad("memory", "%v", err)
		}
		def.Memory = m
	case dom.CurrentMemory != nil:
		m, err := libvirtSize(dom.CurrentMemory.Value, dom.CurrentMemory.Unit)
		if err != nil {
			bad("currentMemory", "%v", err)
		}
		def.Memory = m
	default:
		bad("memory", "missing: give <memory unit='MiB'>...</memory>")
	}
	if dom.OS != nil {
		def.Boot = Boot{Kernel: dom.OS.Kernel, Initrd: dom.OS.Initrd, Cmdline: dom.OS.Cmdline}
	}
	if dom.Devices != nil {
		for i, d := range dom.Devices.Disks {
			field := fmt.Sprintf("devices/disk[%d]", i)
			if d.Device == "cdrom" || d.Device == "floppy" {
				if s := d.Source; s == nil || (s.File == nil || s.File.File == "") && (s.Block == nil || s.Block.Dev == "") && s.Volume == nil {
					continue // an empty drive
				}
			}
			disk, err := libvirtDisk(d)
			if err != nil {
				var fe *FieldError
				if errors.As(err, &fe) {
					bad(field+"/"+fe.Field, "%s", fe.Msg)
				} else {
					bad(field, "%v", err)
				}
				continue
			}
			def.Disks = append(def.Disks, disk)
		}
		for i, n := range dom.Devices.Interfaces {
			field := fmt.Sprintf("devices/interface[%d]", i)
			var nic NIC
			switch {
			case n.Source == nil:
				bad(field+"/source", "missing: give <source bridge='br0'/>")
				continue
			case n.Source.Bridge != nil:
				nic.Bridge = n.Source.Bridge.Bridge
			case n.Source.Network != nil && n.Source.Network.Bridge != "":
				nic.Bridge = n.Source.Network.Bridge
			case n.Source.Network != nil:
				bad(field+"/source", "libvirt network %q names no bridge: use <interface type='bridge'><source bridge='...'/>", n.Source.Network.Network)
				continue
			case n.Source.User != nil:
				nic.User = true
			default:
				bad(field, "only bridge and user interfaces can be imported")
				continue
			}
			if n.MAC != nil {
				nic.MAC = strings.ToLower(n.MAC.Address)
			}
			nic.Model = "virtio"
			if n.Model != nil && n.Model.Type != "" {
				nic.Model = n.Model.Type
			}
			def.NICs = append(def.NICs, nic)
		}
		for _, s := range dom.Devices.Serials {
			if s.Source != nil && s.Source.File != nil && def.SerialLog == "" {
				def.SerialLog = s.Source.File.Path
			}
		}
	}
	if len(errs) > 0 {
		return Definition{}, fmt.Errorf("import libvirt domain %q: %w", dom.Name, errors.Join(errs...))
	}
	if err := def.Validate(); err != nil {
		return Definition{}, fmt.Errorf("import libvirt domain: %w", err)
	}
	return def, nil
}

func libvirtDisk(d libvirtxml.DomainDisk) (Disk, error) {
	var disk Disk
	switch {
	case d.Source == nil:
		return disk, &FieldError{Field: "source", Msg: "missing: give <source file='...'/>"}
	case d.Source.File != nil:
		disk.Path = d.Source.File.File
	case d.Source.Block != nil:
		disk.Path = d.Source.Block.Dev
	case d.Source.Volume != nil:
		disk.Pool, disk.Volume = d.Source.Volume.Pool, d.Source.Volume.Volume
	case d.Source.Network != nil:
		return disk, &FieldError{Field: "source", Msg: fmt.Sprintf("network disks (%s) are not supported: put the disk on a storage pool every host mounts", d.Source.Network.Protocol)}
	default:
		return disk, &FieldError{Field: "source", Msg: "only file, block and volume disks can be imported"}
	}
	disk.Format = "raw"
	if d.Driver != nil && d.Driver.Type != "" {
		disk.Format = d.Driver.Type
	}
	disk.Bus = "virtio"
	if d.Target != nil {
		switch d.Target.Bus {
		case "", "virtio", "xen":
		case "ide", "scsi", "sata":
			disk.Bus = d.Target.Bus
		default:
			return disk, &FieldError{Field: "target", Msg: fmt.Sprintf("bus %q is not supported: use virtio, ide, sata or scsi", d.Target.Bus)}
		}
	}
	disk.ReadOnly = d.ReadOnly != nil || d.Device == "cdrom"
	return disk, nil
}

// libvirtSize converts a libvirt scaled integer (default unit KiB) to bytes.
func libvirtSize(v uint, unit string) (int64, error) {
	mult := map[string]int64{
		"": 1 << 10, "b": 1, "bytes": 1,
		"KB": 1000, "k": 1 << 10, "KiB": 1 << 10,
		"MB": 1000 * 1000, "M": 1 << 20, "MiB": 1 << 20,
		"GB": 1000 * 1000 * 1000, "G": 1 << 30, "GiB": 1 << 30,
		"TB": 1000 * 1000 * 1000 * 1000, "T": 1 << 40, "TiB": 1 << 40,
	}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("unit %q is not a libvirt size unit (KiB, MiB, GiB, ...)", unit)
	}
	if int64(v) < 0 || int64(v) > (1<<62)/mult {
		return 0, fmt.Errorf("%d %s is too large", v, unit)
	}
	return int64(v) * mult, nil
}
