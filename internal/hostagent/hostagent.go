// Package hostagent is the host side of Haven in the daemon: it runs the
// manager's orders for this node through hostctl and a hypervisor driver,
// publishes the guests' reports under the node's lease, and self-fences
// (kills every guest here) when the node can no longer confirm its lease, so
// that by the time the manager may start them elsewhere they run nowhere
// else. The agent starts it on every host.
package hostagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/selffence"
	"github.com/haven-ha/haven/internal/storage"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/watchdog"
)

// Lease is what the host side needs of the node's liveness.
type Lease interface {
	Lease() clientv3.LeaseID
	// Since is the store revision at which this host's current life in
	// the cluster began (store.Liveness.Since): orders written before it
	// were for an earlier life and are not carried out.
	Since() int64
	LastRenewed() time.Time
	LastSent() time.Time
}

// Config wires the host side.
type Config struct {
	Node    string
	DataDir string
	Cluster *cluster.Store
	Live    Lease
	Driver  hypervisor.Driver
	// LeaseTTL is the node's lease TTL. The host kills its guests when its
	// lease has not been confirmed for LeaseTTL - SelfFenceMargin: the lease
	// cannot have expired in the store before that.
	LeaseTTL time.Duration
	// Keepalive is how often the lease is renewed (agent --keepalive;
	// default store.DefaultKeepAlive): a renewal is overdue (the host is
	// cut off, the quorum alarm rings) only a second after the next one
	// was due.
	Keepalive       time.Duration
	SelfFenceMargin time.Duration
	StopTimeout     time.Duration
	// Watchdog is this host's self-fencing watchdog, used when the cluster's
	// policy is watchdog fencing; nil when the host has none, and then it
	// refuses to run guests in that mode (its death could not be told from
	// a hang, and the manager would start its guests elsewhere).
	Watchdog *watchdog.Watchdog
	// PolicyEvery is how often the cluster policy is read besides when a
	// watch says it changed (default 30 s).
	PolicyEvery time.Duration
	// HealthNetworks are where tcp and http health checks may connect
	// besides the guests' own addresses (health.Config.Networks).
	HealthNetworks []netip.Prefix
	Logger         *slog.Logger
	Now            func() time.Time
}

// Host runs the host side of one agent.
type Host struct {
	cfg Config
	log *slog.Logger
	// adopted is set once the guests already running at start are adopted.
	adopted atomic.Bool
	ctl     *hostctl.Controller
	pub     *publisher
	// health runs the guests' health checks; a failure kills the guest
	// and reports it crashed (hostctl.Controller.Fail).
	health *health.Monitor
	runCtx context.Context // Run's context, for health failures

	mu       sync.Mutex
	fenced   bool              // guests were killed for losing the cluster; guarded by mu
	lastDone map[string]string // guest -> last order ID submitted; guarded by mu
	mode     model.FencingMode // the cluster's fencing mode; guarded by mu
	// freeze: quorum_loss freeze with fence devices: cut off from the
	// quorate side, this host keeps its guests and never self-fences.
	freeze bool // guarded by mu
	// held: orders that came while self-fenced, latest per guest, carried
	// out once the lease is confirmed again (see submit); guarded by mu.
	held map[string]heldOrder
	// unfenced tells Run, the one goroutine that submits orders (so they
	// are carried out in the order they came), to release the held ones.
	unfenced chan struct{}
	// alarm sends the quorum-loss notification (quorumalarm.go).
	alarm *quorumAlarm
}

// New returns a host side; Run starts it.
func New(cfg Config) *Host {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = store.DefaultKeepAlive
	}
	if cfg.SelfFenceMargin == 0 {
		cfg.SelfFenceMargin = time.Second
	}
	if cfg.PolicyEvery == 0 {
		cfg.PolicyEvery = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "host", "node", cfg.Node)
	h := &Host{cfg: cfg, log: log, lastDone: map[string]string{}, held: map[string]heldOrder{}, unfenced: make(chan struct{}, 1)}
	h.alarm = newQuorumAlarm(cfg.Node, cfg.DataDir, log)
	h.pub = newPublisher(cfg.Cluster.Raw().Client(), cfg.Node, cfg.Live, log)
	var agentFn health.AgentFunc
	if ga, ok := cfg.Driver.(hypervisor.GuestAgent); ok {
		agentFn = ga.AgentCommand
	}
	hosts := &hostAddrs{st: cfg.Cluster.Raw(), now: cfg.Now}
	h.health = health.New(health.Config{Agent: agentFn, Logger: log, OnFail: h.onHealthFail, OnChange: h.onHealthChange, Networks: cfg.HealthNetworks, HostAddrs: hosts.get})
	h.pub.health = h.health.Results
	h.ctl = hostctl.New(hostctl.Config{Driver: cfg.Driver, Publisher: h.pub, Health: h.health, Logger: log, Now: cfg.Now, CheckDef: h.checkDef})
	return h
}

// Health is the host's health check monitor.
func (h *Host) Health() *health.Monitor { return h.health }

func (h *Host) onHealthFail(guest, reason string) {
	h.mu.Lock()
	ctx := h.runCtx
	h.mu.Unlock()
	if ctx == nil || ctx.Err() != nil {
		return
	}
	h.ctl.Fail(ctx, guest, reason)
}

// onHealthChange publishes a running guest's report again when one of its
// checks changed status, so the store carries its health.
func (h *Host) onHealthChange(guest string) {
	for _, r := range h.ctl.Reports() {
		if r.Guest == guest && r.State == hostctl.Running {
			h.pub.Publish(r)
			return
		}
	}
}

// adoptHealth gives the controller the definitions of adopted guests, so
// their health checks run: what the driver started them with when it can
// tell, else the stored definitions (read together).
func (h *Host) adoptHealth(ctx context.Context, adopted []hostctl.Report) {
	type definer interface {
		Definition(name string) (guestdef.Definition, error)
	}
	var stored []string
	for _, r := range adopted {
		if d, ok := h.cfg.Driver.(definer); ok {
			if def, err := d.Definition(r.Guest); err == nil {
				h.ctl.SetDefinition(def)
				continue
			}
		}
		stored = append(stored, r.Guest)
	}
	if len(stored) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	gs, err := h.cfg.Cluster.GuestsNamed(cctx, stored)
	cancel()
	if err != nil {
		h.log.Warn("adopted guests: no definitions, so no health checks", "guests", len(stored), "err", err)
		return
	}
	for _, name := range stored {
		g, ok := gs[name]
		if !ok {
			h.log.Warn("adopted guest: no definition, so no health checks", "guest", name, "err", "not in the store")
			continue
		}
		h.ctl.SetDefinition(g.Def)
	}
}

// checkDef vets a definition just before this host's hypervisor opens its
// files: every path inside a storage pool, after resolving symlinks (the API
// checked the same at create and edit, but the files may have changed since,
// and the store is not the only writer of orders an attacker could aim at).
func (h *Host) checkDef(ctx context.Context, def guestdef.Definition) error {
	pools, err := h.cfg.Cluster.Pools(ctx)
	if err != nil {
		return fmt.Errorf("read storage pools to check guest %q's files: %w", def.Name, err)
	}
	return storage.CheckPaths(def, pools, storage.Strict)
}

// Controller is the host's order executor.
func (h *Host) Controller() *hostctl.Controller { return h.ctl }

// Run adopts running guests, then follows this node's orders until ctx ends.
func (h *Host) Run(ctx context.Context) error {
	h.loadDone()
	h.mu.Lock()
	h.runCtx = ctx
	h.mu.Unlock()
	h.readPolicy(ctx)
	go h.pub.run(ctx)
	go h.health.Run(ctx)
	if adopted, err := h.ctl.Adopt(ctx); err != nil {
		h.log.Error("adoption failed; guests already running are not reported", "err", err)
	} else {
		h.adopted.Store(true)
		go h.adoptHealth(ctx, adopted)
	}
	ctlDone := make(chan struct{})
	go func() { h.ctl.Run(ctx); close(ctlDone) }()
	go h.policyLoop(ctx)
	go h.selfFenceLoop(ctx)
	go h.poolLoop(ctx)

	cs := h.cfg.Cluster
	orders, rev, err := cluster.List[hostctl.Order](ctx, cs, cluster.PrefixOrders+h.cfg.Node+"/")
	if err != nil {
		return fmt.Errorf("read the orders for node %q: %w", h.cfg.Node, err)
	}
	for _, o := range orders {
		h.submit(ctx, o.Value, o.Rev)
	}
	wch := cs.Raw().Client().Watch(ctx, cluster.PrefixOrders+h.cfg.Node+"/", clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		select {
		case <-h.unfenced:
			h.releaseHeld(ctx)
		case wr, ok := <-wch:
			if !ok {
				<-ctlDone
				return ctx.Err()
			}
			if err := wr.Err(); err != nil {
				return fmt.Errorf("watch orders for node %q: %w", h.cfg.Node, err)
			}
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				var o hostctl.Order
				if err := store.Decode(string(ev.Kv.Key), ev.Kv.Value, &o); err != nil {
					h.log.Error("unreadable order, not carried out", "key", string(ev.Kv.Key), "err", err)
					continue
				}
				h.submit(ctx, o, ev.Kv.ModRevision)
			}
		}
	}
}

// heldOrder is an order that came while the host was self-fenced, and the
// lease the host held then.
type heldOrder struct {
	order hostctl.Order
	rev   int64
	lease clientv3.LeaseID
}

// submit hands an order, written at store revision rev, to the controller
// as hostctl.Admit says: once (an order already submitted before an agent
// restart is not carried out again), and not at all when written before
// this host's current life began (Live.Since).
//
// While self-fenced, the host stops and kills but starts nothing: any other
// order is held (the latest per guest) until the lease is confirmed again.
// The watch delivers an order once, and the manager, which wrote it while it
// saw this node online, waits for its result: dropped, the guest would stay
// started on paper and stopped here for good. That happens after a switch
// outage, when the store comes back and the manager answers the self-fence
// reports with restarts before this host's next keepalive is confirmed.
func (h *Host) submit(ctx context.Context, o hostctl.Order, rev int64) {
	since := h.cfg.Live.Since()
	h.mu.Lock()
	switch hostctl.Admit(o, rev, since, h.lastDone[o.Guest]) {
	case hostctl.EarlierLife:
		h.mu.Unlock()
		h.log.Warn("order written before this host's current life in the cluster began (it was down since): not carried out", "guest", o.Guest, "op", string(o.Op), "order", o.ID, "order_rev", rev, "life_since_rev", since)
		return
	case hostctl.Repeated:
		h.mu.Unlock()
		return
	}
	if h.fenced && o.Op != hostctl.OpStop && o.Op != hostctl.OpKill {
		h.held[o.Guest] = heldOrder{order: o, rev: rev, lease: h.cfg.Live.Lease()}
		h.mu.Unlock()
		h.log.Warn("order held while self-fenced: carried out once the lease is confirmed again", "guest", o.Guest, "op", string(o.Op), "order", o.ID)
		return
	}
	delete(h.held, o.Guest) // a later order replaces a held one
	h.lastDone[o.Guest] = o.ID
	h.saveDoneLocked()
	watchdogMode := h.mode == model.FencingWatchdog
	h.mu.Unlock()
	if watchdogMode && (o.Op == hostctl.OpStart || o.Op == hostctl.OpReceive) {
		if err := h.armWatchdog(); err != nil {
			h.log.Error("refusing to run a guest without an armed watchdog", "guest", o.Guest, "op", string(o.Op), "err", err)
			h.pub.Publish(hostctl.Report{Guest: o.Guest, State: hostctl.Stopped, OrderID: o.ID, Op: o.Op, Result: hostctl.ResultFailed,
				Error: "watchdog fencing: " + err.Error(), At: h.cfg.Now()})
			return
		}
	}
	h.ctl.Submit(ctx, o)
}

// armWatchdog arms the watchdog with proof of the last lease renewal.
func (h *Host) armWatchdog() error {
	if h.cfg.Watchdog == nil {
		return fmt.Errorf("this host has no watchdog device (agent flag --watchdog-device)")
	}
	return h.cfg.Watchdog.Arm(watchdog.Proof{KeepaliveSent: h.cfg.Live.LastSent()})
}

// Adopted reports whether the guests already running here when the agent
// started have been adopted: until then Running does not count them.
func (h *Host) Adopted() bool { return h.adopted.Load() }

// Running is how many guests run here (or are starting, stopping, leaving).
func (h *Host) Running() int { return h.running() }

func (h *Host) running() int { return h.ctl.Active() }

// tendWatchdog pets the watchdog after each lease renewal while guests run
// in watchdog mode, and disarms it once none runs. A pet refused for a stale
// proof means the lease is in doubt: the guests are killed at once.
func (h *Host) tendWatchdog(ctx context.Context, lastPetProof *time.Time) {
	w := h.cfg.Watchdog
	h.mu.Lock()
	mode := h.mode
	h.mu.Unlock()
	running := h.running()
	switch {
	case w == nil:
		if mode == model.FencingWatchdog && running > 0 {
			h.selfFence(ctx, "watchdog fencing without a watchdog device")
		}
	case w.Armed() && (running == 0 || mode != model.FencingWatchdog):
		if err := w.Disarm(); err != nil {
			h.log.Error("watchdog disarm failed; it stays armed", "op", "watchdog", "err", err)
		}
	case mode == model.FencingWatchdog && running > 0:
		sent := h.cfg.Live.LastSent()
		if sent.Equal(*lastPetProof) && w.Armed() {
			return
		}
		var err error
		if w.Armed() {
			err = w.Pet(watchdog.Proof{KeepaliveSent: sent})
		} else {
			err = w.Arm(watchdog.Proof{KeepaliveSent: sent})
		}
		if errors.Is(err, watchdog.ErrStaleProof) {
			// The renewal's answer came late: no pet on this proof. The
			// countdown goes on from the last pet; the next renewal gives a
			// fresher proof, and the lease check above kills the guests if
			// none comes.
			*lastPetProof = sent
			h.log.Warn("watchdog not petted: lease confirmation arrived too late", "op", "watchdog", "err", err)
			return
		}
		if err != nil {
			h.selfFence(ctx, "watchdog: "+err.Error())
			return
		}
		*lastPetProof = sent
	}
}

// selfFence kills every guest here and refuses new ones until the lease is
// confirmed again.
func (h *Host) selfFence(ctx context.Context, why string) {
	h.mu.Lock()
	already := h.fenced
	h.fenced = true
	h.mu.Unlock()
	if already && h.running() == 0 {
		return
	}
	h.log.Error("self-fencing: killing every guest here", "op", "self-fence", "why", why, "guests", h.running())
	if err := h.ctl.KillAll(ctx); err != nil {
		h.log.Error("self-fence could not kill every guest", "op", "self-fence", "err", err)
	}
}

// policyLoop reads the cluster policy (and the notification settings the
// quorum alarm needs) when they change, as a watch on their keys tells, and
// every PolicyEvery in case a change went unseen. Reading them on a short
// timer cost every host three store reads every 2 s: 1,500 a second at
// 1,000 hosts, more than the rest of the host side's traffic together. It
// runs apart from selfFenceLoop: on a host cut off from the store a read
// blocks until its timeout, and the lease check must not wait behind it
// (the host has about one second between its self-fence deadline and the
// moment the majority may act).
func (h *Host) policyLoop(ctx context.Context) {
	t := time.NewTicker(h.cfg.PolicyEvery)
	defer t.Stop()
	cli := h.cfg.Cluster.Raw().Client()
	for {
		// Watched before the read, so no change falls in between: the
		// watches have started once the store confirmed them (or a tick
		// passed; then the next tick's read covers a change missed).
		wctx, cancel := context.WithCancel(ctx)
		var changed [3]clientv3.WatchChan
		for i, key := range []string{cluster.KeyPolicy, cluster.KeyNotify, store.KeyClusterConfig} {
			changed[i] = cli.Watch(wctx, key, clientv3.WithKeysOnly(), clientv3.WithCreatedNotify())
		}
		for _, ch := range changed {
			select {
			case <-ctx.Done():
				cancel()
				return
			case <-ch:
			case <-t.C:
			}
		}
		broken := func(wr clientv3.WatchResponse, ok bool) bool { return !ok || wr.Err() != nil }
		for watching := true; watching; {
			h.readPolicy(ctx)
			h.readNotify(ctx)
			select {
			case <-ctx.Done():
				cancel()
				return
			case <-t.C:
			case wr, ok := <-changed[0]:
				watching = !broken(wr, ok)
			case wr, ok := <-changed[1]:
				watching = !broken(wr, ok)
			case wr, ok := <-changed[2]:
				watching = !broken(wr, ok)
			}
		}
		cancel()
		// A watch ended (compacted, or the store refused it): watch again
		// at the next tick, not in a loop against a store that refuses.
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *Host) readPolicy(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	p, err := h.cfg.Cluster.Policy(ctx)
	if err != nil {
		return // keep the last known mode; the lease check covers a lost store
	}
	h.mu.Lock()
	if h.mode != p.Fencing {
		h.log.Info("fencing mode", "mode", p.Fencing)
	}
	h.mode = p.Fencing
	// On hold (cluster.Policy.Hold) the manager acts on nothing: a host
	// cut off keeps its guests, as under freeze.
	freeze := (p.QuorumLoss == model.QuorumLossFreeze || p.Hold) && p.Fencing == model.FencingAgent
	if h.freeze != freeze {
		h.log.Info("quorum loss policy", "quorum_loss", p.QuorumLoss, "hold", p.Hold, "self_fences", !freeze)
	}
	h.freeze = freeze
	h.mu.Unlock()
}

func (h *Host) donePath() string { return filepath.Join(h.cfg.DataDir, "orders-done.json") }

func (h *Host) loadDone() {
	if h.cfg.DataDir == "" {
		return
	}
	b, err := os.ReadFile(h.donePath())
	if err != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := json.Unmarshal(b, &h.lastDone); err != nil {
		h.log.Warn("ignoring unreadable order journal", "err", err)
		h.lastDone = map[string]string{}
	}
}

func (h *Host) saveDoneLocked() {
	if h.cfg.DataDir == "" {
		return
	}
	b, _ := json.Marshal(h.lastDone)
	tmp := h.donePath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err == nil {
		err = os.Rename(tmp, h.donePath())
		if err != nil {
			h.log.Warn("order journal not saved", "err", err)
		}
	}
}

// releaseHeld submits the orders held while self-fenced, now that the lease
// is confirmed again. Only those that came under the lease the host holds
// now: if that lease ended meanwhile, the manager saw this node go down and
// gave up its operations here (a start becomes a recovery, possibly
// elsewhere), so carrying them out could run a guest twice.
func (h *Host) releaseHeld(ctx context.Context) {
	lease := h.cfg.Live.Lease()
	h.mu.Lock()
	if h.fenced {
		h.mu.Unlock()
		return // self-fenced again since
	}
	held := h.held
	h.held = map[string]heldOrder{}
	h.mu.Unlock()
	for _, guest := range slices.Sorted(maps.Keys(held)) {
		ho := held[guest]
		if ho.lease != lease {
			h.log.Warn("order held while self-fenced dropped: the lease it came under ended since, and the manager gave it up", "guest", guest, "op", string(ho.order.Op), "order", ho.order.ID)
			continue
		}
		h.log.Info("carrying out an order held while self-fenced", "guest", guest, "op", string(ho.order.Op), "order", ho.order.ID)
		h.submit(ctx, ho.order, ho.rev)
	}
}

// selfFenceLoop kills every guest here once the lease could have expired
// in the store (LeaseTTL - SelfFenceMargin after the last renewal request was
// sent), tends the watchdog, and allows orders again once the lease is
// confirmed again.
func (h *Host) selfFenceLoop(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	lease := h.cfg.Live.Lease()
	var lastPetProof time.Time
	// The decision is the simulator's (package selffence): a host cut off
	// since its last confirmed renewal self-fences once its lease could have
	// expired in the store, less a margin, if it runs guests.
	deadline := h.cfg.LeaseTTL - h.cfg.SelfFenceMargin
	mon := selffence.New(deadline)
	// A renewal is sent every Keepalive: overdue a second after the next
	// was due. (Two seconds flat, it was overdue half the time with
	// --keepalive 4s, and every host rang the quorum alarm every cycle.)
	overdueAfter := min(h.cfg.Keepalive+time.Second, deadline/2)
	frozenSaid := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := h.cfg.Now()
		if l := h.cfg.Live.Lease(); l != lease {
			// A new lease (the old one expired): reports stored under the
			// old one are gone; store them again.
			lease = l
			for _, r := range h.ctl.Reports() {
				h.pub.Publish(r)
			}
		}
		sent := h.cfg.Live.LastSent()
		overdue := now.Sub(sent) > overdueAfter
		if overdue {
			mon.Observe(sent, false) // cut off since the last confirmed renewal
		} else {
			mon.Observe(now, true)
		}
		h.alarm.observe(now, sent, overdue && !sent.IsZero())
		h.mu.Lock()
		fenced, freeze := h.fenced, h.freeze
		h.mu.Unlock()
		mon.SetFreeze(freeze)
		switch {
		case mon.Decide(now, h.running()) == selffence.Fence:
			h.selfFence(ctx, fmt.Sprintf("lease not confirmed since %s: lost the cluster", sent.Format(time.RFC3339Nano)))
		case !overdue && fenced:
			h.log.Info("back in the cluster; accepting orders again", "op", "self-fence")
			h.mu.Lock()
			h.fenced = false
			h.mu.Unlock()
			mon = selffence.New(deadline)
			select {
			case h.unfenced <- struct{}{}:
			default:
			}
		case overdue && freeze && !frozenSaid:
			frozenSaid = true
			h.log.Warn("cut off from the quorate side under quorum_loss freeze: guests keep running, no self-fence; the quorate side may fence this host", "op", "self-fence", "guests", h.running())
		case !overdue && frozenSaid:
			frozenSaid = false
			h.log.Info("back in the quorate side", "op", "self-fence")
		}
		if now.Sub(sent) < deadline {
			h.tendWatchdog(ctx, &lastPetProof)
		}
	}
}

// publisher writes reports under the node's lease, latest per guest, in the
// background, retrying until they are stored.
type publisher struct {
	kv   clientv3.KV
	node string
	live Lease
	log  *slog.Logger
	// health returns a guest's health check results, attached to its
	// reports; nil in tests without a monitor.
	health func(guest string) []health.Result

	mu      sync.Mutex
	pending map[string]*hostctl.Report // nil value: remove; guarded by mu
	order   []string                   // guests in arrival order; guarded by mu
	wake    chan struct{}
}

func newPublisher(kv clientv3.KV, node string, live Lease, log *slog.Logger) *publisher {
	return &publisher{kv: kv, node: node, live: live, log: log, pending: map[string]*hostctl.Report{}, wake: make(chan struct{}, 1)}
}

func (p *publisher) Publish(r hostctl.Report) {
	rc := r
	if p.health != nil && rc.State == hostctl.Running {
		rc.Health = p.health(r.Guest)
	}
	p.mu.Lock()
	if _, ok := p.pending[r.Guest]; !ok {
		p.order = append(p.order, r.Guest)
	}
	p.pending[r.Guest] = &rc
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *publisher) Remove(guest string) {
	p.mu.Lock()
	if _, ok := p.pending[guest]; !ok {
		p.order = append(p.order, guest)
	}
	p.pending[guest] = nil
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// reportsPerTxn and reportBytesPerTxn keep a batch of reports under etcd's
// default limits: 128 operations and 1.5 MiB per request.
const (
	reportsPerTxn     = 64
	reportBytesPerTxn = 1 << 20
)

// pendingReport is one guest's report taken for a write; r nil: remove.
type pendingReport struct {
	guest string
	r     *hostctl.Report
}

// run writes the pending reports in arrival order, up to reportsPerTxn in
// one transaction. A guest whose report changed while it was written goes
// to the back of the queue to be written again; a failed write is retried
// after a pause.
func (p *publisher) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		}
		for {
			p.mu.Lock()
			n := min(len(p.order), reportsPerTxn)
			if n == 0 {
				p.mu.Unlock()
				break
			}
			batch := make([]pendingReport, n)
			for i, guest := range p.order[:n] {
				batch[i] = pendingReport{guest, p.pending[guest]}
			}
			p.mu.Unlock()
			n, err := p.write(ctx, batch)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				p.log.Warn("reports not stored; retrying", "guests", n, "first", batch[0].guest, "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
			// Only this loop takes guests off the queue's head; Publish
			// and Remove append or replace.
			p.mu.Lock()
			var again []string
			for _, b := range batch[:n] {
				// Drop it unless a newer report arrived meanwhile.
				if p.pending[b.guest] == b.r {
					delete(p.pending, b.guest)
				} else {
					again = append(again, b.guest)
				}
			}
			p.order = append(p.order[n:], again...)
			p.mu.Unlock()
		}
	}
}

// write stores the head of batch in one transaction: the reports (under
// the node's lease) and removals, as many as fit in reportBytesPerTxn (at
// least one). It returns how many it took.
func (p *publisher) write(ctx context.Context, batch []pendingReport) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	lease := p.live.Lease()
	ops := make([]clientv3.Op, 0, len(batch))
	size := 0
	for _, b := range batch {
		key := cluster.KeyReport(p.node, b.guest)
		var op clientv3.Op
		n := len(key)
		if b.r == nil {
			op = clientv3.OpDelete(key)
		} else {
			v := store.MustEncode(key, b.r)
			op = clientv3.OpPut(key, v, clientv3.WithLease(lease))
			n += len(v)
		}
		if len(ops) > 0 && size+n > reportBytesPerTxn {
			break
		}
		ops = append(ops, op)
		size += n
	}
	_, err := p.kv.Txn(ctx).Then(ops...).Commit()
	return len(ops), err
}

// ShutdownKey is where a node announces its graceful shutdown.
func ShutdownKey(node string) string { return cluster.PrefixShutdown + node }

// ShutdownReadyKey is where the manager says the node may go down.
func ShutdownReadyKey(node string) string { return cluster.PrefixShutdownReady + node }
