package guestdef

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
)

// MinMemory is the smallest guest memory Haven accepts: 96 MiB (a Linux
// kernel does not boot in 64 MiB).
const MinMemory = 96 << 20

// MaxVCPUs bounds vcpus to catch typos (a memory size typed as a CPU count).
const MaxVCPUs = 1024

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// FieldError is one invalid field of a definition. Field is a path such as
// "memory" or "disks[1].format".
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// ValidName reports whether name is a valid guest name: 1 to 63 letters,
// digits, '.', '_' or '-', starting with a letter or digit. Names become file
// names and QEMU/libvirt identifiers, so nothing else is allowed.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Validate checks the definition and returns every problem at once, each a
// *FieldError naming the field (errors.As finds the first), wrapped in an
// error naming the guest.
func (d Definition) Validate() error {
	var errs []error
	add := func(field, format string, a ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)})
	}
	if !ValidName(d.Name) {
		add("name", "%q is not a valid guest name: use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", d.Name)
	}
	if d.VCPUs <= 0 || d.VCPUs > MaxVCPUs {
		add("vcpus", "%d is out of range: give 1 to %d", d.VCPUs, MaxVCPUs)
	}
	if d.Memory < MinMemory {
		add("memory", "%s is below the minimum of 96 MiB", sizeString(d.Memory))
	}
	for i, disk := range d.Disks {
		f := fmt.Sprintf("disks[%d]", i)
		switch {
		case disk.Path != "" && (disk.Pool != "" || disk.Volume != ""):
			add(f, "give either path or pool+volume, not both")
		case disk.Path == "" && disk.Pool == "" && disk.Volume == "":
			add(f, "no path and no pool+volume: say where the disk is")
		case disk.Path == "" && disk.Pool == "":
			add(f+".pool", "volume %q needs a pool", disk.Volume)
		case disk.Path == "" && disk.Volume == "":
			add(f+".volume", "pool %q needs a volume name", disk.Pool)
		}
		if disk.Path != "" && !strings.HasPrefix(disk.Path, "/") {
			add(f+".path", "%q is not an absolute path", disk.Path)
		}
		if disk.Volume != "" && (strings.Contains(disk.Volume, "/") || disk.Volume == "." || disk.Volume == "..") {
			add(f+".volume", "%q must be a plain name without '/'", disk.Volume)
		}
		switch disk.Format {
		case "", "raw", "qcow2":
		default:
			add(f+".format", "%q is not supported: use raw or qcow2", disk.Format)
		}
		switch disk.Bus {
		case "", "virtio", "ide", "scsi", "sata":
		default:
			add(f+".bus", "%q is not supported: use virtio, ide, sata or scsi", disk.Bus)
		}
	}
	for i, n := range d.NICs {
		f := fmt.Sprintf("nics[%d]", i)
		if n.Bridge != "" && n.User {
			add(f, "give either bridge or user networking, not both")
		}
		if n.Bridge == "" && !n.User {
			add(f+".bridge", "no bridge: name the host bridge to attach to (or user networking for tests)")
		}
		if n.MAC != "" {
			if hw, err := net.ParseMAC(n.MAC); err != nil || len(hw) != 6 {
				add(f+".mac", "%q is not a MAC address like 52:54:00:12:34:56", n.MAC)
			}
		}
		switch n.Model {
		case "", "virtio", "e1000", "rtl8139":
		default:
			add(f+".model", "%q is not supported: use virtio, e1000 or rtl8139", n.Model)
		}
	}
	if d.Boot.Kernel == "" {
		if d.Boot.Initrd != "" {
			add("boot.initrd", "an initrd needs a kernel")
		}
		if d.Boot.Cmdline != "" {
			add("boot.cmdline", "a kernel command line needs a kernel")
		}
		if len(d.Disks) == 0 && d.RawXML == "" {
			add("boot", "nothing to boot from: give a kernel or a disk")
		}
	} else if !strings.HasPrefix(d.Boot.Kernel, "/") {
		add("boot.kernel", "%q is not an absolute path", d.Boot.Kernel)
	}
	if d.Boot.Initrd != "" && !strings.HasPrefix(d.Boot.Initrd, "/") {
		add("boot.initrd", "%q is not an absolute path", d.Boot.Initrd)
	}
	d.validateHealth(add)
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("guest %q: %w", d.Name, errors.Join(errs...))
}

func sizeString(b int64) string {
	switch {
	case b%(1<<30) == 0 && b != 0:
		return fmt.Sprintf("%d GiB", b>>30)
	case b%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", b>>20)
	default:
		return fmt.Sprintf("%d bytes", b)
	}
}
