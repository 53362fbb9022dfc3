// Package control is the manager's I/O shell in the daemon: it runs on the
// elected agent, feeds the pure manager core (package manager) with what the
// store says (leases, agents' guest reports, operator commands) and carries
// out the core's actions: orders to agents, fence operations, persisting the
// manager state. Every write goes through Writer, which the daemon guards
// with the election (a deposed manager cannot write).
//
// The core decides; this package only translates. A live migration, one
// action for the core, is two orders here: the target gets "receive" and,
// once it reports ready, the source gets "migrate" to the address it gave.
package control

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/metrics"
	"github.com/haven-ha/haven/internal/model"
)

// Writer is every write the manager makes. The daemon's implementation makes
// each one conditional on still holding the election.
type Writer interface {
	// PutOrder gives node an order about one guest (replacing the previous
	// order about that guest on that node).
	PutOrder(ctx context.Context, node string, o hostctl.Order) error
	// SaveState persists the manager core's state (the daemon's writer
	// writes only what changed since its last save).
	SaveState(ctx context.Context, s *manager.State) error
	// ShutdownReady tells a node shutting down gracefully that it is empty.
	ShutdownReady(ctx context.Context, node string) error
	// CommandDone records the outcome of an operator command.
	CommandDone(ctx context.Context, id string, err error) error
}

// NodeOrder is an order and the node it is for.
type NodeOrder struct {
	Node  string
	Order hostctl.Order
}

// OrderBatcher is implemented by writers that can write many orders in a
// few transactions: a step that recovers a lost host's guests sends all
// their start orders at once instead of one round trip each.
type OrderBatcher interface {
	PutOrders(ctx context.Context, orders []NodeOrder) error
}

// Fencer powers a failed node off through its fence devices.
type Fencer interface {
	Fence(ctx context.Context, node string) error
}

// FenceStarter is a Fencer that runs fence operations on its own clock:
// the shell starts one and the result comes back through HandleFence (the
// simulator's fence devices). Other Fencers are called on a goroutine of
// their own and their results are stepped by Run.
type FenceStarter interface {
	Fencer
	StartFence(node string, attempt uint64)
}

// Definitions looks up a guest's hypervisor definition (with disk paths
// resolved for the node it is to run on).
type Definitions interface {
	Definition(guest, node string) (guestdef.Definition, error)
}

// Input is one thing the store watchers learned. Exactly one field is set.
type Input struct {
	NodeUp   *manager.NodeReport
	NodeDown string
	NodeLeft string
	// NodeGone: a node's lease ended; the shell decides whether it left
	// cleanly (its graceful shutdown was acknowledged) or failed.
	NodeGone string
	Shutdown *manager.NodeShutdown
	// Report is an agent's report about a guest on Node.
	Report *NodeReport
	// Command is an operator command to apply, with its ID for CommandDone.
	Command   *manager.Command
	CommandID string
	// Config is a change of configuration applied outside Step (a guest or
	// domain created or deleted, a node registered), then a Tick.
	Config *Change
	// Inventory is the list of guests an agent runs after its restart. The
	// simulator's agents send it; the daemon's report each guest instead.
	Inventory *manager.Inventory
}

// NodeReport is a hostctl report and the node it came from.
type NodeReport struct {
	Node   string
	Report hostctl.Report
}

// Config wires a Shell.
type Config struct {
	State  *manager.State
	Writer Writer
	Fencer Fencer
	Defs   Definitions
	Logger *slog.Logger
	Now    func() time.Time
	// OnStep, when set, sees every action the core produced (for the event
	// stream and tests).
	OnStep func(now time.Time, acts []manager.Action)
	// OnDone, when set, gets the shell's own news that an operation
	// finished (a guest running, stopped, migrated) instead of OnStep.
	OnDone func(now time.Time, guest, node, msg string)
	// Features, when set, says what every live host's agent has
	// (model.ClusterFeatures); nil: nothing beyond level 0. A live
	// migration's target listens with TLS only with
	// model.FeatureMigrationTLS.
	Features func() model.Features
	// Record, when set, gets every input of the term as it is stepped, and
	// the actions each step produced (see Replay). It must encode the
	// record before it returns: the state it carries keeps changing.
	Record func(Record)
}

// Shell runs the manager core against the real world.
type Shell struct {
	rec    recoveryClock // recovery latencies for metrics
	cfg    Config
	log    *slog.Logger
	fences chan manager.FenceResult
	// migrations in flight by core op id; only the Run goroutine touches it.
	migrations map[uint64]*migration
	// finished is the last start or stop op of each guest whose end was
	// logged: a host writes its report again when a health check changes
	// status, with the same order result, and that is no new start. Only
	// the Run goroutine touches it.
	finished map[string]uint64
	// clock is the time of the input being handled: every decision it
	// leads to is taken at that one moment (and a replay sets it to the
	// recorded moment).
	clock time.Time
}

// now is the time of the input being handled.
func (s *Shell) now() time.Time {
	if s.clock.IsZero() {
		return s.cfg.Now()
	}
	return s.clock
}

type migration struct {
	guest, src, dst string
	target          string    // the receiver's migration URI, once ready
	sent            bool      // the source has its migrate order
	since           time.Time // when the target was ordered to receive (or this term took it over)
	// The source's end failed and its copy of the guest is gone
	// (sourceLost): lost is why; the target's copy is being reaped, and
	// reaped (or reapErr) is what the target said of it.
	lost    string
	reaped  bool
	reapErr string
}

// TakeOver prepares a new term to carry on the operations the previous
// manager left in flight: their live migrations are tracked again (their
// receive timeout counting from now), and the agents' reports about them
// that came in before this term, among reports (from the nodes with a live
// lease), are returned to be fed first, receive reports before the rest,
// so that none waits for a result already given.
func (s *Shell) TakeOver(now time.Time, reports []NodeReport, live func(node string) bool) []Input {
	inflight := map[uint64]bool{}
	for _, g := range s.cfg.State.Guests {
		if g.Op == nil {
			continue
		}
		inflight[g.Op.ID] = true
		if g.Op.Kind == manager.OpMigrate {
			s.migrations[g.Op.ID] = &migration{guest: g.Spec.Name, src: g.Op.Node, dst: g.Op.Target, since: now}
		}
	}
	var replay []Input
	for _, nr := range reports {
		if !live(nr.Node) {
			continue
		}
		if op, _ := parseOrderID(nr.Report.OrderID); inflight[op] {
			replay = append(replay, Input{Report: &nr})
		}
	}
	slices.SortStableFunc(replay, func(a, b Input) int {
		_, pa := parseOrderID(a.Report.Report.OrderID)
		_, pb := parseOrderID(b.Report.Report.OrderID)
		return strings.Compare(phaseRank(pa), phaseRank(pb))
	})
	return replay
}

// Resume tracks migrations as a recording (or a shell handing over to
// another with the same state) had them.
func (s *Shell) Resume(ms []MigrationRecord) {
	for _, m := range ms {
		s.migrations[m.Op] = &migration{guest: m.Guest, src: m.Src, dst: m.Dst, target: m.Target, sent: m.Sent, since: m.Since}
	}
}

// Migrations lists the live migrations the shell tracks, by op id.
func (s *Shell) Migrations() []MigrationRecord {
	var out []MigrationRecord
	for _, op := range slices.Sorted(maps.Keys(s.migrations)) {
		m := s.migrations[op]
		out = append(out, MigrationRecord{Op: op, Guest: m.guest, Src: m.src, Dst: m.dst, Target: m.target, Sent: m.sent, Since: m.since})
	}
	return out
}

// ReceiveTimeout bounds a live migration's first phase: a target that has
// not reported itself ready to receive within it (its agent restarted
// between starting the receiving QEMU and reporting, say) fails the
// migration, which kills the target's copy and leaves the guest running on
// the source. Nothing has moved before the source's migrate order, so
// giving up then is safe; the second phase is never timed out here.
const ReceiveTimeout = 30 * time.Second

// New returns a Shell.
func New(cfg Config) *Shell {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Shell{cfg: cfg, log: log.With("component", "manager"), fences: make(chan manager.FenceResult, 16), migrations: map[uint64]*migration{}, finished: map[string]uint64{}}
}

// Run steps the core with sync first, then with every input, fence result
// and timer, until ctx ends or a write fails (a write fails when leadership
// is lost: the caller then stops being the manager). Each is handled by
// Start, Handle, HandleFence or HandleTick at the moment it arrives: the
// simulator calls the same four at simulated moments.
func (s *Shell) Run(ctx context.Context, sync manager.Sync, inputs <-chan Input) error {
	t0 := time.Now()
	if err := s.Start(ctx, s.cfg.Now(), sync); err != nil {
		return err
	}
	s.log.Info("the term's first step is carried out and saved", "took", time.Since(t0).Round(time.Millisecond))
	tick := s.cfg.State.Config.Timings.Tick
	if tick <= 0 {
		tick = 5 * time.Second
	}
	timer := time.NewTimer(s.nextWake(tick))
	defer timer.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return ctx.Err()
		case in, ok := <-inputs:
			if !ok {
				return fmt.Errorf("manager inputs closed")
			}
			err = s.Handle(ctx, s.cfg.Now(), in)
		case fr := <-s.fences:
			err = s.HandleFence(ctx, s.cfg.Now(), fr)
		case <-timer.C:
			err = s.HandleTick(ctx, s.cfg.Now())
		}
		if err != nil {
			return err
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(s.nextWake(tick))
	}
}

// Start begins a term at now: it records the state the term starts from
// and steps the core with the term's Sync.
func (s *Shell) Start(ctx context.Context, now time.Time, sync manager.Sync) error {
	s.clock = now
	if s.cfg.Record != nil {
		s.record(Record{State: s.cfg.State, Migrations: s.Migrations(), Sync: &sync})
	}
	return s.step(ctx, sync)
}

// Handle steps one input at now, then gives up the migrations whose target
// has not reported ready in time.
func (s *Shell) Handle(ctx context.Context, now time.Time, in Input) error {
	s.clock = now
	s.record(Record{Input: &in})
	return s.then(ctx, s.input(ctx, in))
}

// HandleFence steps a fence operation's result at now.
func (s *Shell) HandleFence(ctx context.Context, now time.Time, fr manager.FenceResult) error {
	s.clock = now
	s.record(Record{Fence: &fr})
	return s.then(ctx, s.step(ctx, fr))
}

// HandleTick steps a timer at now.
func (s *Shell) HandleTick(ctx context.Context, now time.Time) error {
	s.clock = now
	s.record(Record{Tick: true})
	return s.then(ctx, s.step(ctx, manager.Tick{}))
}

// then is what follows every input, fence result and tick.
func (s *Shell) then(ctx context.Context, err error) error {
	if err != nil {
		return err
	}
	return s.expireReceives(ctx)
}

// NextTimer is the earliest moment the shell wants a tick: the core's next
// timer or the first receive timeout, whichever comes first.
func (s *Shell) NextTimer() (time.Time, bool) {
	t, ok := s.cfg.State.NextTimer()
	for _, m := range s.migrations {
		if m.sent {
			continue
		}
		if d := m.since.Add(ReceiveTimeout); !ok || d.Before(t) {
			t, ok = d, true
		}
	}
	return t, ok
}

// expireReceives fails the migrations whose target has not reported ready
// within ReceiveTimeout.
func (s *Shell) expireReceives(ctx context.Context) error {
	if len(s.migrations) == 0 {
		return nil
	}
	now := s.now()
	for _, op := range slices.Sorted(maps.Keys(s.migrations)) {
		m := s.migrations[op]
		if m.sent || now.Sub(m.since) < ReceiveTimeout {
			continue
		}
		s.log.Warn("migration target never reported ready to receive; giving the migration up", "guest", m.guest, "node", m.dst, "op", "migrate")
		if err := s.failMigration(ctx, op, m, fmt.Sprintf("target %s not ready to receive within %v", m.dst, ReceiveTimeout)); err != nil {
			return err
		}
	}
	return nil
}

// failMigration ends a migration as failed: the target's copy, if any, is
// killed and the guest stays on the source.
func (s *Shell) failMigration(ctx context.Context, op uint64, m *migration, why string) error {
	delete(s.migrations, op)
	if err := s.cfg.Writer.PutOrder(ctx, m.dst, hostctl.Order{ID: orderID(op, "clean"), Guest: m.guest, Op: hostctl.OpKill}); err != nil {
		return err
	}
	return s.step(ctx, manager.GuestResult{Guest: m.guest, Node: m.src, Op: op, Result: manager.ResultMigrateFailed, Err: why})
}

func (s *Shell) nextWake(tick time.Duration) time.Duration {
	if t, ok := s.NextTimer(); ok {
		if d := t.Sub(s.cfg.Now()); d < tick {
			return max(d, time.Millisecond)
		}
	}
	return tick
}

func (s *Shell) input(ctx context.Context, in Input) error {
	switch {
	case in.NodeUp != nil:
		return s.step(ctx, manager.NodeUp{NodeReport: *in.NodeUp})
	case in.NodeDown != "":
		return s.step(ctx, manager.NodeDown{Node: in.NodeDown})
	case in.NodeLeft != "":
		return s.step(ctx, manager.NodeLeft{Node: in.NodeLeft})
	case in.NodeGone != "":
		if n := s.cfg.State.Node(in.NodeGone); n != nil && n.Shutdown != nil && n.Shutdown.Ready {
			return s.step(ctx, manager.NodeLeft{Node: in.NodeGone})
		}
		return s.step(ctx, manager.NodeDown{Node: in.NodeGone})
	case in.Shutdown != nil:
		return s.step(ctx, *in.Shutdown)
	case in.Report != nil:
		return s.report(ctx, in.Report.Node, in.Report.Report)
	case in.Command != nil:
		acts, err := s.stepCore(*in.Command)
		if err != nil {
			return err
		}
		var rejected error
		for _, a := range acts {
			if a.Kind == manager.ActReject {
				rejected = a.Err
				if rejected == nil {
					rejected = fmt.Errorf("%s", a.Msg)
				}
			}
		}
		if err := s.execute(ctx, acts); err != nil {
			return err
		}
		if in.CommandID != "" {
			return s.cfg.Writer.CommandDone(ctx, in.CommandID, rejected)
		}
		return nil
	case in.Inventory != nil:
		return s.step(ctx, *in.Inventory)
	case in.Config != nil:
		if err := in.Config.Apply(s.cfg.State); err != nil {
			s.log.Warn("configuration change refused", "err", err)
			return nil
		}
		return s.step(ctx, manager.Tick{})
	}
	return nil
}

// report turns an agent's guest report into core events.
func (s *Shell) report(ctx context.Context, node string, r hostctl.Report) error {
	op, phase := parseOrderID(r.OrderID)
	if m, ok := s.migrations[op]; ok && op != 0 {
		return s.migrationReport(ctx, op, m, node, phase, r)
	}
	if r.State == hostctl.Crashed && r.OrderID == "" {
		// hostctl reports events (not order results) without an order.
		return s.step(ctx, manager.GuestCrashed{Guest: r.Guest, Node: node, Reason: r.Reason})
	}
	if r.State == hostctl.Stopped && r.OrderID == "" && r.Reason == hostctl.ReasonSelfFence {
		// Killed by its host's self-fence while the host's lease held (a
		// keepalive late past the deadline, or a store without quorum,
		// where leases do not expire): the node stays up here, and this
		// report is the only news that the guest is gone. It died with
		// its node's self-fence, as the inventory of a new term would
		// say too (NodeReport.SelfFenced): recovered as after a node
		// failure, unless a migration's result decides.
		if g := s.cfg.State.Guest(r.Guest); g != nil && g.Op != nil && g.Op.Kind == manager.OpMigrate {
			return nil
		}
		return s.step(ctx, manager.GuestCrashed{Guest: r.Guest, Node: node, SelfFence: true})
	}
	if op == 0 || r.Result == hostctl.ResultPending || r.Result == "" {
		return nil
	}
	var kind manager.ResultKind
	ok := r.Result == hostctl.ResultOK
	switch r.Op {
	case hostctl.OpStart:
		kind = pick(ok, manager.ResultStarted, manager.ResultStartFailed)
	case hostctl.OpStop, hostctl.OpKill:
		kind = pick(ok, manager.ResultStopped, manager.ResultStopFailed)
	default:
		return nil
	}
	if err := s.step(ctx, manager.GuestResult{Guest: r.Guest, Node: node, Op: op, Result: kind, Err: r.Error}); err != nil {
		return err
	}
	if s.finished[r.Guest] == op {
		return nil // the same result, reported again
	}
	switch kind {
	case manager.ResultStarted:
		s.finished[r.Guest] = op
		s.done(r.Guest, node, fmt.Sprintf("%s is running on %s", r.Guest, node))
	case manager.ResultStopped:
		s.finished[r.Guest] = op
		s.done(r.Guest, node, fmt.Sprintf("%s stopped on %s", r.Guest, node))
	}
	return nil
}

// done tells OnStep that an operation finished (the core logs when one
// starts or fails, not when it succeeds), so that the event log and the
// UI's live view see it.
func (s *Shell) done(guest, node, msg string) {
	if s.cfg.OnDone != nil {
		s.cfg.OnDone(s.now(), guest, node, msg)
		return
	}
	if s.cfg.OnStep != nil {
		s.cfg.OnStep(s.now(), []manager.Action{{Kind: manager.ActLog, Guest: guest, Node: node, Msg: msg}})
	}
}

// migratedMsg says that a live migration finished, how long it took from
// the target's receive order, and the guest's downtime if known.
func migratedMsg(m *migration, now time.Time, downtime time.Duration) string {
	msg := fmt.Sprintf("migration of %s from %s to %s finished in %v", m.guest, m.src, m.dst, now.Sub(m.since).Round(time.Millisecond))
	if downtime > 0 {
		msg += fmt.Sprintf(" (downtime %v)", downtime.Round(time.Millisecond))
	}
	return msg
}

func (s *Shell) migrationReport(ctx context.Context, op uint64, m *migration, node, phase string, r hostctl.Report) error {
	if r.Result == hostctl.ResultPending {
		return nil
	}
	// Make sure no half-received copy is left waiting on the target.
	fail := func(why string) error { return s.failMigration(ctx, op, m, why) }
	switch {
	case phase == "recv" && node == m.dst:
		if r.Result != hostctl.ResultOK || r.Target.URI == "" {
			return fail("target " + m.dst + " could not prepare: " + r.Error)
		}
		if m.sent {
			return nil
		}
		m.target, m.sent = r.Target.URI, true
		def, err := s.cfg.Defs.Definition(m.guest, m.dst)
		if err != nil {
			return fail(err.Error())
		}
		return s.cfg.Writer.PutOrder(ctx, m.src, hostctl.Order{ID: orderID(op, "send"), Guest: m.guest, Op: hostctl.OpMigrate, Def: def, Target: r.Target})
	case phase == "send" && node == m.src:
		if r.Result != hostctl.ResultOK {
			if r.State == hostctl.Stopped || r.State == hostctl.Crashed {
				return s.sourceLost(ctx, op, m, r.Error)
			}
			return fail(r.Error)
		}
		delete(s.migrations, op)
		if err := s.step(ctx, manager.GuestResult{Guest: m.guest, Node: m.src, Op: op, Result: manager.ResultMigrated}); err != nil {
			return err
		}
		s.done(m.guest, m.dst, migratedMsg(m, s.now(), r.Downtime))
		return nil
	case phase == "reap" && node == m.dst:
		m.reaped, m.reapErr = r.Result == hostctl.ResultOK, r.Error
		if m.lost != "" {
			return s.reapDone(ctx, op, m)
		}
	}
	return nil
}

// sourceLost: the source's end of a migration failed and its copy of the
// guest is gone (killed by its host's self-fence, crashed). Taking the
// guest for running there, as a failed migration does, would leave it
// down for good; restarting it at once could run it twice, if the
// migration completed on the target after all. The target's copy is
// killed first ("reap"); then the guest is recovered as a crash on its
// source (reapDone). Its operation stays in flight meanwhile.
func (s *Shell) sourceLost(ctx context.Context, op uint64, m *migration, why string) error {
	if m.lost != "" {
		return nil // the same result, reported again
	}
	m.lost = why
	if m.reaped || m.reapErr != "" {
		return s.reapDone(ctx, op, m) // a new term fed the reap's result first
	}
	s.log.Warn("migration failed and the guest is gone from its source; killing the target's copy before recovering it", "guest", m.guest, "node", m.src, "target", m.dst, "op", "migrate", "err", why)
	return s.cfg.Writer.PutOrder(ctx, m.dst, hostctl.Order{ID: orderID(op, "reap"), Guest: m.guest, Op: hostctl.OpKill})
}

// reapDone ends a migration whose source lost the guest, once the target
// said what became of its copy.
func (s *Shell) reapDone(ctx context.Context, op uint64, m *migration) error {
	delete(s.migrations, op)
	if err := s.step(ctx, manager.GuestResult{Guest: m.guest, Node: m.src, Op: op, Result: manager.ResultMigrateFailed, Err: m.lost}); err != nil {
		return err
	}
	if !m.reaped {
		// The target's copy may run the guest: it stays as a failed
		// migration leaves it, so that no second copy starts.
		s.log.Error("migration failed, the guest is gone from its source and its copy on the target could not be killed; not recovered", "guest", m.guest, "node", m.src, "target", m.dst, "op", "migrate", "err", m.reapErr)
		return nil
	}
	return s.step(ctx, manager.GuestCrashed{Guest: m.guest, Node: m.src, Reason: "lost on its source during a failed migration (" + m.lost + ")"})
}

func (s *Shell) step(ctx context.Context, ev manager.Event) error {
	now := s.now()
	s.rec.before(s.cfg.State, now, ev)
	acts, err := s.stepCore(ev)
	if err != nil {
		return err
	}
	s.rec.after(s.cfg.State, now, ev, acts)
	if err := s.execute(ctx, acts); err != nil {
		return err
	}
	return s.dropAbandoned(ctx, acts)
}

// InvariantError is a step of the core that found its state contradicting
// itself (manager.State panics then: a bug, never an expected condition).
// The shell stops without saving or acting on that step: the store keeps
// the state before it, and the caller records the incident and resigns.
type InvariantError struct {
	Event manager.Event
	At    time.Time
	Panic string
	Stack []byte
	// State is the core's state as the failed step left it.
	State *manager.State
}

func (e *InvariantError) Error() string {
	return fmt.Sprintf("manager core failed on %T at %s: %s", e.Event, e.At.Format(time.RFC3339Nano), e.Panic)
}

// stepCore steps the core, turning a panic into an InvariantError.
func (s *Shell) stepCore(ev manager.Event) (acts []manager.Action, err error) {
	now := s.now()
	defer func() {
		if r := recover(); r != nil {
			err = &InvariantError{Event: ev, At: now, Panic: fmt.Sprint(r), Stack: debug.Stack(), State: s.cfg.State}
		}
	}()
	return s.cfg.State.Step(now, ev), nil
}

// dropAbandoned stops tracking the migrations the core gave up without a
// result (their source failed: the guest is now being fenced and will be
// recovered by placement) and kills the target's copy. Left alone, that
// copy either waits for data that will not come, where a later start of
// the guest on the same host would find it and take it for the guest, or,
// if the migration completed just before the source died, runs the guest
// while the manager recovers it elsewhere. The kill order goes out now, as
// soon as the source is seen failed, before any recovery start, which
// waits for the fence. Unless the same step (acts) gave the target a new
// order about the guest: a source back with a new boot before it was fenced
// has its guests recovered at once, maybe on the target; that order
// replaces the receive order, and a start there replaces the waiting copy
// (hostctl), so a kill after it would kill the new start.
func (s *Shell) dropAbandoned(ctx context.Context, acts []manager.Action) error {
	if len(s.migrations) == 0 {
		return nil
	}
	for _, op := range slices.Sorted(maps.Keys(s.migrations)) {
		m := s.migrations[op]
		if g := s.cfg.State.Guest(m.guest); g != nil && g.Op != nil && g.Op.ID == op {
			continue
		}
		delete(s.migrations, op)
		if slices.ContainsFunc(acts, func(a manager.Action) bool {
			return a.Guest == m.guest && a.Node == m.dst && (a.Kind == manager.ActStart || a.Kind == manager.ActStop)
		}) {
			s.log.Warn("migration abandoned by the manager; the target has a new order about the guest", "guest", m.guest, "node", m.dst, "op", "migrate")
			continue
		}
		s.log.Warn("migration abandoned by the manager; killing the target's copy", "guest", m.guest, "node", m.dst, "op", "migrate")
		if err := s.cfg.Writer.PutOrder(ctx, m.dst, hostctl.Order{ID: orderID(op, "clean"), Guest: m.guest, Op: hostctl.OpKill}); err != nil {
			return err
		}
	}
	return nil
}

// LegacyStateWriter is a Writer that can also save the state in the
// previous release's format (ManagerWriter).
type LegacyStateWriter interface {
	// KeepLegacyState says whether the following saves also write it.
	KeepLegacyState(on bool)
}

// mixedReleases reports whether some online host runs an older release
// than this one (the cluster's feature level is below this build's): one
// that reads the manager state only in the previous release's format, and
// must find it there if it becomes manager.
func (s *Shell) mixedReleases() bool {
	return s.cfg.Features != nil && s.cfg.Features().Level < model.FeatureLevel
}

// execute carries out the core's actions in order. The core puts
// ActPersist last; the state is saved before any order it implies can be
// acted on by an agent that then reports back... so orders are written after
// the state: the shell saves first, then sends.
func (s *Shell) execute(ctx context.Context, acts []manager.Action) error {
	t0 := time.Now()
	defer func() { metrics.ManagerStep.Observe(time.Since(t0).Seconds()) }()
	if s.cfg.OnStep != nil {
		s.cfg.OnStep(s.now(), acts)
	}
	if s.cfg.Record != nil {
		s.record(Record{Decided: true, Actions: actionStrings(acts)})
	}
	countStates(s.cfg.State)
	if lw, ok := s.cfg.Writer.(LegacyStateWriter); ok {
		lw.KeepLegacyState(s.mixedReleases())
	}
	ts := time.Now()
	if err := s.cfg.Writer.SaveState(ctx, s.cfg.State); err != nil {
		return fmt.Errorf("persist manager state: %w", err)
	}
	saveStateWrites().Observe(time.Since(ts).Seconds())
	// Orders are collected and written together, in action order; anything
	// else that must follow them (a nested step, a shutdown answer) flushes
	// them first.
	var batch []NodeOrder
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		orders := batch
		batch = nil
		if b, ok := s.cfg.Writer.(OrderBatcher); ok {
			if err := b.PutOrders(ctx, orders); err != nil {
				return fmt.Errorf("send %d orders: %w", len(orders), err)
			}
			return nil
		}
		for _, o := range orders {
			if err := s.cfg.Writer.PutOrder(ctx, o.Node, o.Order); err != nil {
				return fmt.Errorf("order %s of guest %q on node %q: %w", o.Order.Op, o.Order.Guest, o.Node, err)
			}
		}
		return nil
	}
	stopTimeout := s.cfg.State.Config.Timings.StopTimeout
	for _, a := range acts {
		switch a.Kind {
		case manager.ActLog:
			s.log.Info(a.Msg)
		case manager.ActReject:
			s.log.Info("command rejected", "reason", a.Msg)
		case manager.ActPersist:
			// Saved above, before any order went out.
		case manager.ActStart:
			def, err := s.cfg.Defs.Definition(a.Guest, a.Node)
			if err != nil {
				s.log.Error("start guest: no definition", "guest", a.Guest, "node", a.Node, "err", err)
				if err := flush(); err != nil {
					return err
				}
				if err := s.step(ctx, manager.GuestResult{Guest: a.Guest, Node: a.Node, Op: a.Op, Result: manager.ResultStartFailed, Err: err.Error()}); err != nil {
					return err
				}
				continue
			}
			def.CPUModel = a.CPUModel
			batch = append(batch, NodeOrder{Node: a.Node, Order: hostctl.Order{ID: orderID(a.Op, ""), Guest: a.Guest, Op: hostctl.OpStart, Def: def}})
		case manager.ActStop:
			o := hostctl.Order{ID: orderID(a.Op, ""), Guest: a.Guest, Op: hostctl.OpStop, StopTimeout: stopTimeout}
			if a.Force {
				o.Op = hostctl.OpKill
			}
			batch = append(batch, NodeOrder{Node: a.Node, Order: o})
		case manager.ActMigrate:
			def, err := s.cfg.Defs.Definition(a.Guest, a.Target)
			if err != nil {
				if err := flush(); err != nil {
					return err
				}
				if err := s.step(ctx, manager.GuestResult{Guest: a.Guest, Node: a.Node, Op: a.Op, Result: manager.ResultMigrateFailed, Err: err.Error()}); err != nil {
					return err
				}
				continue
			}
			def.CPUModel = a.CPUModel // the target runs it with the model it was started with
			s.migrations[a.Op] = &migration{guest: a.Guest, src: a.Node, dst: a.Target, since: s.now()}
			tls := s.cfg.Features != nil && s.cfg.Features().Has(model.FeatureMigrationTLS)
			batch = append(batch, NodeOrder{Node: a.Target, Order: hostctl.Order{ID: orderID(a.Op, "recv"), Guest: a.Guest, Op: hostctl.OpReceive, Def: def, MigrationTLS: tls}})
		case manager.ActFence:
			node, attempt := a.Node, a.Op
			if fs, ok := s.cfg.Fencer.(FenceStarter); ok {
				fs.StartFence(node, attempt)
				continue
			}
			go func() {
				err := s.cfg.Fencer.Fence(ctx, node)
				metrics.Fences.WithLabelValues(pick(err == nil, "ok", "failed")).Inc()
				res := manager.FenceResult{Node: node, Attempt: attempt, OK: err == nil}
				if err != nil {
					res.Err = err.Error()
				}
				select {
				case s.fences <- res:
				case <-ctx.Done():
				}
			}()
		case manager.ActShutdownReady:
			if err := flush(); err != nil {
				return err
			}
			if err := s.cfg.Writer.ShutdownReady(ctx, a.Node); err != nil {
				return fmt.Errorf("tell node %q its shutdown may proceed: %w", a.Node, err)
			}
		}
	}
	return flush()
}

func pick[T any](ok bool, yes, no T) T {
	if ok {
		return yes
	}
	return no
}

// orderID encodes the core's op id and a migration phase in an order ID.
func orderID(op uint64, phase string) string {
	id := strconv.FormatUint(op, 10)
	if phase != "" {
		id += "-" + phase
	}
	return id
}

// parseOrderID is the inverse of orderID; 0 when the ID is not ours.
func parseOrderID(id string) (uint64, string) {
	num, phase, _ := strings.Cut(id, "-")
	op, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, ""
	}
	return op, phase
}
