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
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
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
	// DiskCache is QEMU's cache= for disks; empty keeps QEMU's default
	// (writeback). Use "none" on shared storage that supports O_DIRECT.
	DiskCache string
	// AdoptTimeout bounds connecting to each running guest when the driver
	// opens; default 5 s.
	AdoptTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

// Driver runs guests as QEMU processes. It implements hypervisor.Driver.
type Driver struct {
	cfg   Config
	accel hypervisor.AccelInfo
	log   *slog.Logger
	lock  *os.File // flock on RunDir/.lock

	events *eventQueue

	mu     sync.Mutex // guards guests, closed
	guests map[string]*guest
	closed bool
}

var _ hypervisor.Driver = (*Driver)(nil)

// guest is one QEMU process and what the driver knows of it. Fields after mu
// are guarded by Driver.mu.
type guest struct {
	name   string
	dir    string
	def    guestdef.Definition
	pid    int
	child  *exec.Cmd // nil when adopted
	exited chan struct{}

	mon *monitor

	state  hypervisor.State
	reason string
	since  time.Time

	stopping       bool   // Haven asked it to stop or die: an exit is not a crash
	shutdownReason string // from the SHUTDOWN event
	shutdownGuest  bool   // the guest shut itself down
	migrating      bool
	migratedAway   bool
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
	d.log.Info("qemu driver ready", "accel", d.accel.Accel, "accel_reason", d.accel.Reason, "run_dir", cfg.RunDir)
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

func (d *Driver) emit(g *guest, kind hypervisor.EventKind, reason string) {
	d.log.Info("guest event", "guest", g.name, "event", kind, "reason", reason)
	d.events.push(hypervisor.Event{Guest: g.name, Kind: kind, Reason: reason, At: d.cfg.Now()})
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
	if err := d.launch(ctx, def, ""); err != nil {
		return fmt.Errorf("start guest %q: %w", def.Name, err)
	}
	return nil
}

// PrepareIncoming implements hypervisor.Driver: it starts QEMU with def's
// arguments plus -incoming tcp:MigrationAddr:PORT on a free port.
func (d *Driver) PrepareIncoming(ctx context.Context, def guestdef.Definition) (hypervisor.MigrationTarget, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort(d.cfg.MigrationAddr)
		if err != nil {
			return hypervisor.MigrationTarget{}, fmt.Errorf("prepare incoming migration of guest %q: find a free port on %s: %w", def.Name, d.cfg.MigrationAddr, err)
		}
		uri := "tcp:" + net.JoinHostPort(d.cfg.MigrationAddr, strconv.Itoa(port))
		err = d.launch(ctx, def, uri)
		if err == nil {
			return hypervisor.MigrationTarget{Node: d.cfg.Node, URI: uri}, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "in use") || ctx.Err() != nil {
			break
		}
	}
	return hypervisor.MigrationTarget{}, fmt.Errorf("prepare incoming migration of guest %q: %w", def.Name, lastErr)
}

func freePort(addr string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// launch starts a QEMU process for def (incoming: the -incoming URI, or "").
func (d *Driver) launch(ctx context.Context, def guestdef.Definition, incoming string) error {
	if err := def.Validate(); err != nil {
		return err
	}
	for i, disk := range def.Disks {
		if disk.Path == "" {
			return fmt.Errorf("disk %d is on pool %q: resolve it to a path first (storage.ResolveDisk)", i, disk.Pool)
		}
	}
	dir := d.guestDir(def.Name)
	sock := filepath.Join(dir, "qmp.sock")
	if len(sock) >= 108 {
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
	g := &guest{name: def.Name, dir: dir, def: def, exited: make(chan struct{}), incoming: incoming != "", starting: true}
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
	args := d.args(def, dir)
	if incoming != "" {
		args = append(args, "-incoming", incoming)
	}
	logf, err := os.OpenFile(filepath.Join(dir, "qemu.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fail(err)
	}
	cmd := exec.Command(d.cfg.Binary, args...)
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
	if d.accel.Accel == hypervisor.AccelKVM {
		a = append(a, "-cpu", "host")
	}
	if def.SerialLog != "" {
		a = append(a, "-chardev", "file,id=serial0,path="+qemuOpt(def.SerialLog)+",append=on", "-serial", "chardev:serial0")
	}
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

// waitChild reaps a QEMU the driver started.
func (d *Driver) waitChild(g *guest) {
	err := g.child.Wait()
	how := "exited"
	if err != nil {
		how = err.Error()
	}
	d.onExit(g, "qemu "+how)
}

// watchAdopted waits for an adopted QEMU (not our child) to exit.
func (d *Driver) watchAdopted(g *guest, pidfd int) {
	defer unix.Close(pidfd)
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if err == nil && fds[0].Revents != 0 {
			break
		}
		if err != nil && err != unix.EINTR {
			d.log.Error("watch adopted qemu", "guest", g.name, "pid", g.pid, "err", err)
			// Fall back to polling the process.
			for processAlive(g.pid) {
				time.Sleep(100 * time.Millisecond)
			}
			break
		}
	}
	d.onExit(g, "qemu exited")
}

// onExit runs once when a guest's QEMU is gone.
func (d *Driver) onExit(g *guest, how string) {
	d.mu.Lock()
	if g.gone {
		d.mu.Unlock()
		return
	}
	g.gone = true
	closed := d.closed || g.starting
	mon := g.mon
	var kind hypervisor.EventKind
	var reason string
	switch {
	case g.migratedAway:
		d.setState(g, hypervisor.Shutoff, "migrated away")
	case g.incoming && !g.stopping:
		kind, reason = hypervisor.EventStopped, "incoming migration failed: "+how
		d.setState(g, hypervisor.Shutoff, reason)
	case g.shutdownGuest:
		kind, reason = hypervisor.EventStopped, "shutdown from inside"
		d.setState(g, hypervisor.Shutoff, reason)
	case g.stopping:
		kind, reason = hypervisor.EventStopped, "stopped by haven"
		d.setState(g, hypervisor.Shutoff, reason)
	default:
		kind, reason = hypervisor.EventCrashed, how
		if g.shutdownReason != "" {
			reason += " (" + g.shutdownReason + ")"
		}
		d.setState(g, hypervisor.Crashed, reason)
	}
	d.mu.Unlock()
	close(g.exited)
	if !closed {
		os.Remove(filepath.Join(g.dir, "qmp.sock"))
		os.Remove(filepath.Join(g.dir, "qemu.pid"))
		os.Remove(filepath.Join(g.dir, "incoming"))
		if kind != "" {
			d.emit(g, kind, reason)
		}
	}
	if mon != nil {
		mon.close()
	}
}

// onQMPEvent handles an asynchronous QMP event of g.
func (d *Driver) onQMPEvent(g *guest, e qmpEvent) {
	var emit hypervisor.EventKind
	var reason string
	d.mu.Lock()
	switch e.Event {
	case "SHUTDOWN":
		var data struct {
			Guest  bool   `json:"guest"`
			Reason string `json:"reason"`
		}
		json.Unmarshal(e.Data, &data)
		g.shutdownGuest = data.Guest
		g.shutdownReason = data.Reason
	case "BLOCK_IO_ERROR":
		var data struct {
			Device    string `json:"device"`
			NodeName  string `json:"node-name"`
			Operation string `json:"operation"`
			Action    string `json:"action"`
			Reason    string `json:"reason"`
		}
		json.Unmarshal(e.Data, &data)
		if data.Action == "stop" && g.state != hypervisor.Paused {
			reason = fmt.Sprintf("io-error: %s on %s: %s", data.Operation, data.Device+data.NodeName, data.Reason)
			d.setState(g, hypervisor.Paused, "io-error")
			emit = hypervisor.EventPaused
		}
	case "STOP":
		// A pause that is not a migration's switchover and not already an
		// I/O error: someone paused the guest.
		if !g.migrating && !g.incoming && g.state == hypervisor.Running {
			d.setState(g, hypervisor.Paused, "paused")
			emit, reason = hypervisor.EventPaused, "paused"
		}
	case "RESUME":
		switch {
		case g.incoming:
			g.incoming = false
			os.Remove(filepath.Join(g.dir, "incoming"))
			d.setState(g, hypervisor.Running, "migrated in")
			emit, reason = hypervisor.EventResumed, "incoming migration completed"
		case g.state == hypervisor.Paused:
			d.setState(g, hypervisor.Running, "resumed")
			emit, reason = hypervisor.EventResumed, "resumed"
		}
	}
	d.mu.Unlock()
	if emit != "" && !d.isClosed() {
		d.emit(g, emit, reason)
	}
}

func (d *Driver) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// live returns the running guest named name.
func (d *Driver) live(name string) (*guest, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("driver closed: %w", hypervisor.ErrUnavailable)
	}
	g, ok := d.guests[name]
	if !ok || g.gone {
		return nil, hypervisor.ErrNotFound
	}
	return g, nil
}

// Stop implements hypervisor.Driver: ACPI power button, then after timeout
// QMP quit, then SIGKILL.
func (d *Driver) Stop(ctx context.Context, name string, timeout time.Duration) error {
	g, err := d.live(name)
	if err != nil {
		return fmt.Errorf("stop guest %q: %w", name, err)
	}
	d.mu.Lock()
	g.stopping = true
	mon, incoming := g.mon, g.incoming
	d.mu.Unlock()
	d.log.Info("stopping guest", "guest", name, "op", "stop", "timeout", timeout)
	if incoming {
		// Nothing runs yet: no guest to shut down gracefully.
		timeout = 0
	} else if mon != nil {
		if err := mon.run(ctx, "system_powerdown", nil, nil); err != nil && !errors.Is(err, errMonitorClosed) {
			d.log.Warn("system_powerdown failed", "guest", name, "err", err)
		}
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-g.exited:
		return nil
	case <-ctx.Done():
		// Still make sure it is off before returning.
		d.forceOff(g)
		return fmt.Errorf("stop guest %q: %w (forced off)", name, ctx.Err())
	case <-t.C:
	}
	d.log.Warn("guest ignored the power button, forcing it off", "guest", name, "op", "stop")
	d.forceOff(g)
	select {
	case <-g.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop guest %q: QEMU pid %d did not exit after SIGKILL: %w", name, g.pid, ctx.Err())
	}
}

// forceOff SIGKILLs g's QEMU.
func (d *Driver) forceOff(g *guest) {
	d.mu.Lock()
	g.stopping = true
	pid := g.pid
	d.mu.Unlock()
	if pid > 0 {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Kill implements hypervisor.Driver.
func (d *Driver) Kill(ctx context.Context, name string) error {
	g, err := d.live(name)
	if err != nil {
		return fmt.Errorf("kill guest %q: %w", name, err)
	}
	d.log.Info("killing guest", "guest", name, "op", "kill")
	d.forceOff(g)
	select {
	case <-g.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kill guest %q: QEMU pid %d has not exited: %w", name, g.pid, ctx.Err())
	}
}

// Status implements hypervisor.Driver. For a live guest it asks QEMU
// (query-status) under ctx; a guest that exited keeps its last state until it
// is started again.
func (d *Driver) Status(ctx context.Context, name string) (hypervisor.Status, error) {
	d.mu.Lock()
	g, ok := d.guests[name]
	if !ok || d.closed {
		d.mu.Unlock()
		return hypervisor.Status{}, fmt.Errorf("status of guest %q: %w", name, hypervisor.ErrNotFound)
	}
	mon, gone := g.mon, g.gone
	d.mu.Unlock()
	if !gone && mon != nil {
		var st struct {
			Status string `json:"status"`
		}
		if err := mon.run(ctx, "query-status", nil, &st); err == nil {
			d.mu.Lock()
			d.applyRunState(g, st.Status)
			d.mu.Unlock()
		} else if !errors.Is(err, errMonitorClosed) {
			return hypervisor.Status{}, fmt.Errorf("status of guest %q: %w", name, err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status(g), nil
}

// applyRunState folds QEMU's run state into g; callers hold d.mu.
func (d *Driver) applyRunState(g *guest, rs string) {
	switch rs {
	case "running":
		d.setState(g, hypervisor.Running, g.reason)
	case "io-error":
		d.setState(g, hypervisor.Paused, "io-error")
	case "paused", "suspended", "debug", "watchdog", "internal-error", "colo", "restore-vm", "save-vm", "prelaunch":
		if g.state != hypervisor.Paused {
			d.setState(g, hypervisor.Paused, rs)
		}
	case "inmigrate":
		d.setState(g, hypervisor.Incoming, "waiting for migration")
	case "finish-migrate", "postmigrate":
		d.setState(g, hypervisor.Paused, "migrating")
	case "guest-panicked":
		d.setState(g, hypervisor.Crashed, "guest panicked")
	case "shutdown":
		d.setState(g, hypervisor.Shutoff, "shutting down")
	}
}

func (d *Driver) status(g *guest) hypervisor.Status {
	s := hypervisor.Status{Name: g.name, State: g.state, Reason: g.reason, Since: g.since}
	if !g.gone {
		s.PID = g.pid
	}
	return s
}

// List implements hypervisor.Driver: every guest whose QEMU runs here.
func (d *Driver) List(ctx context.Context) ([]hypervisor.Status, error) {
	d.mu.Lock()
	var names []string
	for name, g := range d.guests {
		if !g.gone {
			names = append(names, name)
		}
	}
	d.mu.Unlock()
	var out []hypervisor.Status
	for _, n := range names {
		s, err := d.Status(ctx, n)
		if errors.Is(err, hypervisor.ErrNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("list guests: %w", err)
		}
		if s.State != hypervisor.Shutoff && s.State != hypervisor.Crashed || s.PID != 0 {
			out = append(out, s)
		}
	}
	return out, nil
}

// Definition returns the definition a running guest was started with.
func (d *Driver) Definition(name string) (guestdef.Definition, error) {
	g, err := d.live(name)
	if err != nil {
		return guestdef.Definition{}, fmt.Errorf("definition of guest %q: %w", name, err)
	}
	return g.def, nil
}

// migrationInfo is the part of query-migrate the driver reads.
type migrationInfo struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
	Downtime  int64  `json:"downtime"` // ms
	RAM       *struct {
		Total     int64 `json:"total"`
		Remaining int64 `json:"remaining"`
	} `json:"ram"`
}

// Migrate implements hypervisor.Driver: QMP migrate to target.URI, polling
// query-migrate every 50 ms. On success the source QEMU quits and an
// EventMigrated is emitted; on failure or ctx end the migration is cancelled
// and the guest keeps running here (cont when QEMU left it paused).
func (d *Driver) Migrate(ctx context.Context, name string, target hypervisor.MigrationTarget, progress func(hypervisor.Progress)) error {
	g, err := d.live(name)
	if err != nil {
		return fmt.Errorf("migrate guest %q to node %q: %w", name, target.Node, err)
	}
	d.mu.Lock()
	if g.migrating {
		d.mu.Unlock()
		return fmt.Errorf("migrate guest %q to node %q: a migration is already running", name, target.Node)
	}
	if g.incoming || g.mon == nil {
		d.mu.Unlock()
		return fmt.Errorf("migrate guest %q to node %q: guest is not running here (state %s)", name, target.Node, g.state)
	}
	g.migrating = true
	mon := g.mon
	d.mu.Unlock()
	log := d.log.With("guest", name, "op", "migrate", "target", target.Node, "uri", target.URI)
	err = d.migrate(ctx, g, mon, target, progress, log)
	d.mu.Lock()
	g.migrating = false
	d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("migrate guest %q to node %q (%s): %w", name, target.Node, target.URI, err)
	}
	return nil
}

func (d *Driver) migrate(ctx context.Context, g *guest, mon *monitor, target hypervisor.MigrationTarget, progress func(hypervisor.Progress), log *slog.Logger) error {
	if !strings.HasPrefix(target.URI, "tcp:") && !strings.HasPrefix(target.URI, "unix:") {
		return fmt.Errorf("target URI %q is not a QEMU migration URI (tcp:HOST:PORT)", target.URI)
	}
	log.Info("migration starting")
	if err := mon.run(ctx, "migrate", map[string]any{"uri": target.URI}, nil); err != nil {
		if mi, done := d.cancelMigration(g, mon, log); done {
			d.completed(g, mon, target, mi, log)
			return nil
		}
		return err
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		var mi migrationInfo
		err := mon.run(ctx, "query-migrate", nil, &mi)
		if err != nil {
			if errors.Is(err, errMonitorClosed) {
				return fmt.Errorf("source QEMU died during migration: %w", err)
			}
			if mi, done := d.cancelMigration(g, mon, log); done {
				d.completed(g, mon, target, mi, log)
				return nil
			}
			return err
		}
		if progress != nil && mi.RAM != nil {
			p := hypervisor.Progress{Total: mi.RAM.Total, Remaining: mi.RAM.Remaining}
			if mi.Status == "completed" {
				p.Remaining = 0
				p.Downtime = time.Duration(mi.Downtime) * time.Millisecond
			}
			progress(p)
		}
		switch mi.Status {
		case "completed":
			d.completed(g, mon, target, mi, log)
			return nil
		case "failed", "cancelled":
			d.recover(g, mon, log)
			desc := mi.ErrorDesc
			if desc == "" {
				desc = mi.Status
			}
			return fmt.Errorf("migration %s: %s (guest keeps running here)", mi.Status, desc)
		}
		select {
		case <-ctx.Done():
			if mi, done := d.cancelMigration(g, mon, log); done {
				d.completed(g, mon, target, mi, log)
				return nil
			}
			return fmt.Errorf("%w (migration cancelled; guest keeps running here)", ctx.Err())
		case <-t.C:
		}
	}
}

// completed finishes a migration QEMU reports complete: the guest now runs
// on the target, so the source QEMU quits.
func (d *Driver) completed(g *guest, mon *monitor, target hypervisor.MigrationTarget, mi migrationInfo, log *slog.Logger) {
	d.mu.Lock()
	g.migratedAway, g.stopping = true, true
	d.setState(g, hypervisor.Shutoff, "migrated to "+target.Node)
	d.mu.Unlock()
	log.Info("migration completed", "downtime_ms", mi.Downtime)
	d.emit(g, hypervisor.EventMigrated, "to node "+target.Node)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := mon.run(ctx, "quit", nil, nil); err != nil && !errors.Is(err, errMonitorClosed) {
		d.forceOff(g)
	}
}

// cancelMigration cancels a running migration and makes sure the guest runs
// here again. When the migration completed anyway it reports done (and the
// guest must not be resumed here: it runs on the target).
func (d *Driver) cancelMigration(g *guest, mon *monitor, log *slog.Logger) (migrationInfo, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	log.Warn("cancelling migration")
	mon.run(ctx, "migrate_cancel", nil, nil)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var mi migrationInfo
	for ctx.Err() == nil {
		mi = migrationInfo{}
		if err := mon.run(ctx, "query-migrate", nil, &mi); err != nil {
			break
		}
		if mi.Status == "completed" {
			return mi, true
		}
		if s := mi.Status; s != "active" && s != "setup" && s != "cancelling" && s != "device" && s != "pre-switchover" {
			break
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	d.recover(g, mon, log)
	return mi, false
}

// recover resumes the source guest when a failed migration left it paused.
func (d *Driver) recover(g *guest, mon *monitor, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var mi migrationInfo
	if err := mon.run(ctx, "query-migrate", nil, &mi); err != nil || mi.Status == "completed" || mi.Status == "active" {
		// Never resume a guest that may be running on the target.
		log.Error("after failed migration: not resuming the guest here", "migration", mi.Status, "err", err)
		return
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := mon.run(ctx, "query-status", nil, &st); err != nil {
		log.Error("after failed migration: query-status", "err", err)
		return
	}
	if st.Status == "postmigrate" || st.Status == "finish-migrate" || st.Status == "paused" {
		if err := mon.run(ctx, "cont", nil, nil); err != nil {
			log.Error("after failed migration: cont", "err", err)
			return
		}
		log.Info("guest resumed on the source after a failed migration")
	}
	d.mu.Lock()
	d.setState(g, hypervisor.Running, "migration failed")
	d.mu.Unlock()
}

// adoptAll adopts every guest directory whose QEMU still runs and removes the
// rest.
func (d *Driver) adoptAll(ctx context.Context) {
	entries, err := os.ReadDir(d.cfg.RunDir)
	if err != nil {
		d.log.Error("read run dir", "err", err)
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !guestdef.ValidName(e.Name()) {
			continue
		}
		if err := d.adopt(ctx, e.Name()); err != nil {
			d.log.Warn("not adopting guest", "guest", e.Name(), "err", err)
		}
	}
}

func (d *Driver) adopt(ctx context.Context, name string) error {
	dir := d.guestDir(name)
	sock := filepath.Join(dir, "qmp.sock")
	pid := readPID(dir)
	if pid <= 0 || !processAlive(pid) || !isOurQEMU(pid, sock) {
		os.RemoveAll(dir)
		return fmt.Errorf("no QEMU runs it any more (pid %d); removed %s", pid, dir)
	}
	var def guestdef.Definition
	if b, err := os.ReadFile(filepath.Join(dir, "def.json")); err == nil {
		json.Unmarshal(b, &def)
	}
	def.Name = name
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("watch QEMU pid %d: %w", pid, err)
	}
	_, incErr := os.Stat(filepath.Join(dir, "incoming"))
	g := &guest{name: name, dir: dir, def: def, pid: pid, exited: make(chan struct{}), incoming: incErr == nil}
	d.setState(g, hypervisor.Running, "adopted")
	d.mu.Lock()
	d.guests[name] = g
	d.mu.Unlock()
	go d.watchAdopted(g, pidfd)
	actx, cancel := context.WithTimeout(ctx, d.cfg.AdoptTimeout)
	defer cancel()
	mon, err := d.connect(actx, g, sock)
	if err != nil {
		d.log.Error("adopted guest has no QMP monitor: it can only be killed", "guest", name, "pid", pid, "err", err)
		d.mu.Lock()
		d.setState(g, hypervisor.Running, "adopted without monitor")
		d.mu.Unlock()
		return nil
	}
	d.mu.Lock()
	g.mon = mon
	d.mu.Unlock()
	var st struct {
		Status string `json:"status"`
	}
	if err := mon.run(actx, "query-status", nil, &st); err == nil {
		d.mu.Lock()
		d.applyRunState(g, st.Status)
		if st.Status == "running" {
			g.incoming = false
		}
		d.mu.Unlock()
	}
	d.log.Info("adopted guest", "guest", name, "pid", pid, "state", g.state)
	return nil
}

func readPID(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "qemu.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// isOurQEMU reports whether pid's command line uses the QMP socket sock (so a
// recycled pid is not mistaken for the guest).
func isOurQEMU(pid int, sock string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	return strings.Contains(string(b), "unix:"+sock+",")
}

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

// eventQueue is an unbounded FIFO in front of the Events channel, so a slow
// reader never blocks the monitor and no event is dropped.
type eventQueue struct {
	out    chan hypervisor.Event
	mu     sync.Mutex
	queue  []hypervisor.Event
	wake   chan struct{}
	done   chan struct{}
	closed bool
}

func newEventQueue() *eventQueue {
	q := &eventQueue{out: make(chan hypervisor.Event, 64), wake: make(chan struct{}, 1), done: make(chan struct{})}
	go q.pump()
	return q
}

func (q *eventQueue) push(e hypervisor.Event) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.queue = append(q.queue, e)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *eventQueue) pump() {
	defer close(q.out)
	for {
		q.mu.Lock()
		if len(q.queue) == 0 {
			q.mu.Unlock()
			select {
			case <-q.wake:
				continue
			case <-q.done:
				return
			}
		}
		e := q.queue[0]
		q.queue = q.queue[1:]
		q.mu.Unlock()
		select {
		case q.out <- e:
		case <-q.done:
			return
		}
	}
}

func (q *eventQueue) close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.done)
	}
	q.mu.Unlock()
}
