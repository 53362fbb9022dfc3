// Package guestdef owns the hypervisor-level definition of a guest, stored
// once for the whole cluster: vCPUs, memory, disks, network, boot. Drivers turn
// it into a libvirt domain or a QEMU command line; importers read it from
// libvirt XML and Xen configs.
package guestdef

// Definition is what a hypervisor needs to run a guest.
type Definition struct {
	Name   string `json:"name"`
	VCPUs  int    `json:"vcpus"`
	Memory int64  `json:"memory"` // bytes
	Disks  []Disk `json:"disks,omitempty"`
	NICs   []NIC  `json:"nics,omitempty"`
	Boot   Boot   `json:"boot"`
	// SerialLog, when set, is a file the guest's first serial port is written
	// to (test guests print their counter there).
	SerialLog string `json:"serial_log,omitempty"`
	// GuestAgent says the guest runs qemu-guest-agent: Haven adds its
	// virtio-serial channel and pings it as a heartbeat, so that a hung
	// guest kernel counts as a crash (see Checks).
	GuestAgent bool `json:"guest_agent,omitempty"`
	// Health are the guest's health checks (see Check).
	Health []Check `json:"health,omitempty"`
	// Address is where tcp and http checks reach the guest; empty: the
	// first address the guest agent reports (guest-network-get-interfaces).
	Address string `json:"address,omitempty"`
	// Display "vnc" gives the guest a graphical display (VGA), served only
	// on a unix socket in its run directory and shown in the web UI through
	// the agent (noVNC over the API's WebSocket); "" (default) none.
	Display string `json:"display,omitempty"`
	// NoPanicDevice leaves out the pvpanic device Haven adds by default
	// (through which a guest kernel panic is seen as a crash at once).
	NoPanicDevice bool `json:"no_panic_device,omitempty"`
	// RawXML, when set, is a libvirt domain XML used as the base by the
	// libvirt driver; the fields above still name the guest and its size.
	RawXML string `json:"raw_xml,omitempty"`
	// CPUModel is the CPU model the guest runs with, set by the manager
	// for each start and migration (docs/manager.md, CPU model): a name
	// such as x86-64-v2 (QEMU -cpu under KVM), or "" / host: the host's
	// CPU under KVM. Under TCG the drivers keep their emulated default.
	CPUModel string `json:"cpu_model,omitempty"`
}

// Disk is one block device of a guest.
type Disk struct {
	// Pool and Volume name a volume on a storage pool; Path is the file or
	// block device itself. Exactly one of Path and Pool+Volume is set in a
	// stored definition; drivers receive a resolved Path.
	Pool     string `json:"pool,omitempty"`
	Volume   string `json:"volume,omitempty"`
	Path     string `json:"path,omitempty"`
	Format   string `json:"format,omitempty"` // raw | qcow2
	Bus      string `json:"bus,omitempty"`    // virtio (default) | ide | scsi
	ReadOnly bool   `json:"readonly,omitempty"`
	// NoImageLock turns off QEMU's image file locking for this disk. Only
	// for test beds that run several "hosts" on one machine, where the lock
	// would stop a second copy of a guest that separate machines would not
	// stop (the test's double-run checker must see it instead). Never set it
	// in production.
	NoImageLock bool `json:"no_image_lock,omitempty"`
}

// NIC is one network interface of a guest.
type NIC struct {
	Bridge string `json:"bridge,omitempty"` // host bridge to attach to
	User   bool   `json:"user,omitempty"`   // QEMU user networking (tests)
	MAC    string `json:"mac,omitempty"`
	Model  string `json:"model,omitempty"` // virtio (default)
}

// Boot says how the guest boots: from its first disk, or from a kernel.
type Boot struct {
	Kernel  string `json:"kernel,omitempty"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
}
