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

// MaxMemory bounds memory (16 TiB): far above any host, and far below where
// byte counts overflow once turned into KiB or MiB.
const MaxMemory = 16 << 40

// MaxDisks and MaxNICs bound a guest's devices: more than a PCI bus holds is
// a mistake or an attack on the store and the hypervisor.
const (
	MaxDisks = 64
	MaxNICs  = 32
)

// MaxCmdline bounds the kernel command line (Linux takes 2 KiB on x86 by
// default, 4 KiB at most without a rebuild).
const MaxCmdline = 4096

// MaxPath bounds every path a definition names (PATH_MAX).
const MaxPath = 4096

var ifaceRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$`)

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
	if d.Memory > MaxMemory {
		add("memory", "%s is above the maximum of 16 TiB", sizeString(d.Memory))
	}
	if len(d.Disks) > MaxDisks {
		add("disks", "%d disks: a guest has at most %d", len(d.Disks), MaxDisks)
		d.Disks = d.Disks[:MaxDisks]
	}
	if len(d.NICs) > MaxNICs {
		add("nics", "%d NICs: a guest has at most %d", len(d.NICs), MaxNICs)
		d.NICs = d.NICs[:MaxNICs]
	}
	path := func(field, p string) {
		switch {
		case p == "":
		case !strings.HasPrefix(p, "/"):
			add(field, "%q is not an absolute path", p)
		case len(p) > MaxPath:
			add(field, "a path of %d bytes is longer than %d", len(p), MaxPath)
		case strings.ContainsAny(p, "\x00\n\r"):
			add(field, "%q has a control character", p)
		}
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
		path(f+".path", disk.Path)
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
		if n.Bridge != "" && !ifaceRE.MatchString(n.Bridge) {
			add(f+".bridge", "%q is not a network interface name (1 to 15 letters, digits, '.', '_' or '-')", n.Bridge)
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
	}
	path("boot.kernel", d.Boot.Kernel)
	path("boot.initrd", d.Boot.Initrd)
	path("serial_log", d.SerialLog)
	if len(d.Boot.Cmdline) > MaxCmdline {
		add("boot.cmdline", "%d bytes: the kernel command line has at most %d", len(d.Boot.Cmdline), MaxCmdline)
	} else if strings.ContainsAny(d.Boot.Cmdline, "\x00\n\r") {
		add("boot.cmdline", "a control character (newline) in the kernel command line")
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
