// Package hostctl owns what one host's agent does to its guests: it carries
// out the manager's orders (start, stop, kill, receive a migration, migrate
// away) through a hypervisor.Driver and reports every guest's state back. It
// keeps no cluster state of its own: the manager decides, hostctl executes and
// tells the truth about what the hypervisor did.
//
// Orders for one guest run one at a time, in arrival order; orders for
// different guests run in parallel. An order is identified by its ID and is
// carried out at most once, so a replayed watch after an agent restart does
// not start a guest twice.
package hostctl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/hypervisor"
)

// Op is what an order asks for.
type Op string

const (
	OpStart   Op = "start"   // boot the guest here
	OpStop    Op = "stop"    // graceful stop, forced after StopTimeout
	OpKill    Op = "kill"    // force off at once (losing the cluster, fencing ourselves)
	OpReceive Op = "receive" // get ready for an incoming live migration
	OpMigrate Op = "migrate" // live-migrate to Target
	// OpFail is the host's own order (never the manager's): the guest
	// failed its health checks; kill it and report it crashed with Reason.
	OpFail Op = "fail"
)

// Order is one instruction from the manager to this host about one guest.
type Order struct {
	ID          string                     `json:"id"`
	Guest       string                     `json:"guest"`
	Op          Op                         `json:"op"`
	Def         guestdef.Definition        `json:"def"`
	Target      hypervisor.MigrationTarget `json:"target,omitempty"`
	StopTimeout time.Duration              `json:"stop_timeout,omitempty"`
	// Reason is why an OpFail kills the guest.
	Reason string `json:"reason,omitempty"`
	// MigrationTLS: an OpReceive may listen with TLS, every host having
	// model.FeatureMigrationTLS (managers older than feature levels never
	// set it: plain TCP, which every source speaks).
	MigrationTLS bool `json:"migration_tls,omitempty"`
}

// GuestState is a guest's state on this host as reported to the manager.
type GuestState string

const (
	Running  GuestState = "running"
	Starting GuestState = "starting"
	Stopping GuestState = "stopping"
	Stopped  GuestState = "stopped"  // not running here (cleanly)
	Crashed  GuestState = "crashed"  // died unexpectedly
	Paused   GuestState = "paused"   // e.g. I/O error
	Incoming GuestState = "incoming" // ready to receive a live migration
	Leaving  GuestState = "leaving"  // migrating away; still running here
)

// Result is the outcome of the last order for a guest.
type Result string

const (
	ResultPending Result = "pending"
	ResultOK      Result = "ok"
	ResultFailed  Result = "failed"
)

// Report is one guest's state on this host. The agent stores it under its
// lease; the manager reads it.
type Report struct {
	Guest   string                     `json:"guest"`
	State   GuestState                 `json:"state"`
	Reason  string                     `json:"reason,omitempty"`
	OrderID string                     `json:"order_id,omitempty"` // last order seen
	Op      Op                         `json:"op,omitempty"`
	Result  Result                     `json:"result,omitempty"`
	Error   string                     `json:"error,omitempty"`
	Target  hypervisor.MigrationTarget `json:"target,omitempty"` // for a ready OpReceive
	// Progress of an outgoing migration, in bytes.
	Total     int64 `json:"total,omitempty"`
	Remaining int64 `json:"remaining,omitempty"`
	// Downtime is how long a finished outgoing migration paused the guest,
	// when the hypervisor reports it.
	Downtime time.Duration `json:"downtime,omitempty"`
	At       time.Time     `json:"at"`
	// Health is the last result of each of the guest's health checks
	// while they run here (package health); the host agent fills it in
	// when it publishes, and publishes again when a check changes status.
	Health []health.Result `json:"health,omitempty"`
}

// Publisher receives every new report. Remove is called when a guest no
// longer exists here and no order about it is pending.
type Publisher interface {
	Publish(Report)
	Remove(guest string)
}

// Watcher runs the health checks of the guests running here (package
// health): Watch when a guest starts running here, Unwatch when it stops
// running (stopped, crashed, paused, leaving).
type Watcher interface {
	Watch(def guestdef.Definition)
	Unwatch(name string)
}

// Config wires a Controller.
type Config struct {
	Driver    hypervisor.Driver
	Publisher Publisher
	// Health, when set, is told which guests run here.
	Health Watcher
	Logger *slog.Logger
	Now    func() time.Time
	// CallTimeout bounds every driver call but migrations and stops.
	CallTimeout time.Duration
	// MigrateTimeout bounds a live migration.
	MigrateTimeout time.Duration
	// ProgressEvery is how often an outgoing live migration's progress is
	// published (a store write, replicated, that the manager reads): at
	// most once per period, however often the driver reads it (every 50 ms
	// on QEMU, 200 ms on libvirt). Default 1s. The migration's result is
	// published at once.
	ProgressEvery time.Duration
	// RecheckEvery is how often the hypervisor is asked again about guests
	// whose state it did not give after a failed order. Default 2s.
	RecheckEvery time.Duration
	// CheckDef, when set, vets a definition just before the hypervisor
	// starts it or gets ready to receive it (every file inside a storage
	// pool, after resolving symlinks); an error fails the order.
	CheckDef func(ctx context.Context, def guestdef.Definition) error
}

// Controller carries out orders on one host.
type Controller struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	guests map[string]*guest // guarded by mu
	done   map[string]bool   // order IDs already carried out; guarded by mu
	fails  int               // OpFail orders made; guarded by mu
	wg     sync.WaitGroup
}

type guest struct {
	queue  []Order // guarded by Controller.mu
	busy   bool    // a worker runs this guest's queue; guarded by Controller.mu
	report Report  // last report; guarded by Controller.mu
	// expectStop is set while an order of ours stops or moves the guest, so
	// the driver's stop event is not taken for a crash; guarded by Controller.mu.
	expectStop bool
	// def is the definition it was started or received with here (for
	// its health checks); guarded by Controller.mu.
	def     guestdef.Definition
	hasDef  bool
	watched bool // Health watches it; guarded by Controller.mu
	// unsure: its report says running only because the hypervisor did not
	// answer after a failed order (probe); Run asks again every
	// RecheckEvery until it answers. Guarded by Controller.mu.
	unsure bool
}

// New returns a Controller. Call Adopt, then Run.
func New(cfg Config) *Controller {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.MigrateTimeout == 0 {
		cfg.MigrateTimeout = 5 * time.Minute
	}
	if cfg.ProgressEvery == 0 {
		cfg.ProgressEvery = time.Second
	}
	if cfg.RecheckEvery == 0 {
		cfg.RecheckEvery = 2 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Controller{cfg: cfg, log: log, guests: map[string]*guest{}, done: map[string]bool{}}
}

// Adopt reports every guest the hypervisor already runs here, so a restarted
// agent takes them over instead of starting them again.
func (c *Controller) Adopt(ctx context.Context) ([]Report, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	list, err := c.cfg.Driver.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("adopt running guests: list %s guests: %w", c.cfg.Driver.Name(), err)
	}
	var out []Report
	for _, st := range list {
		r := Report{Guest: st.Name, State: fromHypervisor(st.State), Reason: "adopted", At: c.cfg.Now()}
		c.set(r)
		out = append(out, r)
		c.log.Info("adopted running guest", "guest", st.Name, "state", st.State)
	}
	return out, nil
}

// Run consumes the driver's lifecycle events until ctx ends, then waits for
// running orders to finish.
func (c *Controller) Run(ctx context.Context) {
	defer c.wg.Wait()
	events := c.cfg.Driver.Events()
	recheck := time.NewTicker(c.cfg.RecheckEvery)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			c.onEvent(ev)
		case <-recheck.C:
			c.recheck(ctx)
		}
	}
}

// recheck asks the hypervisor again about the guests reported running only
// because it did not answer after a failed order (unsure), once no order of
// theirs is queued. A guest it does not have is reported crashed (no
// order): the manager restarts it if it counted it running here. Kept
// "running", a failback target whose libvirtd refused connections held its
// guest as running for good, after the source that really ran it was
// fenced.
func (c *Controller) recheck(ctx context.Context) {
	c.mu.Lock()
	var names []string
	for name, g := range c.guests {
		if g.unsure && !g.busy && len(g.queue) == 0 {
			names = append(names, name)
		}
	}
	c.mu.Unlock()
	for _, name := range names {
		cctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
		st, err := c.cfg.Driver.Status(cctx, name)
		cancel()
		if err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
			continue // still no answer
		}
		c.mu.Lock()
		g := c.guestLocked(name)
		if !g.unsure || g.busy || len(g.queue) > 0 {
			c.mu.Unlock()
			continue // an order came meanwhile: its result decides
		}
		g.unsure = false
		c.mu.Unlock()
		r := Report{Guest: name, State: Crashed, Reason: "not running here: checked again once the hypervisor answered (its state was unknown after a failed order)", At: c.cfg.Now()}
		if err == nil {
			r.State, r.Reason = fromHypervisor(st.State), "checked again once the hypervisor answered"
		}
		c.log.Info("guest state checked again", "guest", name, "state", r.State)
		c.set(r)
	}
}

// Submit queues an order. An order whose ID was already carried out or queued
// is ignored.
func (c *Controller) Submit(ctx context.Context, o Order) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done[o.ID] {
		return
	}
	c.done[o.ID] = true
	g := c.guestLocked(o.Guest)
	g.queue = append(g.queue, o)
	if g.busy {
		return
	}
	g.busy = true
	c.wg.Add(1)
	go c.work(ctx, o.Guest)
}

// Reports returns the last report of every guest known here.
func (c *Controller) Reports() []Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Report, 0, len(c.guests))
	for _, g := range c.guests {
		if g.report.Guest != "" {
			out = append(out, g.report)
		}
	}
	return out
}

// Active is how many guests here are neither stopped nor crashed (running,
// or starting, stopping, leaving): what Reports would count, without
// copying them (the host side asks ten times a second).
func (c *Controller) Active() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, g := range c.guests {
		if g.report.Guest != "" && g.report.State != Stopped && g.report.State != Crashed {
			n++
		}
	}
	return n
}

// ReasonSelfFence is the reason of the report (stopped, no order) of a
// guest KillAll killed.
const ReasonSelfFence = "self-fence"

// KillAll forces every guest here off, for self-fencing when the host has
// lost the cluster. It returns the first error and goes on with the others.
func (c *Controller) KillAll(ctx context.Context) error {
	c.mu.Lock()
	names := make([]string, 0, len(c.guests))
	for name, g := range c.guests {
		if g.report.State != Stopped && g.report.State != Crashed {
			names = append(names, name)
			g.expectStop = true
		}
	}
	c.mu.Unlock()
	var first error
	for _, name := range names {
		kctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
		err := c.cfg.Driver.Kill(kctx, name)
		cancel()
		if err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
			c.log.Error("self-fence: kill guest", "guest", name, "err", err)
			if first == nil {
				first = fmt.Errorf("kill guest %q: %w", name, err)
			}
			continue
		}
		c.set(Report{Guest: name, State: Stopped, Reason: ReasonSelfFence, At: c.cfg.Now()})
	}
	return first
}

func (c *Controller) guestLocked(name string) *guest {
	g := c.guests[name]
	if g == nil {
		g = &guest{}
		c.guests[name] = g
	}
	return g
}

func (c *Controller) work(ctx context.Context, name string) {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		g := c.guests[name]
		if len(g.queue) == 0 {
			g.busy = false
			c.mu.Unlock()
			return
		}
		o := g.queue[0]
		g.queue = g.queue[1:]
		c.mu.Unlock()
		c.execute(ctx, o)
	}
}

func (c *Controller) execute(ctx context.Context, o Order) {
	log := c.log.With("guest", o.Guest, "op", string(o.Op), "order", o.ID)
	base := Report{Guest: o.Guest, OrderID: o.ID, Op: o.Op, Result: ResultPending}
	c.mu.Lock()
	c.guestLocked(o.Guest).unsure = false // this order's result decides now
	c.mu.Unlock()
	pending := func(st GuestState) {
		r := base
		r.State, r.At = st, c.cfg.Now()
		c.set(r)
	}
	finish := func(st GuestState, err error, target hypervisor.MigrationTarget) {
		r := base
		r.State, r.At, r.Target = st, c.cfg.Now(), target
		r.Result = ResultOK
		if err != nil {
			r.Result, r.Error = ResultFailed, err.Error()
			log.Warn("order failed", "err", err)
		} else {
			log.Info("order done", "state", st)
		}
		c.set(r)
	}
	call := func(d time.Duration) (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, d)
	}

	if o.Op == OpStart || o.Op == OpReceive {
		c.mu.Lock()
		g := c.guestLocked(o.Guest)
		g.def, g.hasDef = o.Def, true
		c.mu.Unlock()
	}
	switch o.Op {
	case OpFail:
		c.fail(ctx, o)
		return
	case OpStart:
		pending(Starting)
		cctx, cancel := call(c.cfg.CallTimeout)
		err := c.checkDef(cctx, o.Def)
		if err == nil {
			err = c.cfg.Driver.Start(cctx, o.Def)
		}
		cancel()
		if errors.Is(err, hypervisor.ErrAlreadyRunning) {
			err = c.replaceIncoming(ctx, o)
		}
		if err != nil {
			finish(Stopped, fmt.Errorf("start guest %q: %w", o.Guest, err), hypervisor.MigrationTarget{})
			return
		}
		finish(Running, nil, hypervisor.MigrationTarget{})
	case OpStop, OpKill:
		c.expectStop(o.Guest, true)
		pending(Stopping)
		var err error
		if o.Op == OpStop {
			timeout := o.StopTimeout
			if timeout == 0 {
				timeout = 30 * time.Second
			}
			cctx, cancel := call(timeout + c.cfg.CallTimeout)
			err = c.cfg.Driver.Stop(cctx, o.Guest, timeout)
			cancel()
		} else {
			cctx, cancel := call(c.cfg.CallTimeout)
			err = c.cfg.Driver.Kill(cctx, o.Guest)
			cancel()
		}
		if errors.Is(err, hypervisor.ErrNotFound) {
			err = nil
		}
		if err != nil {
			c.expectStop(o.Guest, false)
			finish(c.probe(ctx, o.Guest), fmt.Errorf("%s guest %q: %w", o.Op, o.Guest, err), hypervisor.MigrationTarget{})
			return
		}
		finish(Stopped, nil, hypervisor.MigrationTarget{})
	case OpReceive:
		cctx, cancel := call(c.cfg.CallTimeout)
		var target hypervisor.MigrationTarget
		err := c.checkDef(cctx, o.Def)
		if err == nil {
			target, err = c.cfg.Driver.PrepareIncoming(cctx, o.Def, hypervisor.IncomingOptions{TLS: o.MigrationTLS})
		}
		cancel()
		if err != nil {
			finish(Stopped, fmt.Errorf("prepare incoming migration of guest %q: %w", o.Guest, err), hypervisor.MigrationTarget{})
			return
		}
		finish(Incoming, nil, target)
	case OpMigrate:
		c.expectStop(o.Guest, true)
		pending(Leaving)
		cctx, cancel := call(c.cfg.MigrateTimeout)
		var downtime time.Duration
		// Progress is published at most every ProgressEvery: each
		// publication is a store write that every store member and the
		// manager handle, at the agents' priority, while the migration
		// needs the CPU; nobody needs it more often than a second.
		published := c.cfg.Now() // the Leaving report just above
		err := c.cfg.Driver.Migrate(cctx, o.Guest, o.Target, func(p hypervisor.Progress) {
			r := base
			r.State, r.At, r.Total, r.Remaining = Leaving, c.cfg.Now(), p.Total, p.Remaining
			downtime = max(downtime, p.Downtime)
			if r.At.Sub(published) < c.cfg.ProgressEvery {
				return
			}
			published = r.At
			c.set(r)
		})
		cancel()
		if err != nil {
			c.expectStop(o.Guest, false)
			finish(c.probe(ctx, o.Guest), fmt.Errorf("migrate guest %q to %q: %w", o.Guest, o.Target.Node, err), hypervisor.MigrationTarget{})
			return
		}
		base.Downtime = downtime
		finish(Stopped, nil, hypervisor.MigrationTarget{})
	default:
		finish(c.probe(ctx, o.Guest), fmt.Errorf("unknown order op %q for guest %q", o.Op, o.Guest), hypervisor.MigrationTarget{})
	}
}

// probe asks the hypervisor what state a guest is in after a failed order.
func (c *Controller) probe(ctx context.Context, name string) GuestState {
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	st, err := c.cfg.Driver.Status(cctx, name)
	c.mu.Lock()
	c.guestLocked(name).unsure = err != nil && !errors.Is(err, hypervisor.ErrNotFound)
	c.mu.Unlock()
	if errors.Is(err, hypervisor.ErrNotFound) {
		return Stopped
	}
	if err != nil {
		// Unknown: say it still runs, the safe answer (never start a copy
		// elsewhere on a guess); recheck asks again.
		return Running
	}
	return fromHypervisor(st.State)
}

func (c *Controller) expectStop(name string, v bool) {
	c.mu.Lock()
	c.guestLocked(name).expectStop = v
	c.mu.Unlock()
}

func (c *Controller) onEvent(ev hypervisor.Event) {
	c.mu.Lock()
	g := c.guestLocked(ev.Guest)
	g.unsure = false // the hypervisor told
	// An event is not the result of an order: the report carries no order.
	r := Report{Guest: ev.Guest, At: ev.At, Reason: ev.Reason}
	if r.At.IsZero() {
		r.At = c.cfg.Now()
	}
	switch ev.Kind {
	case hypervisor.EventCrashed:
		if g.expectStop {
			c.mu.Unlock()
			return // our own stop or kill; the order's result reports it
		}
		r.State = Crashed
	case hypervisor.EventStopped:
		if g.expectStop {
			c.mu.Unlock()
			return
		}
		// A stop we did not order: the guest shut itself down, or died.
		r.State = Crashed
		if r.Reason == "" {
			r.Reason = "stopped from inside the guest"
		}
	case hypervisor.EventPaused:
		r.State = Paused
	case hypervisor.EventStarted, hypervisor.EventResumed:
		r.State = Running
		if g.report.State == Running || (g.report.Result == ResultPending && (g.report.Op == OpStart || g.report.Op == OpReceive)) {
			// Nothing new: the start order's result (published just
			// before, or about to be: the order is still pending here,
			// its driver call returned but its result is not set yet)
			// says so. Publishing this report, which names no order,
			// could replace that result before it is stored, and the
			// manager would wait for it forever (seen on the bed: a
			// guest started, its QEMU running, the manager waiting).
			c.mu.Unlock()
			return
		}
	case hypervisor.EventMigrated:
		c.mu.Unlock()
		return // the migrate order reports it
	default:
		c.mu.Unlock()
		return
	}
	g.report = r
	watch := c.watchLocked(g, r)
	c.mu.Unlock()
	watch()
	c.log.Info("guest event", "guest", ev.Guest, "kind", string(ev.Kind), "reason", ev.Reason)
	c.cfg.Publisher.Publish(r)
}

func (c *Controller) set(r Report) {
	c.mu.Lock()
	g := c.guestLocked(r.Guest)
	if r.State == Running || r.State == Incoming || r.State == Starting {
		g.expectStop = false
	}
	g.report = r
	watch := c.watchLocked(g, r)
	c.mu.Unlock()
	watch()
	c.cfg.Publisher.Publish(r)
}

// watchLocked decides whether the health checks of g start or stop with its
// new report r, and returns what to tell the watcher (outside c.mu).
func (c *Controller) watchLocked(g *guest, r Report) func() {
	if c.cfg.Health == nil {
		return func() {}
	}
	switch {
	case r.State == Running && !g.watched && g.hasDef:
		g.watched = true
		def := g.def
		return func() { c.cfg.Health.Watch(def) }
	case r.State != Running && g.watched:
		g.watched = false
		return func() { c.cfg.Health.Unwatch(r.Guest) }
	}
	return func() {}
}

// SetDefinition gives the definition of a guest adopted here (after an
// agent restart the driver runs it, but no order said what it is), so its
// health checks run; they start afresh, with their start grace.
func (c *Controller) SetDefinition(def guestdef.Definition) {
	c.mu.Lock()
	g := c.guestLocked(def.Name)
	if g.hasDef {
		c.mu.Unlock()
		return
	}
	g.def, g.hasDef = def, true
	watch := c.watchLocked(g, g.report)
	c.mu.Unlock()
	watch()
}

// Fail kills a guest that failed its health checks and reports it crashed
// with reason, in turn with the guest's orders: if an order stopped or moved
// it meanwhile, nothing happens.
func (c *Controller) Fail(ctx context.Context, name, reason string) {
	c.mu.Lock()
	c.fails++
	id := fmt.Sprintf("health-%d", c.fails)
	c.mu.Unlock()
	c.Submit(ctx, Order{ID: id, Guest: name, Op: OpFail, Reason: reason})
}

// fail carries out an OpFail.
func (c *Controller) fail(ctx context.Context, o Order) {
	c.mu.Lock()
	state := c.guestLocked(o.Guest).report.State
	c.mu.Unlock()
	if state != Running {
		c.log.Info("health failure of a guest that no longer runs here; nothing to do", "guest", o.Guest, "state", state)
		return
	}
	c.log.Warn("killing a guest that failed its health checks", "guest", o.Guest, "reason", o.Reason)
	c.expectStop(o.Guest, true)
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	err := c.cfg.Driver.Kill(cctx, o.Guest)
	cancel()
	if err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
		if st := c.probe(ctx, o.Guest); st != Stopped && st != Crashed {
			// Still running: saying it crashed could start a second copy
			// elsewhere. Keep reporting it running; the checks start again.
			c.expectStop(o.Guest, false)
			c.log.Error("could not kill a guest that failed its health checks", "guest", o.Guest, "err", err)
			c.mu.Lock()
			g := c.guestLocked(o.Guest)
			g.watched = false
			watch := c.watchLocked(g, g.report)
			c.mu.Unlock()
			watch()
			return
		}
	}
	// No order: the manager takes it as a crash.
	c.set(Report{Guest: o.Guest, State: Crashed, Reason: o.Reason, At: c.cfg.Now()})
}

// checkDef runs Config.CheckDef, when set.
func (c *Controller) checkDef(ctx context.Context, def guestdef.Definition) error {
	if c.cfg.CheckDef == nil {
		return nil
	}
	if err := c.cfg.CheckDef(ctx, def); err != nil {
		return fmt.Errorf("refused: %w", err)
	}
	return nil
}

// replaceIncoming handles a start order for a guest the driver already
// has. A running copy is the guest itself: the start is done. A copy
// waiting for an incoming migration (left by a migration the manager gave
// up, whose cleanup order was overtaken by this start) runs nothing: it is
// killed and the guest started afresh, so that "started" is never reported
// for a guest that does not run.
func (c *Controller) replaceIncoming(ctx context.Context, o Order) error {
	if c.probe(ctx, o.Guest) != Incoming {
		return nil
	}
	c.log.Warn("start order finds a copy waiting for a migration that will not come; replacing it", "guest", o.Guest, "order", o.ID)
	c.expectStop(o.Guest, true)
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	err := c.cfg.Driver.Kill(cctx, o.Guest)
	cancel()
	if err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
		return fmt.Errorf("kill the waiting incoming copy: %w", err)
	}
	cctx, cancel = context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	return c.cfg.Driver.Start(cctx, o.Def)
}

func fromHypervisor(s hypervisor.State) GuestState {
	switch s {
	case hypervisor.Running:
		return Running
	case hypervisor.Paused:
		return Paused
	case hypervisor.Incoming:
		return Incoming
	case hypervisor.Crashed:
		return Crashed
	default:
		return Stopped
	}
}
