// Package qemu owns the QEMU driver: it runs qemu-system-x86_64 itself, one
// process per guest, each with a QMP unix socket, pid file and saved
// definition in a directory of its own under the driver's run dir. Guests
// outlive the agent (QEMU runs in its own session) and a new driver adopts
// them from the run dir. Because the driver watches each QEMU process
// directly (wait for its children, pidfd for adopted ones), a crash is
// reported at once.
//
// Run dir layout, one directory per guest:
//
//	RUNDIR/NAME/qmp.sock   QMP monitor
//	RUNDIR/NAME/qemu.pid   written by QEMU (-pidfile)
//	RUNDIR/NAME/def.json   the definition it was started with
//	RUNDIR/NAME/incoming   present while waiting for an incoming migration
//	RUNDIR/NAME/qemu.log   QEMU's stdout and stderr
//	RUNDIR/NAME/qga.sock   the guest agent channel (guests that need it)
//	RUNDIR/NAME/console.sock  the first serial port (OpenConsole)
//	RUNDIR/NAME/vnc.sock   the VNC server of a guest with display vnc (OpenDisplay)
package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/hypervisor/guestagent"
)

// Config configures a QEMU driver for one host.
type Config struct {
	// RunDir holds one directory per guest (required). Two drivers must never
	// share one; the driver locks it.
	RunDir string
	// Node is this host's name, reported in migration targets.
	Node string
	// Binary is the QEMU system emulator; default qemu-system-x86_64.
	Binary string
	// Accel forces an accelerator; empty means detect (KVM only when a test
	// KVM guest really runs, else TCG).
	Accel hypervisor.Accel
	// Machine is the QEMU machine type; default "pc". Both ends of a
	// migration must use the same one.
	Machine string
	// MigrationAddr is the address incoming migrations listen on: this
	// host's address on the migration network; default 127.0.0.1.
	MigrationAddr string
	// MigrationBandwidth caps outgoing live migrations, in bytes per
	// second; 0 keeps QEMU's default (128 MiB/s in QEMU 7.2).
	MigrationBandwidth int64
	// DiskCache is QEMU's cache= for disks; empty keeps QEMU's default
	// (writeback). Use "none" on shared storage that supports O_DIRECT.
	DiskCache string
	// User is the unprivileged user QEMU drops to (-runas) once it has
	// opened the guest's files; default DefaultUser when the agent runs as
	// root. "-" keeps QEMU as the agent's user (tests that are not root).
	// QEMU also runs under a seccomp sandbox (-sandbox on): no obsolete
	// system calls, no resource control, and no spawning (unless the guest
	// has a bridge NIC, whose setup runs qemu-bridge-helper).
	User string
	// TLSCA, TLSCert and TLSKey, when all set, are the cluster CA and this
	// host's certificate and key (PEM files): live migrations then run
	// over TLS, each end checking the other's certificate against the CA
	// and the source checking that the target's names the target node.
	TLSCA, TLSCert, TLSKey string
	// TLSCRL, when set, is the agent's list of revoked host certificates
	// signed by the cluster CA (PEM): QEMUs started after it changed, and
	// every outgoing migration, check the peer's certificate against it,
	// so that a removed host's certificate opens no migration port.
	TLSCRL string
	// AdoptTimeout bounds connecting to each running guest when the driver
	// opens; default 5 s.
	AdoptTimeout time.Duration
	// Scope says where QEMU runs: in a systemd scope of its own when systemd
	// runs the host (the default), or not (scope.go).
	Scope ScopeMode
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

// DefaultUser is the user QEMU runs as when the agent is root.
const DefaultUser = "haven-qemu"

// Driver runs guests as QEMU processes. It implements hypervisor.Driver.
type Driver struct {
	cfg   Config
	accel hypervisor.AccelInfo
	log   *slog.Logger
	lock  *os.File // flock on RunDir/.lock
	// uid and gid are cfg.User's (-1 when QEMU keeps the agent's user).
	uid, gid int
	// tlsDir holds QEMU's migration TLS credentials ("" without TLS),
	// brought up to date with cfg's files before every QEMU start
	// (tlsreload.go); tlsMu serializes that.
	tlsDir string
	tlsMu  sync.Mutex

	events *eventQueue

	mu     sync.Mutex // guards guests, closed
	guests map[string]*guest
	closed bool
}

var (
	_ hypervisor.Driver     = (*Driver)(nil)
	_ hypervisor.GuestAgent = (*Driver)(nil)
	_ hypervisor.Console    = (*Driver)(nil)
	_ hypervisor.Display    = (*Driver)(nil)
)

// guest is one QEMU process and what the driver knows of it. Fields after mu
// are guarded by Driver.mu.
type guest struct {
	name   string
	dir    string
	def    guestdef.Definition
	pid    int
	child  *exec.Cmd // nil when adopted
	exited chan struct{}
	// agentMu holds one guest agent command at a time (its channel takes
	// one client).
	agentMu chan struct{}

	mon *monitor

	state  hypervisor.State
	reason string
	since  time.Time

	stopping       bool   // Haven asked it to stop or die: an exit is not a crash
	shutdownReason string // from the SHUTDOWN event
	shutdownGuest  bool   // the guest shut itself down
	migrating      bool
	migratedAway   bool
	panicked       bool // GUEST_PANICKED: the guest kernel panicked
	incoming       bool
	starting       bool // launch has not returned: its error reports an exit
	gone           bool // the process exited
}

// New opens a driver on cfg.RunDir, locks it, and adopts every guest whose
// QEMU still runs there (stale directories are removed).
func New(ctx context.Context, cfg Config) (*Driver, error) {
	if cfg.RunDir == "" {
		return nil, errors.New("qemu driver: no run dir configured")
	}
	if cfg.Binary == "" {
		cfg.Binary = "qemu-system-x86_64"
	}
	if cfg.Machine == "" {
		cfg.Machine = "pc"
	}
	if cfg.MigrationAddr == "" {
		cfg.MigrationAddr = "127.0.0.1"
	}
	if cfg.AdoptTimeout <= 0 {
		cfg.AdoptTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.User == "" && os.Geteuid() == 0 {
		cfg.User = DefaultUser
	}
	if cfg.User == "-" {
		cfg.User = ""
	}
	uid, gid := -1, -1
	if cfg.User != "" {
		u, err := user.Lookup(cfg.User)
		if err != nil {
			return nil, fmt.Errorf("qemu driver: QEMU runs as the unprivileged user %q, which does not exist: create it (as scripts/deps.sh does: useradd --system --no-create-home --shell /usr/sbin/nologin --gid kvm %s): %w", cfg.User, cfg.User, err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		if uid == 0 {
			return nil, fmt.Errorf("qemu driver: user %q is root: give QEMU an unprivileged user", cfg.User)
		}
	}
	if _, err := exec.LookPath(cfg.Binary); err != nil {
		return nil, fmt.Errorf("qemu driver: %s not found (install qemu-system-x86): %w: %w", cfg.Binary, err, hypervisor.ErrUnavailable)
	}
	if err := os.MkdirAll(cfg.RunDir, 0o750); err != nil {
		return nil, fmt.Errorf("qemu driver: create run dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cfg.RunDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("qemu driver: lock run dir: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("qemu driver: run dir %s is in use by another driver (another haven agent?): %w", cfg.RunDir, err)
	}
	d := &Driver{
		cfg:    cfg,
		uid:    uid,
		gid:    gid,
		log:    cfg.Logger.With("driver", "qemu"),
		lock:   lock,
		events: newEventQueue(),
		guests: map[string]*guest{},
	}
	if cfg.Accel != "" {
		d.accel = hypervisor.AccelInfo{Accel: cfg.Accel, Reason: "configured"}
	} else {
		d.accel = hypervisor.DetectAccelCached(ctx, cfg.Binary)
	}
	if cfg.TLSCA != "" && cfg.TLSCert != "" && cfg.TLSKey != "" {
		dir, err := writeTLSDir(cfg.RunDir, cfg.TLSCA, cfg.TLSCert, cfg.TLSKey, cfg.TLSCRL)
		if err != nil {
			lock.Close()
			return nil, fmt.Errorf("qemu driver: migration TLS: %w", err)
		}
		d.tlsDir = dir
	}
	d.log.Info("qemu driver ready", "migration_tls", d.tlsDir != "", "accel", d.accel.Accel, "accel_reason", d.accel.Reason, "run_dir", cfg.RunDir)
	d.adoptAll(ctx)
	return d, nil
}

// Accel reports the accelerator guests use and why.
func (d *Driver) Accel() hypervisor.AccelInfo { return d.accel }

// Name implements hypervisor.Driver.
func (d *Driver) Name() string { return "qemu" }

// Events implements hypervisor.Driver.
func (d *Driver) Events() <-chan hypervisor.Event { return d.events.out }

// Close implements hypervisor.Driver: it drops the monitor connections and
// stops watching; the guests keep running and a new driver adopts them.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	var mons []*monitor
	for _, g := range d.guests {
		if g.mon != nil {
			mons = append(mons, g.mon)
		}
	}
	d.mu.Unlock()
	for _, m := range mons {
		m.close()
	}
	d.events.close()
	unix.Flock(int(d.lock.Fd()), unix.LOCK_UN)
	return d.lock.Close()
}

// setState records a state change; callers hold d.mu.
func (d *Driver) setState(g *guest, s hypervisor.State, reason string) {
	if g.state != s {
		g.since = d.cfg.Now()
	}
	g.state, g.reason = s, reason
}

func (d *Driver) guestDir(name string) string { return filepath.Join(d.cfg.RunDir, name) }

// Start implements hypervisor.Driver.
func (d *Driver) Start(ctx context.Context, def guestdef.Definition) error {
	if err := d.launch(ctx, def, "", false); err != nil {
		return fmt.Errorf("start guest %q: %w", def.Name, err)
	}
	return nil
}

// launch starts a QEMU process for def (incoming: the -incoming URI, or "").
// launch starts def's QEMU; with incoming, it waits for a live migration
// there, over TLS when tls is set.
func (d *Driver) launch(ctx context.Context, def guestdef.Definition, incoming string, tls bool) error {
	if err := def.Validate(); err != nil {
		return err
	}
	for i, disk := range def.Disks {
		if disk.Path == "" {
			return fmt.Errorf("disk %d is on pool %q: resolve it to a path first (storage.ResolveDisk)", i, disk.Pool)
		}
	}
	if err := d.handOver(def); err != nil {
		return err
	}
	dir := d.guestDir(def.Name)
	sock := filepath.Join(dir, "qmp.sock")
	if len(filepath.Join(dir, "console.sock")) >= 108 {
		return fmt.Errorf("QMP socket path %s is too long for a unix socket: use a shorter run dir", sock)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return fmt.Errorf("driver closed: %w", hypervisor.ErrUnavailable)
	}
	if g, ok := d.guests[def.Name]; ok && !g.gone {
		d.mu.Unlock()
		return hypervisor.ErrAlreadyRunning
	}
	// Reserve the name while starting.
	g := &guest{name: def.Name, dir: dir, def: def, exited: make(chan struct{}), agentMu: make(chan struct{}, 1), incoming: incoming != "", starting: true}
	d.setState(g, hypervisor.Shutoff, "starting")
	d.guests[def.Name] = g
	d.mu.Unlock()

	fail := func(err error) error {
		d.mu.Lock()
		if d.guests[def.Name] == g {
			delete(d.guests, def.Name)
		}
		d.mu.Unlock()
		return err
	}
	// A QEMU of this name left by a previous driver that we did not adopt?
	if pid := readPID(dir); pid > 0 && processAlive(pid) && isOurQEMU(pid, sock) {
		return fail(fmt.Errorf("a QEMU (pid %d) already runs it from %s: %w", pid, dir, hypervisor.ErrAlreadyRunning))
	}
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fail(err)
	}
	b, _ := json.MarshalIndent(def, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "def.json"), b, 0o640); err != nil {
		return fail(err)
	}
	if incoming != "" {
		if err := os.WriteFile(filepath.Join(dir, "incoming"), []byte(incoming+"\n"), 0o640); err != nil {
			return fail(err)
		}
	}
	if d.tlsDir != "" {
		if err := d.refreshTLS(); err != nil {
			// The guest runs all the same; a TLS migration of it may fail.
			d.log.Warn("migration TLS credentials not brought up to date: the guest loads the ones read before", "guest", def.Name, "op", "tls", "err", err)
		}
	}
	args := d.args(def, dir)
	if incoming != "" {
		if tls {
			// TLS is set before listening: migrate-incoming below.
			args = append(args, "-incoming", "defer")
		} else {
			args = append(args, "-incoming", incoming)
		}
	}
	logf, err := os.OpenFile(filepath.Join(dir, "qemu.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fail(err)
	}
	prog, args, err := d.scopeCommand(def.Name, d.cfg.Binary, args)
	if err != nil {
		logf.Close()
		return fail(err)
	}
	prog, args = atNormalPriority(prog, args)
	cmd := exec.Command(prog, args...)
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: QEMU outlives the agent and its signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fail(fmt.Errorf("run %s: %w", d.cfg.Binary, err))
	}
	logf.Close()
	d.log.Info("qemu started", "guest", def.Name, "pid", cmd.Process.Pid, "incoming", incoming, "op", "start")

	d.mu.Lock()
	g.pid, g.child = cmd.Process.Pid, cmd
	d.mu.Unlock()
	go d.waitChild(g)

	mon, err := d.connect(ctx, g, sock)
	if err != nil {
		d.mu.Lock()
		g.stopping = true
		d.mu.Unlock()
		cmd.Process.Kill()
		<-g.exited
		return fail(fmt.Errorf("connect to its QMP monitor: %w%s", err, qemuLogTail(dir)))
	}
	if incoming != "" && tls {
		err := mon.run(ctx, "migrate-set-parameters", map[string]any{"tls-creds": tlsServerID}, nil)
		if err == nil {
			err = mon.run(ctx, "migrate-incoming", map[string]any{"uri": incoming}, nil)
		}
		if err != nil {
			d.mu.Lock()
			g.stopping = true
			d.mu.Unlock()
			mon.close()
			cmd.Process.Kill()
			<-g.exited
			return fail(fmt.Errorf("listen for the migration with TLS: %w%s", err, qemuLogTail(dir)))
		}
	}
	d.mu.Lock()
	g.mon = mon
	g.starting = false
	if g.gone {
		// It died between connecting and now; onExit stayed quiet.
		d.mu.Unlock()
		mon.close()
		return fail(fmt.Errorf("qemu exited right after starting%s", qemuLogTail(dir)))
	}
	if incoming != "" {
		d.setState(g, hypervisor.Incoming, "waiting for migration")
	} else {
		d.setState(g, hypervisor.Running, "started")
	}
	d.mu.Unlock()
	if incoming == "" {
		d.emit(g, hypervisor.EventStarted, "")
	}
	return nil
}

// connect polls for the QMP socket until QEMU accepts, QEMU exits, or ctx ends.
func (d *Driver) connect(ctx context.Context, g *guest, sock string) (*monitor, error) {
	onEvent := func(e qmpEvent) { d.onQMPEvent(g, e) }
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		mon, err := dialMonitor(ctx, sock, onEvent)
		if err == nil {
			return mon, nil
		}
		select {
		case <-g.exited:
			return nil, errors.New("qemu exited")
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// args builds QEMU's command line for def.
func (d *Driver) args(def guestdef.Definition, dir string) []string {
	mib := (def.Memory + (1<<20 - 1)) >> 20
	a := []string{
		"-name", "guest=" + def.Name,
		"-machine", d.cfg.Machine,
		"-accel", string(d.accel.Accel),
		"-m", strconv.FormatInt(mib, 10),
		"-smp", strconv.Itoa(def.VCPUs),
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-qmp", "unix:" + filepath.Join(dir, "qmp.sock") + ",server=on,wait=off",
		"-pidfile", filepath.Join(dir, "qemu.pid"),
	}
	// QEMU opens the guest's files (checked to lie in storage pools) and
	// its sockets as the agent's user, then drops to cfg.User and runs the
	// guest under seccomp: a guest that breaks out of the emulator holds no
	// privilege. (elevateprivileges=deny would forbid -runas's own setuid.)
	sandbox := "on,obsolete=deny,resourcecontrol=deny"
	if !hasBridge(def.NICs) {
		sandbox += ",spawn=deny"
	}
	a = append(a, "-sandbox", sandbox)
	if d.tlsDir != "" {
		// Loaded at start, before the drop to cfg.User.
		a = append(a,
			"-object", "tls-creds-x509,id="+tlsServerID+",dir="+qemuOpt(d.tlsDir)+",endpoint=server,verify-peer=on",
			"-object", "tls-creds-x509,id="+tlsClientID+",dir="+qemuOpt(d.tlsDir)+",endpoint=client,verify-peer=on")
	}
	if d.cfg.User != "" {
		a = append(a, "-runas", d.cfg.User)
	}
	if d.accel.Accel == hypervisor.AccelKVM {
		// The guest's CPU model (docs/manager.md, CPU model): the
		// host's CPU only when none is set; a live migration between
		// hosts of different generations needs a model both offer.
		// Under TCG QEMU's emulated default is kept (it boots anywhere).
		a = append(a, "-cpu", hypervisor.QEMUCPUArg(def.CPUModel))
	}
	a = append(a, agentArgs(def, dir)...)
	if def.Display == "vnc" {
		// VGA, and VNC on a unix socket only (OpenDisplay): no port open.
		a = append(a, "-vga", "std", "-vnc", "unix:"+filepath.Join(dir, "vnc.sock"))
	}
	// The first serial port: the console socket (haven guest console),
	// also written to the serial log when the definition has one.
	serial := "socket,id=serial0,path=" + qemuOpt(filepath.Join(dir, "console.sock")) + ",server=on,wait=off"
	if def.SerialLog != "" {
		serial += ",logfile=" + qemuOpt(def.SerialLog) + ",logappend=on"
	}
	a = append(a, "-chardev", serial, "-serial", "chardev:serial0")
	if def.Boot.Kernel != "" {
		a = append(a, "-kernel", def.Boot.Kernel)
		if def.Boot.Initrd != "" {
			a = append(a, "-initrd", def.Boot.Initrd)
		}
		if def.Boot.Cmdline != "" {
			a = append(a, "-append", def.Boot.Cmdline)
		}
	}
	for i, disk := range def.Disks {
		format := disk.Format
		if format == "" {
			format = "raw"
		}
		opt := fmt.Sprintf("file=%s,format=%s,id=disk%d,werror=stop,rerror=stop", qemuOpt(disk.Path), format, i)
		if d.cfg.DiskCache != "" {
			opt += ",cache=" + d.cfg.DiskCache
		}
		if disk.ReadOnly {
			opt += ",readonly=on"
		}
		if disk.NoImageLock {
			opt += ",file.locking=off"
		}
		switch disk.Bus {
		case "ide", "sata":
			opt += ",if=ide"
		case "scsi":
			opt += ",if=none"
		default:
			opt += ",if=virtio"
		}
		a = append(a, "-drive", opt)
		if disk.Bus == "scsi" {
			if i == 0 || !hasSCSI(def.Disks[:i]) {
				a = append(a, "-device", "virtio-scsi-pci,id=scsi0")
			}
			a = append(a, "-device", fmt.Sprintf("scsi-hd,drive=disk%d,bus=scsi0.0", i))
		}
	}
	for i, n := range def.NICs {
		id := fmt.Sprintf("net%d", i)
		if n.User {
			a = append(a, "-netdev", "user,id="+id)
		} else {
			a = append(a, "-netdev", "bridge,id="+id+",br="+qemuOpt(n.Bridge))
		}
		model := n.Model
		switch model {
		case "", "virtio":
			model = "virtio-net-pci"
		}
		dev := model + ",netdev=" + id
		if n.MAC != "" {
			dev += ",mac=" + n.MAC
		}
		a = append(a, "-device", dev)
	}
	return a
}

func hasBridge(nics []guestdef.NIC) bool {
	for _, n := range nics {
		if n.Bridge != "" {
			return true
		}
	}
	return false
}

func hasSCSI(disks []guestdef.Disk) bool {
	for _, d := range disks {
		if d.Bus == "scsi" {
			return true
		}
	}
	return false
}

// qemuOpt escapes a value inside a QEMU -opt string (commas double).
func qemuOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func qemuLogTail(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "qemu.log"))
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 600 {
		b = b[len(b)-600:]
	}
	return ": qemu said: " + strings.TrimSpace(string(b))
}

// agentArgs are the devices of the guest agent channel (its socket in the
// guest's run dir) and the pvpanic device.
func agentArgs(def guestdef.Definition, dir string) []string {
	var a []string
	if !def.NoPanicDevice {
		a = append(a, "-device", "pvpanic")
	}
	if def.NeedsAgent() {
		a = append(a,
			"-chardev", "socket,id=qga0,path="+qemuOpt(filepath.Join(dir, "qga.sock"))+",server=on,wait=off",
			"-device", "virtio-serial-pci,id=vser0",
			"-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0")
	}
	return a
}

// AgentCommand implements hypervisor.GuestAgent over the guest's
// RUNDIR/NAME/qga.sock, one command at a time per guest.
func (d *Driver) AgentCommand(ctx context.Context, name string, cmd []byte) (json.RawMessage, error) {
	g, err := d.live(name)
	if err != nil {
		return nil, fmt.Errorf("guest agent of %q: %w", name, err)
	}
	if !g.def.NeedsAgent() {
		return nil, fmt.Errorf("guest agent of %q: the guest declares no guest agent (guest_agent) and has no agent check, so it has no agent channel", name)
	}
	select {
	case g.agentMu <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("guest agent of %q: busy: %w", name, ctx.Err())
	}
	defer func() { <-g.agentMu }()
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "unix", filepath.Join(g.dir, "qga.sock"))
	if err != nil {
		return nil, fmt.Errorf("guest agent of %q: %w", name, err)
	}
	defer conn.Close()
	ret, err := guestagent.Exchange(ctx, conn, cmd)
	if err != nil {
		return nil, fmt.Errorf("guest agent of %q: %w", name, err)
	}
	return ret, nil
}

// agentCaller is AgentCommand bound to one guest.
func (d *Driver) agentCaller(name string) guestagent.Caller {
	return func(ctx context.Context, cmd []byte) (json.RawMessage, error) { return d.AgentCommand(ctx, name, cmd) }
}

// OpenConsole implements hypervisor.Console: a connection to the guest's
// first serial port (RUNDIR/NAME/console.sock). The port takes one client
// at a time; a second waits until the first leaves.
func (d *Driver) OpenConsole(ctx context.Context, name string) (net.Conn, error) {
	g, err := d.live(name)
	if err != nil {
		return nil, fmt.Errorf("console of %q: %w", name, err)
	}
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "unix", filepath.Join(g.dir, "console.sock"))
	if err != nil {
		return nil, fmt.Errorf("console of %q: %w", name, err)
	}
	return conn, nil
}

// OpenDisplay implements hypervisor.Display: the guest's VNC server on
// RUNDIR/NAME/vnc.sock.
func (d *Driver) OpenDisplay(ctx context.Context, name string) (net.Conn, error) {
	g, err := d.live(name)
	if err != nil {
		return nil, fmt.Errorf("display of %q: %w", name, err)
	}
	if g.def.Display != "vnc" {
		return nil, fmt.Errorf("display of %q: the guest has no graphical display (display: vnc)", name)
	}
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "unix", filepath.Join(g.dir, "vnc.sock"))
	if err != nil {
		return nil, fmt.Errorf("display of %q: %w", name, err)
	}
	return conn, nil
}
