// Package libvirt owns Haven's production hypervisor driver: it runs guests
// through a libvirtd over its unix socket (pure Go RPC, no cgo), turns
// guestdef.Definition into libvirt domain XML, reports lifecycle events from
// libvirt's event stream, live-migrates peer to peer, and survives a libvirtd
// that hangs, dies or restarts: every call runs under a deadline, a call that
// overruns drops the connection, and the driver reconnects with backoff and
// subscribes to events again.
package libvirt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"golang.org/x/sys/unix"
	"libvirt.org/go/libvirtxml"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/hypervisor/guestagent"
)

// Config says which libvirtd to drive and how.
type Config struct {
	// Socket is libvirtd's unix socket. Default /run/libvirt/libvirt-sock.
	Socket string
	// URI is the libvirt connection URI opened over the socket. Default
	// "qemu:///system".
	URI string
	// MigrationURI is this host's libvirt URI as seen from its peers, e.g.
	// "qemu+tcp://10.0.0.2/system": what PrepareIncoming returns. Empty when
	// the host does not take incoming migrations.
	MigrationURI string
	// Node is this host's node name, reported in MigrationTarget.
	Node string
	// DomainType is the libvirt domain type: "kvm" or "qemu". Empty: "kvm"
	// when KVM works on this host, else "qemu" (TCG).
	DomainType string
	// QEMUPIDDir is where libvirtd keeps its qemu pid files, to report the
	// qemu process of a guest in Status. Default /run/libvirt/qemu.
	QEMUPIDDir string
	// CallTimeout bounds a libvirt call whose context has no deadline.
	// Default 30s.
	CallTimeout time.Duration
	// ConnectTimeout bounds dialing and opening one connection. Default 5s.
	ConnectTimeout time.Duration
	// ReconnectSettle is how long after a reconnection the driver looks at
	// libvirt's guests a second time (libvirtd re-attaches to running guests
	// in the background after a restart). Default 2s.
	ReconnectSettle time.Duration
	// ReconnectMin and ReconnectMax bound the backoff between reconnection
	// attempts. Defaults 100ms and 5s.
	ReconnectMin, ReconnectMax time.Duration
	// Heartbeat is how often an idle connection is checked (a cheap call
	// under ConnectTimeout); a libvirtd that does not answer is dropped and
	// reconnected to. Default 5s; negative turns it off.
	Heartbeat time.Duration
	// MigrationPoll is how often a migration's progress is read. Default 200ms.
	MigrationPoll time.Duration
	// StrictStorageCheck keeps libvirt's own check that a migrating guest's
	// disks are on a filesystem it knows as shared (NFS, GFS2, OCFS2, Ceph,
	// ...). By default Haven's check decides: Haven migrates only guests
	// whose disks are all on pools declared shared and seen shared by every
	// host (storage markers), and the driver passes VIR_MIGRATE_UNSAFE, which
	// skips libvirt's filesystem-type test, when every writable disk also
	// bypasses the host page cache (cache none or directsync), the other
	// condition of a safe migration. Set it when libvirt should also refuse.
	StrictStorageCheck bool
	// MigrationTLSDir, with TLSCA, TLSCert and TLSKey (the cluster CA, this
	// host's certificate and key), turns on live migration over TLS: the
	// driver writes the credentials in the directory libvirt's QEMU reads
	// them from (qemu.conf's migrate_tls_x509_cert_dir, which must name it)
	// as hypervisor.WriteTLSCreds lays them out, readable by root and
	// TLSGroup (the group QEMU runs as). PrepareIncoming then offers TLS,
	// and Migrate passes VIR_MIGRATE_TLS to a target that offers it, which
	// must present a certificate naming its node. Empty: plain migration.
	MigrationTLSDir        string
	TLSCA, TLSCert, TLSKey string
	TLSGroup               int
	// PKIDir, when set, is where the driver lays the same certificates
	// out for libvirt's own TLS transport (WritePKI), again before each
	// migration: the source libvirtd reads its client certificate there
	// when the target's MigrationURI is qemu+tls with this pkipath. When
	// this host's MigrationURI is qemu+tls and its libvirtd's files
	// changed (a renewal, a CA rotation), the target has libvirtd load
	// them again (virt-admin server-update-tls) before a migration comes.
	PKIDir string
	// TLSCRL, when set, is the agent's list of revoked host certificates
	// signed by the cluster CA (PEM): the driver copies it into PKIDir as
	// libvirt's cacrl.pem, and RefreshPKI has libvirtd load it when it
	// changed, so that a removed host's certificate no longer opens it;
	// it also goes to MigrationTLSDir as ca-crl.pem, which the QEMUs of
	// migrations check peers against.
	TLSCRL string
	// VirtAdmin is the virt-admin program (default: found on $PATH).
	VirtAdmin string
	// Logger receives the driver's logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock used to stamp events. Default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Socket == "" {
		c.Socket = "/run/libvirt/libvirt-sock"
	}
	if c.URI == "" {
		c.URI = "qemu:///system"
	}
	if c.QEMUPIDDir == "" {
		c.QEMUPIDDir = "/run/libvirt/qemu"
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 30 * time.Second
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.ReconnectMin <= 0 {
		c.ReconnectMin = 100 * time.Millisecond
	}
	if c.ReconnectMax < c.ReconnectMin {
		c.ReconnectMax = 5 * time.Second
		if c.ReconnectMax < c.ReconnectMin {
			c.ReconnectMax = c.ReconnectMin
		}
	}
	if c.ReconnectSettle <= 0 {
		c.ReconnectSettle = 2 * time.Second
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 5 * time.Second
	}
	if c.MigrationPoll <= 0 {
		c.MigrationPoll = 200 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// conn is one open connection to libvirtd.
type conn struct {
	l      *golibvirt.Libvirt
	nc     net.Conn      // the socket, closed to drop a hung connection
	gone   chan struct{} // closed once the connection is lost or dropped
	cancel context.CancelFunc
	once   sync.Once
	// dropped is set at once by drop, before gone closes.
	dropped atomic.Bool
}

// usable reports whether the connection has been neither lost nor dropped.
func (c *conn) usable() bool {
	select {
	case <-c.gone:
		return false
	default:
		return !c.dropped.Load()
	}
}

// drop closes the socket without asking libvirtd anything (it may hang).
func (c *conn) drop() {
	c.dropped.Store(true)
	c.once.Do(func() {
		c.cancel()
		if c.nc != nil {
			_ = c.nc.Close()
		}
	})
}

// recordingDialer dials the unix socket and keeps the net.Conn so that a
// connection can be dropped without a libvirt round trip.
type recordingDialer struct {
	inner *dialers.Local
	mu    sync.Mutex
	nc    net.Conn
}

func (d *recordingDialer) Dial() (net.Conn, error) {
	nc, err := d.inner.Dial()
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.nc = nc
	d.mu.Unlock()
	return nc, nil
}

func (d *recordingDialer) conn() net.Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.nc
}

// Driver is the libvirt hypervisor.Driver. Create it with New; it is safe
// for concurrent use.
type Driver struct {
	cfg   Config
	tls   bool       // migrations over TLS (Config.MigrationTLSDir)
	tlsMu sync.Mutex // serializes refreshTLS and refreshPKI
	// pkiStale: libvirtd did not load the certificates last written in
	// Config.PKIDir (its reload failed); guarded by tlsMu.
	pkiStale bool
	// pkiRoot prefixes libvirt's default certificate paths (tests).
	pkiRoot    string
	domainType string
	log        *slog.Logger
	events     chan hypervisor.Event
	sendMu     sync.Mutex // serializes deliver

	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	// stopR turns readable (hangs up) at Close, waking the qemu watchers;
	// -1 when no pipe could be made (then qemu processes are not watched).
	stopR, stopW int

	mu sync.Mutex
	// guarded by mu:
	cur       *conn                // nil while disconnected
	changed   chan struct{}        // closed and replaced on every event or (re)connection
	running   map[string]bool      // guests last known active, to report what a libvirtd outage hid
	paused    map[string]bool      // guests last reported paused
	ended     map[string]bool      // guests whose current run's end was reported
	quiet     map[string]bool      // guests whose qemu may exit without that being a crash
	watched   map[string]int       // guest -> qemu pid watched through a pidfd
	exited    map[string]int       // guest -> the last of its qemu pids seen to exit
	since     map[string]time.Time // when each guest's state last changed, as far as we saw
	connects  int                  // successful connections so far
	lastError error                // why the last connection attempt failed
}

var (
	_ hypervisor.Driver     = (*Driver)(nil)
	_ hypervisor.GuestAgent = (*Driver)(nil)
	_ hypervisor.Console    = (*Driver)(nil)
	_ hypervisor.Display    = (*Driver)(nil)
)

// eventsBuffer is how many events wait for the consumer before the oldest
// is dropped.
const eventsBuffer = 1024

// New connects to libvirtd and subscribes to lifecycle events. It fails when
// the first connection cannot be made within ctx (or cfg.ConnectTimeout);
// after that, a lost connection is re-established in the background until
// Close, and calls made meanwhile fail with hypervisor.ErrUnavailable.
func New(ctx context.Context, cfg Config) (*Driver, error) {
	cfg.setDefaults()
	dt := cfg.DomainType
	switch dt {
	case "":
		info := detectAccel(ctx)
		dt = "qemu"
		if info.Accel == hypervisor.AccelKVM {
			dt = "kvm"
		}
		cfg.Logger.Info("libvirt domain type chosen", "driver", "libvirt", "type", dt, "reason", info.Reason)
	case "kvm", "qemu":
	default:
		return nil, fmt.Errorf("libvirt driver: domain type %q: want \"kvm\" or \"qemu\"", dt)
	}
	tls := cfg.MigrationTLSDir != "" && cfg.TLSCA != "" && cfg.TLSCert != "" && cfg.TLSKey != ""
	if tls {
		if err := hypervisor.WriteTLSCreds(cfg.MigrationTLSDir, cfg.TLSCA, cfg.TLSCert, cfg.TLSKey, cfg.TLSCRL, cfg.TLSGroup); err != nil {
			return nil, fmt.Errorf("libvirt driver: %s: %w", cfg.MigrationTLSDir, err)
		}
	}
	d := &Driver{
		tls:        tls,
		cfg:        cfg,
		domainType: dt,
		log:        cfg.Logger.With("driver", "libvirt"),
		events:     make(chan hypervisor.Event, eventsBuffer),
		closed:     make(chan struct{}),
		changed:    make(chan struct{}),
		running:    map[string]bool{},
		paused:     map[string]bool{},
		ended:      map[string]bool{},
		quiet:      map[string]bool{},
		watched:    map[string]int{},
		exited:     map[string]int{},
		since:      map[string]time.Time{},
		stopR:      -1,
		stopW:      -1,
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err == nil {
		d.stopR, d.stopW = p[0], p[1]
	}
	c, err := d.connect(ctx)
	if err != nil {
		d.closePipe()
		return nil, fmt.Errorf("libvirt driver: connect to libvirtd at %s: %w: is libvirtd running?", cfg.Socket, err)
	}
	// libvirtd may have started with older certificates than the
	// agent's (it was down during a renewal or a CA rotation).
	if err := d.refreshPKI(ctx); err != nil {
		d.log.Warn("libvirt's TLS transport certificates", "err", err)
	}
	d.wg.Add(1)
	go d.supervise(c)
	return d, nil
}

// Name returns "libvirt".
func (d *Driver) Name() string { return "libvirt" }

// DomainType is the libvirt domain type this driver defines guests with.
func (d *Driver) DomainType() string { return d.domainType }

// Events delivers lifecycle events until Close.
func (d *Driver) Events() <-chan hypervisor.Event { return d.events }

// Connected reports whether the driver has a connection to libvirtd now.
func (d *Driver) Connected() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cur != nil && d.cur.usable()
}

// Close drops the connection and stops reconnecting; guests keep running.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		close(d.closed)
		d.mu.Lock()
		c := d.cur
		d.cur = nil
		d.mu.Unlock()
		if c != nil {
			// A polite close when libvirtd answers quickly, else just drop.
			done := make(chan struct{})
			go func() { _ = c.l.Disconnect(); close(done) }()
			select {
			case <-done:
			case <-time.After(time.Second):
			}
			c.drop()
		}
		if d.stopW >= 0 {
			_ = unix.Close(d.stopW)
		}
		d.wg.Wait()
		if d.stopR >= 0 {
			_ = unix.Close(d.stopR)
		}
	})
	return nil
}

func (d *Driver) closePipe() {
	if d.stopW >= 0 {
		_ = unix.Close(d.stopW)
		_ = unix.Close(d.stopR)
	}
}

// connect opens one connection, subscribes to lifecycle events and installs
// it as the current connection.
func (d *Driver) connect(ctx context.Context) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ConnectTimeout)
	defer cancel()
	dialer := &recordingDialer{inner: dialers.NewLocal(dialers.WithSocket(d.cfg.Socket), dialers.WithLocalTimeout(d.cfg.ConnectTimeout))}
	l := golibvirt.NewWithDialer(dialer)
	cctx, ccancel := context.WithCancel(context.Background())
	c := &conn{l: l, gone: make(chan struct{}), cancel: ccancel}

	type result struct {
		evs <-chan golibvirt.DomainEventLifecycleMsg
		err error
	}
	resc := make(chan result, 1)
	go func() {
		if err := l.ConnectToURI(golibvirt.ConnectURI(d.cfg.URI)); err != nil {
			resc <- result{err: err}
			return
		}
		evs, err := l.LifecycleEvents(cctx)
		if err != nil {
			resc <- result{err: fmt.Errorf("subscribe to lifecycle events: %w", err)}
			return
		}
		resc <- result{evs: evs}
	}()
	var res result
	select {
	case res = <-resc:
	case <-ctx.Done():
		c.nc = dialer.conn()
		c.drop()
		// The dial may still complete: close whatever it opens.
		go func() {
			<-resc
			if nc := dialer.conn(); nc != nil {
				_ = nc.Close()
			}
		}()
		return nil, fmt.Errorf("%w: %v", hypervisor.ErrUnavailable, ctx.Err())
	}
	c.nc = dialer.conn()
	if res.err != nil {
		c.drop()
		return nil, fmt.Errorf("%w: %v", hypervisor.ErrUnavailable, res.err)
	}
	go func() {
		select {
		case <-l.Disconnected():
		case <-cctx.Done():
		}
		close(c.gone)
	}()
	d.wg.Add(1)
	go d.readEvents(c, res.evs)

	d.mu.Lock()
	d.cur = c
	d.connects++
	d.lastError = nil
	d.bumpLocked()
	d.mu.Unlock()
	return c, nil
}

// supervise waits for the connection to be lost, then reconnects with
// backoff, until Close.
func (d *Driver) supervise(c *conn) {
	defer d.wg.Done()
	for {
		if !d.watchConn(c) {
			return
		}
		d.mu.Lock()
		if d.cur == c {
			d.cur = nil
		}
		d.bumpLocked()
		d.mu.Unlock()
		c.drop()
		d.log.Warn("lost the connection to libvirtd; reconnecting", "op", "connect", "socket", d.cfg.Socket)
		wait := d.cfg.ReconnectMin
		for {
			select {
			case <-d.closed:
				return
			case <-time.After(wait):
			}
			nc, err := d.connect(context.Background())
			if err == nil {
				c = nc
				d.log.Info("reconnected to libvirtd", "op", "connect", "socket", d.cfg.Socket)
				d.reconcile(c)
				// libvirtd re-attaches to its guests in the background after
				// a restart, and reports nothing about guests that died
				// meanwhile: look again once it has settled.
				select {
				case <-d.closed:
					return
				case <-c.gone:
					continue
				case <-time.After(d.cfg.ReconnectSettle):
					d.reconcile(c)
				}
				break
			}
			d.mu.Lock()
			d.lastError = err
			d.mu.Unlock()
			d.log.Debug("reconnect to libvirtd failed", "op", "connect", "err", err)
			wait *= 2
			if wait > d.cfg.ReconnectMax {
				wait = d.cfg.ReconnectMax
			}
		}
	}
}

// watchConn waits until the connection is lost (true) or the driver closes
// (false). Meanwhile it pings libvirtd every Heartbeat: a libvirtd that
// hangs while nobody calls it would otherwise go unnoticed, and its events
// with it.
func (d *Driver) watchConn(c *conn) bool {
	var tick <-chan time.Time
	if d.cfg.Heartbeat > 0 {
		t := time.NewTicker(d.cfg.Heartbeat)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-d.closed:
			return false
		case <-c.gone:
			return true
		case <-tick:
			ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ConnectTimeout)
			err := d.callOn(ctx, c, func(l *golibvirt.Libvirt) error {
				_, err := l.ConnectGetLibVersion()
				return err
			})
			cancel()
			if err != nil {
				d.log.Warn("libvirtd does not answer its heartbeat; dropping the connection", "op", "heartbeat", "err", err)
				c.drop()
			}
		}
	}
}

// readEvents forwards one connection's lifecycle events until it ends.
func (d *Driver) readEvents(c *conn, evs <-chan golibvirt.DomainEventLifecycleMsg) {
	defer d.wg.Done()
	for {
		select {
		case <-d.closed:
			return
		case msg, ok := <-evs:
			if !ok {
				// The stream ends only with its connection: make sure the
				// supervisor notices.
				c.drop()
				return
			}
			kind, reason, ok := lifecycleEvent(msg.Event, msg.Detail)
			d.log.Debug("libvirt lifecycle event", "guest", msg.Dom.Name, "event", msg.Event, "detail", msg.Detail)
			if exitExplained(msg.Event, msg.Detail) {
				d.mu.Lock()
				d.quiet[msg.Dom.Name] = true
				d.mu.Unlock()
			}
			if !ok {
				d.bump()
				continue
			}
			if kind == hypervisor.EventResumed && reason == "unpaused" && !d.wasPaused(msg.Dom.Name) {
				// libvirt boots a guest paused and resumes it: not news.
				d.bump()
				continue
			}
			d.emit(hypervisor.Event{Guest: msg.Dom.Name, Kind: kind, Reason: reason, At: d.cfg.Now()})
		}
	}
}

// emit records ev in the driver's view and delivers it. A run of a guest
// ends once: a second report of the same end (the qemu watcher's, then
// libvirt's) is dropped.
func (d *Driver) emit(ev hypervisor.Event) {
	d.mu.Lock()
	switch ev.Kind {
	case hypervisor.EventStarted, hypervisor.EventResumed:
		d.running[ev.Guest] = true
		delete(d.paused, ev.Guest)
		delete(d.ended, ev.Guest)
		delete(d.quiet, ev.Guest)
		delete(d.exited, ev.Guest)
	case hypervisor.EventPaused:
		d.running[ev.Guest] = true
		d.paused[ev.Guest] = true
	case hypervisor.EventStopped, hypervisor.EventCrashed, hypervisor.EventMigrated:
		if d.ended[ev.Guest] {
			d.bumpLocked()
			d.mu.Unlock()
			d.log.Debug("run end already reported", "guest", ev.Guest, "event", string(ev.Kind), "reason", ev.Reason)
			return
		}
		d.ended[ev.Guest] = true
		delete(d.running, ev.Guest)
		delete(d.paused, ev.Guest)
	}
	d.since[ev.Guest] = ev.At
	d.bumpLocked()
	d.mu.Unlock()
	if ev.Kind == hypervisor.EventStarted || ev.Kind == hypervisor.EventResumed {
		d.watchQEMU(ev.Guest)
	}
	d.log.Info("guest lifecycle event", "guest", ev.Guest, "event", string(ev.Kind), "reason", ev.Reason)
	d.deliver(ev)
}

// deliver queues ev without ever blocking the driver: when the consumer
// falls eventsBuffer events behind, the oldest is dropped (and logged).
func (d *Driver) deliver(ev hypervisor.Event) {
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	select {
	case <-d.closed:
		return
	default:
	}
	for {
		select {
		case d.events <- ev:
			return
		default:
		}
		select {
		case old := <-d.events:
			d.log.Error("event consumer too slow; dropped an event", "guest", old.Guest, "event", string(old.Kind))
		default:
		}
	}
}

// emitEnded reports that a guest we stopped no longer runs, unless its end
// was reported already.
func (d *Driver) emitEnded(name, reason string) {
	d.mu.Lock()
	known := d.running[name] && !d.ended[name]
	d.mu.Unlock()
	if known {
		d.emit(hypervisor.Event{Guest: name, Kind: hypervisor.EventStopped, Reason: reason, At: d.cfg.Now()})
	}
}

// reconcile reports what happened while libvirtd was unreachable: guests
// that stopped (as crashed: nobody saw how) and guests that started.
func (d *Driver) reconcile(c *conn) {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.CallTimeout)
	defer cancel()
	now, err := d.list(ctx, c)
	if err != nil {
		d.log.Warn("list guests after reconnecting", "op", "reconcile", "err", err)
		return
	}
	d.mu.Lock()
	before := make(map[string]bool, len(d.running))
	for k := range d.running {
		before[k] = true
	}
	d.mu.Unlock()
	after := map[string]bool{}
	for _, s := range now {
		after[s.Name] = true
		if !before[s.Name] {
			d.emit(hypervisor.Event{Guest: s.Name, Kind: hypervisor.EventStarted, Reason: "found-after-reconnect", At: d.cfg.Now()})
		}
	}
	for name := range before {
		if after[name] {
			continue
		}
		d.mu.Lock()
		expected := d.quiet[name]
		d.mu.Unlock()
		if expected {
			d.emit(hypervisor.Event{Guest: name, Kind: hypervisor.EventStopped, Reason: "stopped-while-unobserved", At: d.cfg.Now()})
		} else {
			d.emit(hypervisor.Event{Guest: name, Kind: hypervisor.EventCrashed, Reason: "gone-after-reconnect", At: d.cfg.Now()})
		}
	}
}

// wasPaused reports whether the driver last reported the guest paused.
func (d *Driver) wasPaused(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.paused[name]
}

func (d *Driver) bump() {
	d.mu.Lock()
	d.bumpLocked()
	d.mu.Unlock()
}

func (d *Driver) bumpLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// current returns the open connection and a channel closed at the next
// change, or ErrUnavailable.
func (d *Driver) current() (*conn, <-chan struct{}, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur == nil || !d.cur.usable() {
		err := d.lastError
		if err == nil {
			err = errors.New("not connected")
		}
		select {
		case <-d.closed:
			return nil, d.changed, fmt.Errorf("%w: the driver is closed", hypervisor.ErrUnavailable)
		default:
		}
		if errors.Is(err, hypervisor.ErrUnavailable) {
			return nil, d.changed, err
		}
		return nil, d.changed, fmt.Errorf("%w: %v", hypervisor.ErrUnavailable, err)
	}
	return d.cur, d.changed, nil
}

// call runs fn on the current connection under ctx's deadline (or
// CallTimeout). When the deadline passes first, the connection is dropped so
// that a hung libvirtd cannot hold the caller; the driver reconnects. A
// cancelled ctx only abandons the call.
func (d *Driver) call(ctx context.Context, fn func(l *golibvirt.Libvirt) error) error {
	c, _, err := d.current()
	if err != nil {
		return err
	}
	return d.callOn(ctx, c, fn)
}

func (d *Driver) callOn(ctx context.Context, c *conn, fn func(l *golibvirt.Libvirt) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.cfg.CallTimeout)
		defer cancel()
	}
	errc := make(chan error, 1)
	go func() { errc <- fn(c.l) }()
	select {
	case err := <-errc:
		if err != nil {
			select {
			case <-c.gone:
				return fmt.Errorf("%w: connection lost: %v", hypervisor.ErrUnavailable, err)
			default:
			}
		}
		return err
	case <-ctx.Done():
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// The caller gave up; libvirtd is not to blame. The reply,
			// when it comes, is dropped.
			return ctx.Err()
		}
		d.log.Warn("libvirt call overran its deadline; dropping the connection", "op", "call", "err", ctx.Err())
		c.drop()
		return fmt.Errorf("%w: libvirtd did not answer in time: %v", hypervisor.ErrUnavailable, ctx.Err())
	}
}

// lookup finds a domain by name; ErrNotFound when libvirt has none.
func lookup(l *golibvirt.Libvirt, name string) (golibvirt.Domain, error) {
	dom, err := l.DomainLookupByName(name)
	if err != nil {
		if golibvirt.IsNotFound(err) {
			return dom, hypervisor.ErrNotFound
		}
		return dom, err
	}
	return dom, nil
}

// Start defines the guest (keeping the UUID of an existing definition of
// the same name) and boots it.
func (d *Driver) Start(ctx context.Context, def guestdef.Definition) error {
	name := def.Name
	wrap := func(err error) error { return fmt.Errorf("start guest %q: %w", name, err) }
	if err := def.Validate(); err != nil {
		return wrap(err)
	}
	d.log.Info("starting guest", "guest", name, "op", "start")
	for {
		err := d.start(ctx, def)
		if !errors.Is(err, errCatchingUp) {
			if err != nil {
				return wrap(err)
			}
			d.log.Info("started guest", "guest", name, "op", "start")
			return nil
		}
		// Its qemu is gone but libvirt has not noticed yet (it waits for
		// the process to be reaped): wait for libvirt to catch up.
		select {
		case <-ctx.Done():
			return wrap(fmt.Errorf("libvirt still reports the guest's exited qemu as running: %w", ctx.Err()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// handshakeTries is how many times a migration whose peer-to-peer
// connection failed its TLS handshake is tried (handshakeFailed).
const handshakeTries = 3

// handshakeFailed says whether a migration call failed in the TLS
// handshake of libvirt's connection to the target's libvirtd, before any of
// the guest was sent (a failback to a host whose agent had just started,
// and made its libvirtd reload its certificates, failed so, and a failed
// failback waits for the next host to come up).
func handshakeFailed(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "Unable to read TLS confirmation") || strings.Contains(msg, "TLS handshake failed")
}

// errCatchingUp says libvirt still reports as active a guest whose qemu
// process the driver saw exit.
var errCatchingUp = errors.New("libvirt has not caught up with the guest's exit")

func (d *Driver) start(ctx context.Context, def guestdef.Definition) error {
	name := def.Name
	return d.call(ctx, func(l *golibvirt.Libvirt) error {
		uuid := ""
		dom, err := lookup(l, name)
		switch {
		case err == nil:
			st, reason, err := l.DomainGetState(dom, 0)
			if err != nil {
				return fmt.Errorf("read its state: %w", err)
			}
			if s, _ := domainState(st, reason); active(s) {
				if d.qemuGone(name) {
					return errCatchingUp
				}
				return hypervisor.ErrAlreadyRunning
			}
			uuid = formatUUID(dom.UUID)
		case !errors.Is(err, hypervisor.ErrNotFound):
			return fmt.Errorf("look it up: %w", err)
		}
		xml, err := DomainXML(def, d.domainType, uuid)
		if err != nil {
			return err
		}
		dom, err = l.DomainDefineXMLFlags(xml, 0)
		if err != nil {
			return fmt.Errorf("define it: %w", err)
		}
		if _, err := l.DomainCreateWithFlags(dom, 0); err != nil {
			return fmt.Errorf("boot it: %w", err)
		}
		return nil
	})
}

// Stop shuts the guest down through ACPI, waits up to timeout for it to go,
// then destroys it. It returns nil once the guest no longer runs (also when
// it was not running).
func (d *Driver) Stop(ctx context.Context, name string, timeout time.Duration) (err error) {
	done := d.expectExit(name)
	defer func() { done(err != nil) }()
	wrap := func(err error) error { return fmt.Errorf("stop guest %q: %w", name, err) }
	var running bool
	err = d.call(ctx, func(l *golibvirt.Libvirt) error {
		dom, err := lookup(l, name)
		if err != nil {
			return err
		}
		st, reason, err := l.DomainGetState(dom, 0)
		if err != nil {
			return err
		}
		if s, _ := domainState(st, reason); !active(s) {
			return nil
		}
		running = true
		if err := l.DomainShutdownFlags(dom, golibvirt.DomainShutdownAcpiPowerBtn); err != nil {
			// Not fatal: the destroy below still stops it.
			d.log.Warn("ACPI shutdown request failed", "guest", name, "op", "stop", "err", err)
		}
		return nil
	})
	if errors.Is(err, hypervisor.ErrNotFound) {
		return nil
	}
	if err != nil {
		return wrap(err)
	}
	if !running {
		return nil
	}
	gone, err := d.waitInactive(ctx, name, timeout)
	if err != nil {
		return wrap(err)
	}
	if gone {
		d.log.Info("guest shut down", "guest", name, "op", "stop")
		d.emitEnded(name, "shutdown")
		return nil
	}
	d.log.Warn("guest ignored the shutdown request; forcing it off", "guest", name, "op", "stop", "timeout", timeout)
	if err := d.destroy(ctx, name); err != nil {
		return wrap(err)
	}
	d.emitEnded(name, "destroyed")
	return nil
}

// Kill forces the guest off at once. Killing a guest that does not run is
// not an error.
func (d *Driver) Kill(ctx context.Context, name string) error {
	done := d.expectExit(name)
	if err := d.destroy(ctx, name); err != nil {
		done(true)
		return fmt.Errorf("kill guest %q: %w", name, err)
	}
	done(false)
	// libvirt's own event may be missing (right after a libvirtd restart it
	// sometimes is); a run ends once, so whichever comes second is dropped.
	d.emitEnded(name, "destroyed")
	d.log.Info("killed guest", "guest", name, "op", "kill")
	return nil
}

func (d *Driver) destroy(ctx context.Context, name string) error {
	err := d.call(ctx, func(l *golibvirt.Libvirt) error {
		dom, err := lookup(l, name)
		if err != nil {
			return err
		}
		err = l.DomainDestroyFlags(dom, 0)
		if err == nil {
			return nil
		}
		// Already off is fine.
		st, reason, serr := l.DomainGetState(dom, 0)
		if serr == nil {
			if s, _ := domainState(st, reason); !active(s) {
				return nil
			}
		}
		return err
	})
	if errors.Is(err, hypervisor.ErrNotFound) {
		return nil
	}
	return err
}

// waitInactive waits until the guest no longer runs (true) or timeout passes
// (false). It wakes on every lifecycle event and checks at least every
// 250ms, so it also works across a reconnection.
func (d *Driver) waitInactive(ctx context.Context, name string, timeout time.Duration) (bool, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		_, changed, _ := d.current()
		st, err := d.Status(ctx, name)
		switch {
		case errors.Is(err, hypervisor.ErrNotFound):
			return true, nil
		case err == nil && !active(st.State):
			return true, nil
		case err != nil && !errors.Is(err, hypervisor.ErrUnavailable):
			return false, err
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-deadline.C:
			return false, nil
		case <-changed:
		case <-tick.C:
		}
	}
}

// Status reports one guest. A guest libvirt still has defined but does not
// run reports Shutoff with the reason; one libvirt does not know is
// ErrNotFound.
func (d *Driver) Status(ctx context.Context, name string) (hypervisor.Status, error) {
	var st hypervisor.Status
	err := d.call(ctx, func(l *golibvirt.Libvirt) error {
		dom, err := lookup(l, name)
		if err != nil {
			return err
		}
		s, reason, err := l.DomainGetState(dom, 0)
		if err != nil {
			if golibvirt.IsNotFound(err) {
				return hypervisor.ErrNotFound
			}
			return err
		}
		st = d.status(name, s, reason)
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("status of guest %q: %w", name, err)
	}
	return st, nil
}

func (d *Driver) status(name string, s, reason int32) hypervisor.Status {
	state, why := domainState(s, reason)
	st := hypervisor.Status{Name: name, State: state, Reason: why}
	d.mu.Lock()
	st.Since = d.since[name]
	d.mu.Unlock()
	if active(state) {
		st.PID = d.qemuPID(name)
		if d.qemuGone(name) {
			// libvirt lags behind the process's exit; say what is true.
			st.State, st.Reason, st.PID = hypervisor.Shutoff, "qemu-exited", 0
			return st
		}
		d.watchQEMU(name)
	}
	return st
}

// qemuPID reads libvirt's pid file for the guest's qemu; 0 when unknown.
func (d *Driver) qemuPID(name string) int {
	b, err := os.ReadFile(filepath.Join(d.cfg.QEMUPIDDir, name+".pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// List reports every active guest (running, paused, or migrating in), so an
// agent that restarts can adopt them.
func (d *Driver) List(ctx context.Context) ([]hypervisor.Status, error) {
	c, _, err := d.current()
	if err != nil {
		return nil, fmt.Errorf("list guests: %w", err)
	}
	out, err := d.list(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("list guests: %w", err)
	}
	d.mu.Lock()
	for _, s := range out {
		d.running[s.Name] = true
	}
	d.mu.Unlock()
	return out, nil
}

func (d *Driver) list(ctx context.Context, c *conn) ([]hypervisor.Status, error) {
	var out []hypervisor.Status
	err := d.callOn(ctx, c, func(l *golibvirt.Libvirt) error {
		doms, _, err := l.ConnectListAllDomains(1, golibvirt.ConnectListDomainsActive)
		if err != nil {
			return err
		}
		for _, dom := range doms {
			s, reason, err := l.DomainGetState(dom, 0)
			if err != nil {
				if golibvirt.IsNotFound(err) {
					continue // it went away meanwhile
				}
				return fmt.Errorf("state of guest %q: %w", dom.Name, err)
			}
			st := d.status(dom.Name, s, reason)
			if active(st.State) {
				out = append(out, st)
			}
		}
		return nil
	})
	return out, err
}

// PrepareIncoming returns this host's libvirt URI: with peer-to-peer
// migration, the target's libvirtd prepares the incoming guest itself.
func (d *Driver) PrepareIncoming(ctx context.Context, def guestdef.Definition, opts hypervisor.IncomingOptions) (hypervisor.MigrationTarget, error) {
	if d.cfg.MigrationURI == "" {
		return hypervisor.MigrationTarget{}, fmt.Errorf("prepare incoming migration of guest %q: this host has no migration URI: set the libvirt driver's migration URI (e.g. qemu+tcp://ADDR/system)", def.Name)
	}
	if _, _, err := d.current(); err != nil {
		return hypervisor.MigrationTarget{}, fmt.Errorf("prepare incoming migration of guest %q: %w", def.Name, err)
	}
	if d.tls && opts.TLS {
		if err := d.refreshTLS(); err != nil {
			return hypervisor.MigrationTarget{}, fmt.Errorf("prepare incoming migration of guest %q: %w", def.Name, err)
		}
	}
	if err := d.refreshPKI(ctx); err != nil {
		return hypervisor.MigrationTarget{}, fmt.Errorf("prepare incoming migration of guest %q: %w", def.Name, err)
	}
	return hypervisor.MigrationTarget{Node: d.cfg.Node, URI: d.cfg.MigrationURI, TLS: d.tls && opts.TLS}, nil
}

// RefreshPKI writes libvirt's TLS transport certificates and revocation
// list again and has libvirtd load them when they changed (the agent calls
// it when a host's certificate was revoked). A failed reload is logged.
func (d *Driver) RefreshPKI(ctx context.Context) error { return d.refreshPKI(ctx) }

// PKIStale reports whether libvirtd has not loaded the files RefreshPKI
// last wrote (its reload failed): a RefreshPKI tries it again.
func (d *Driver) PKIStale() bool {
	d.tlsMu.Lock()
	defer d.tlsMu.Unlock()
	return d.pkiStale
}

// refreshPKI writes libvirt's TLS transport certificates again
// (Config.PKIDir) and, when this host's libvirtd serves qemu+tls with
// them and they changed, has it load them.
func (d *Driver) refreshPKI(ctx context.Context) error {
	if d.cfg.PKIDir == "" {
		return nil
	}
	d.tlsMu.Lock()
	defer d.tlsMu.Unlock()
	changed, err := writePKI(d.cfg.PKIDir, d.cfg.TLSCA, d.cfg.TLSCert, d.cfg.TLSKey, d.cfg.TLSCRL)
	if err != nil || !(changed || d.pkiStale) || !strings.HasPrefix(d.cfg.MigrationURI, "qemu+tls:") {
		return err
	}
	// A libvirtd that serves older certificates still answers the peers
	// that trust them (a rotation trusts both CAs until its last phase):
	// a failed reload is logged and tried again at the next refresh, not
	// an error of the migration.
	d.pkiStale = true
	if err := linkDefaults(d.pkiRoot, d.cfg.PKIDir); err != nil {
		d.log.Warn("libvirtd keeps serving its earlier TLS certificates", "op", "tls", "err", err)
		return nil
	}
	va := d.cfg.VirtAdmin
	if va == "" {
		va = "virt-admin"
	}
	if err := reloadLibvirtdTLS(ctx, va, d.cfg.Socket); err != nil {
		d.log.Warn("libvirtd keeps serving its earlier TLS certificates", "op", "tls", "err", err)
		return nil
	}
	d.pkiStale = false
	d.log.Info("libvirtd loaded its TLS certificates again", "dir", d.cfg.PKIDir)
	return nil
}

// refreshTLS writes the migration credentials again from the agent's
// files: libvirt's QEMU reads them at each migration, and the host's
// certificate (renewal) and the trust bundle (CA rotation) change.
func (d *Driver) refreshTLS() error {
	d.tlsMu.Lock()
	defer d.tlsMu.Unlock()
	if err := hypervisor.WriteTLSCreds(d.cfg.MigrationTLSDir, d.cfg.TLSCA, d.cfg.TLSCert, d.cfg.TLSKey, d.cfg.TLSCRL, d.cfg.TLSGroup); err != nil {
		return fmt.Errorf("migration TLS credentials %s: %w", d.cfg.MigrationTLSDir, err)
	}
	return nil
}

// Migrate live-migrates a running guest peer to peer to target.URI (a
// libvirt URI the source libvirtd can reach). The destination keeps a
// persistent definition; the source's definition is removed once the guest
// runs there. On failure or cancellation the job is aborted and the guest
// keeps running here; the error says whether it still does.
func (d *Driver) Migrate(ctx context.Context, name string, target hypervisor.MigrationTarget, progress func(hypervisor.Progress)) (err error) {
	wrap := func(err error) error {
		return fmt.Errorf("live-migrate guest %q to node %q (%s): %w", name, target.Node, target.URI, err)
	}
	if target.URI == "" {
		return wrap(errors.New("the target has no libvirt URI"))
	}
	c, _, err := d.current()
	if err != nil {
		return wrap(err)
	}
	if err := d.refreshPKI(ctx); err != nil {
		return wrap(err)
	}
	expected := d.expectExit(name)
	defer func() { expected(err != nil) }()
	var dom golibvirt.Domain
	flags := golibvirt.MigrateLive | golibvirt.MigratePeer2peer | golibvirt.MigratePersistDest | golibvirt.MigrateAbortOnError
	var params []golibvirt.TypedParam
	switch {
	case d.tls && target.TLS:
		if err := d.refreshTLS(); err != nil {
			return wrap(err)
		}
		// QEMU checks the target's certificate against the cluster CA and
		// this name (tls-hostname), as the QEMU driver does.
		flags |= golibvirt.MigrateTLS
		params = append(params, golibvirt.TypedParam{Field: golibvirt.MigrateParamTLSDestination, Value: *golibvirt.NewTypedParamValueString(target.Node)})
	case d.tls:
		d.log.Warn("migrating without TLS: the target does not offer it", "guest", name, "op", "migrate", "target", target.Node)
	case target.TLS:
		d.log.Warn("migrating without TLS: this host has no migration TLS credentials", "guest", name, "op", "migrate", "target", target.Node)
	}
	err = d.callOn(ctx, c, func(l *golibvirt.Libvirt) error {
		var err error
		dom, err = lookup(l, name)
		if err != nil {
			return err
		}
		s, reason, err := l.DomainGetState(dom, 0)
		if err != nil {
			return err
		}
		if st, _ := domainState(s, reason); st != hypervisor.Running {
			return fmt.Errorf("it is %s, not running", st)
		}
		if d.cfg.StrictStorageCheck {
			return nil
		}
		xml, err := l.DomainGetXMLDesc(dom, 0)
		if err != nil {
			return err
		}
		uncached, err := DisksUncached(xml)
		if err != nil {
			return err
		}
		if uncached {
			flags |= golibvirt.MigrateUnsafe
		}
		return nil
	})
	if err != nil {
		return wrap(err)
	}

	done := make(chan error, 1)
	go func() {
		var err error
		for try := 1; ; try++ {
			_, err = c.l.DomainMigratePerform3Params(dom, golibvirt.OptString{target.URI}, params, nil, flags)
			if err == nil || try == handshakeTries || !handshakeFailed(err) || ctx.Err() != nil {
				break
			}
			// The target's libvirtd refused the TLS handshake of the
			// peer-to-peer connection before anything was sent (it was
			// reloading its certificates: its host's agent had just
			// started). The guest still runs here; try again shortly.
			d.log.Warn("the target's libvirtd failed the TLS handshake; trying the migration again", "guest", name, "op", "migrate", "target", target.URI, "try", try, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
		done <- err
	}()
	d.log.Info("live migration started", "guest", name, "op", "migrate", "target", target.URI, "tls", flags&golibvirt.MigrateTLS != 0)

	// Progress is read by a poller of its own: a slow answer during the
	// migration is not a hung libvirtd, and must not delay noticing the end.
	stopPoll := make(chan struct{})
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		if progress == nil {
			return
		}
		tick := time.NewTicker(d.cfg.MigrationPoll)
		defer tick.Stop()
		for {
			select {
			case <-stopPoll:
				return
			case <-tick.C:
			}
			var p hypervisor.Progress
			var got bool
			perr := d.callOn(ctx, c, func(l *golibvirt.Libvirt) error {
				typ, _, _, _, _, _, memTotal, _, memRemaining, _, _, _, err := l.DomainGetJobInfo(dom)
				if err != nil {
					return err
				}
				if typ != 0 { // 0: no job (yet, or any more)
					p, got = hypervisor.Progress{Total: int64(memTotal), Remaining: int64(memRemaining)}, true
				}
				return nil
			})
			select {
			case <-stopPoll:
				return // the migration ended meanwhile; this reading is stale
			default:
			}
			if perr == nil && got {
				progress(p)
			}
		}
	}()

	var migErr error
	select {
	case migErr = <-done:
	case <-c.gone:
		migErr = fmt.Errorf("%w: the connection to libvirtd was lost during the migration", hypervisor.ErrUnavailable)
	case <-ctx.Done():
		d.log.Warn("aborting live migration", "guest", name, "op", "migrate", "err", ctx.Err())
		actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		aerr := d.callOn(actx, c, func(l *golibvirt.Libvirt) error { return l.DomainAbortJob(dom) })
		cancel()
		var perr error
		select {
		case perr = <-done:
		case <-time.After(10 * time.Second):
		}
		switch {
		case aerr != nil:
			migErr = fmt.Errorf("cancelled (%w), and aborting the job failed: %v", ctx.Err(), aerr)
		case perr == nil:
			migErr = nil // it completed before the abort reached it
		default:
			migErr = fmt.Errorf("cancelled: %w", ctx.Err())
		}
	}
	close(stopPoll)
	<-pollDone
	if migErr != nil {
		return wrap(fmt.Errorf("%w; %s", migErr, d.sourceState(name)))
	}

	// Completed: read the downtime from the finished job, then remove the
	// source's (now inactive) definition so only the target defines it.
	var downtime time.Duration
	var total int64
	fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = d.callOn(fctx, c, func(l *golibvirt.Libvirt) error {
		_, params, err := l.DomainGetJobStats(dom, golibvirt.DomainJobStatsCompleted)
		if err != nil {
			d.log.Debug("read completed migration stats", "guest", name, "err", err)
		} else {
			if v, ok := typedUint(params, golibvirt.DomainJobDowntime); ok {
				downtime = time.Duration(v) * time.Millisecond
			}
			if v, ok := typedUint(params, golibvirt.DomainJobMemoryTotal); ok {
				total = int64(v)
			}
		}
		if err := l.DomainUndefineFlags(dom, 0); err != nil && !golibvirt.IsNotFound(err) {
			d.log.Warn("undefine the source's copy after migration", "guest", name, "op", "migrate", "err", err)
		}
		return nil
	})
	if progress != nil {
		progress(hypervisor.Progress{Total: total, Remaining: 0, Downtime: downtime})
	}
	d.log.Info("live migration completed", "guest", name, "op", "migrate", "target", target.URI, "downtime", downtime)
	return nil
}

// sourceState describes where the guest stands here after a failed
// migration, for the error message.
func (d *Driver) sourceState(name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := d.Status(ctx, name)
	if err != nil {
		return fmt.Sprintf("its state here is unknown (%v)", err)
	}
	if st.State == hypervisor.Paused && st.Reason == "migration" {
		return "it is still paused here by the migration"
	}
	if active(st.State) {
		return fmt.Sprintf("it still runs here (%s)", st.State)
	}
	return fmt.Sprintf("it is %s here (%s): restart it", st.State, st.Reason)
}

// typedUint reads an unsigned (or signed) integer typed parameter.
func typedUint(params []golibvirt.TypedParam, field string) (uint64, bool) {
	for _, p := range params {
		if p.Field != field {
			continue
		}
		switch v := p.Value.I.(type) {
		case uint64:
			return v, true
		case int64:
			return uint64(v), true
		case uint32:
			return uint64(v), true
		case int32:
			return uint64(v), true
		}
	}
	return 0, false
}

func formatUUID(u golibvirt.UUID) string {
	b := u[:]
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// AgentCommand implements hypervisor.GuestAgent through libvirt's own
// connection to the guest agent (virDomainQemuAgentCommand). libvirt is told
// to give up a little before ctx's deadline, and an overrun of the guest (a
// hung kernel) never counts against libvirtd: the call is abandoned, the
// connection kept.
func (d *Driver) AgentCommand(ctx context.Context, name string, cmd []byte) (json.RawMessage, error) {
	wait := int32(5)
	if dl, ok := ctx.Deadline(); ok {
		wait = int32(max(1, time.Until(dl)/time.Second))
	}
	callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(wait)*time.Second+d.cfg.ConnectTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	var out golibvirt.OptString
	err := d.call(callCtx, func(l *golibvirt.Libvirt) error {
		dom, err := lookup(l, name)
		if err != nil {
			return err
		}
		out, err = l.QEMUDomainAgentCommand(dom, string(cmd), wait, 0)
		return err
	})
	if err == nil && len(out) == 0 {
		err = errors.New("libvirt returned no answer")
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("guest agent did not answer: %w", ctx.Err())
		}
		return nil, fmt.Errorf("guest agent of %q: %w", name, err)
	}
	ret, err := guestagent.Decode([]byte(out[0]))
	if err != nil {
		return nil, fmt.Errorf("guest agent of %q: %w", name, err)
	}
	return ret, nil
}

// liveXML reads a running guest's live domain XML.
func (d *Driver) liveXML(ctx context.Context, name string) (*libvirtxml.Domain, error) {
	var desc string
	err := d.call(ctx, func(l *golibvirt.Libvirt) error {
		dom, err := lookup(l, name)
		if err != nil {
			return err
		}
		desc, err = l.DomainGetXMLDesc(dom, 0)
		return err
	})
	if err != nil {
		return nil, err
	}
	dom := &libvirtxml.Domain{}
	if err := dom.Unmarshal(desc); err != nil {
		return nil, fmt.Errorf("read its domain XML: %w", err)
	}
	return dom, nil
}

// OpenDisplay implements hypervisor.Display: the VNC unix socket libvirt
// gave the guest (from the live domain XML).
func (d *Driver) OpenDisplay(ctx context.Context, name string) (net.Conn, error) {
	dom, err := d.liveXML(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("display of %q: %w", name, err)
	}
	path := ""
	if dom.Devices != nil {
		for _, g := range dom.Devices.Graphics {
			if g.VNC == nil {
				continue
			}
			path = g.VNC.Socket
			for _, l := range g.VNC.Listeners {
				if l.Socket != nil && l.Socket.Socket != "" {
					path = l.Socket.Socket
				}
			}
		}
	}
	if path == "" {
		return nil, fmt.Errorf("display of %q: the guest has no VNC display on a unix socket (display: vnc)", name)
	}
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("display of %q: %w", name, err)
	}
	return conn, nil
}

// OpenConsole implements hypervisor.Console: it opens the pty libvirt gave
// the guest's first serial port (from the live domain XML), in raw mode.
func (d *Driver) OpenConsole(ctx context.Context, name string) (net.Conn, error) {
	dom, err := d.liveXML(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("console of %q: %w", name, err)
	}
	path := ""
	if dom.Devices != nil {
		for _, s := range dom.Devices.Serials {
			if s.Source != nil && s.Source.Pty != nil && s.Source.Pty.Path != "" {
				path = s.Source.Pty.Path
				break
			}
		}
	}
	if path == "" {
		return nil, fmt.Errorf("console of %q: its first serial port is not a pty (a guest defined before consoles; restart it)", name)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("console of %q: open %s: %w", name, path, err)
	}
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err == nil {
		// cfmakeraw: no echo, no line editing, 8-bit clean.
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB
		t.Cflag |= unix.CS8
		t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
		err = unix.IoctlSetTermios(fd, unix.TCSETS, t)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("console of %q: raw mode on %s: %w", name, path, err)
	}
	return &ptyConn{File: os.NewFile(uintptr(fd), path)}, nil
}

// ptyConn is a pty as a net.Conn (the console's transport).
type ptyConn struct{ *os.File }

func (p *ptyConn) LocalAddr() net.Addr  { return ptyAddr(p.Name()) }
func (p *ptyConn) RemoteAddr() net.Addr { return ptyAddr(p.Name()) }

type ptyAddr string

func (a ptyAddr) Network() string { return "pty" }
func (a ptyAddr) String() string  { return string(a) }
