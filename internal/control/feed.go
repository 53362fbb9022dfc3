package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/fence"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/notify"
	"github.com/haven-ha/haven/internal/storage"
	"github.com/haven-ha/haven/internal/store"
)

// The daemon's writer sends a step's orders in a few transactions.
var _ OrderBatcher = (*ManagerWriter)(nil)

// Daemon is what RunManager needs from the agent.
type Daemon struct {
	Cluster *cluster.Store
	Leader  *store.Leadership
	Timings manager.Timings
	Logger  *slog.Logger
	Now     func() time.Time
	// Fencer, when nil, fences with the fence configuration in the store,
	// running agents with FenceRunner (nil: the search path alone).
	Fencer      Fencer
	FenceRunner *fence.Runner
	// Defs, when nil, reads definitions from the guest records.
	Defs Definitions
	// Isolation, when set, says whether a host is cut off from the cluster
	// network but alive (it still writes its storage heartbeat), with the
	// evidence: the agent's heartbeat monitor. When the core finds a host
	// down, however its lease ended (ended early by the fast detector, or
	// expired first), the event log then says isolated, not dead.
	Isolation func(node string) (evidence string, isolated bool)
	// Beating, when set, says whether a host's agent beats now (the
	// agent's direct heartbeats): the deletion of a beating host's live
	// key is held a moment (livehold.go).
	Beating func(node string) bool
	// RecordDir, when set, is where every term's inputs are recorded, one
	// file per term (term-<term>-<node>.jsonl), for Replay (haven sim
	// replay).
	RecordDir string
}

// RunManager is the manager's term in the daemon: it loads the cluster from
// one consistent snapshot of the store, restores (or creates) the core's
// state, then feeds every later change to the shell until leadership ends.
//
// While the cluster is on hold (cluster.Policy.Hold) the manager takes no
// action: the term waits for the hold to end, and a hold set during a term
// ends its shell at once; when the hold ends, a new shell starts from a
// fresh snapshot, as a new manager would.
func RunManager(ctx context.Context, d Daemon) error {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	for {
		if err := waitHold(ctx, d); err != nil {
			return err
		}
		if err := runTerm(ctx, d); !errors.Is(err, errHeld) {
			return err
		}
	}
}

// errHeld ends a shell when the cluster is put on hold.
var errHeld = errors.New("the cluster is on hold")

// holdOf tells whether a change of the policy record puts the cluster on
// hold.
func holdOf(ev *clientv3.Event) bool {
	if string(ev.Kv.Key) != cluster.KeyPolicy || ev.Type == clientv3.EventTypeDelete {
		return false
	}
	var p cluster.Policy
	return json.Unmarshal(ev.Kv.Value, &p) == nil && p.Hold
}

// waitHold returns at once when the cluster is not on hold; otherwise it
// says so in the event log and waits until the hold ends.
func waitHold(ctx context.Context, d Daemon) error {
	cli := d.Cluster.Raw().Client()
	held := false
	for {
		resp, err := cli.Get(ctx, cluster.KeyPolicy)
		if err != nil {
			return fmt.Errorf("manager: read the cluster policy: %w", err)
		}
		p := cluster.DefaultPolicy()
		if len(resp.Kvs) == 1 {
			if err := json.Unmarshal(resp.Kvs[0].Value, &p); err != nil {
				return fmt.Errorf("manager: read the cluster policy: %w", err)
			}
		}
		if !p.Hold {
			if held {
				d.Logger.Warn("the cluster's hold ended: the manager acts again")
				managerEvent(ctx, d, "hold ended: the manager acts again, from the store and the hosts' reports")
			}
			return nil
		}
		if !held {
			held = true
			d.Logger.Warn("the cluster is on hold: the manager takes no action until it ends (haven policy set --hold off)")
			managerEvent(ctx, d, "cluster on hold: the manager takes no action (no fence, start, stop or move) until `haven policy set --hold off`")
		}
		wctx, cancel := context.WithCancel(ctx)
		wch := cli.Watch(clientv3.WithRequireLeader(wctx), cluster.KeyPolicy, clientv3.WithRev(resp.Header.Revision+1))
		select {
		case <-wch: // changed, or the watch ended: read again
		case <-ctx.Done():
		}
		cancel()
		if ctx.Err() != nil {
			return nil
		}
	}
}

func managerEvent(ctx context.Context, d Daemon, msg string) {
	if err := d.Cluster.AddEvent(ctx, cluster.Event{Kind: "manager", Msg: msg}); err != nil && ctx.Err() == nil {
		d.Logger.Warn("event log write failed", "err", err)
	}
}

// runTerm runs one shell of the manager's term until the term ends or the
// cluster is put on hold (errHeld).
func runTerm(ctx context.Context, d Daemon) error {
	log := d.Logger
	cs := d.Cluster
	cli := cs.Raw().Client()
	awaitBeatingHosts(ctx, cli, d.Beating, vanishGrace(d.Timings.Keepalive))
	t0 := time.Now()
	rev, ranges, err := fetchSnapshot(ctx, cli)
	if err != nil {
		return err
	}
	read := time.Since(t0)
	snap, err := DecodeSnapshot(rev, ranges)
	if err != nil {
		return err
	}
	decoded := time.Since(t0) - read
	if snap.Policy.Hold {
		return errHeld
	}
	for _, e := range snap.Skipped {
		log.Error("skipping an unreadable record", "err", e)
		if err := cs.AddEvent(ctx, cluster.Event{Kind: "manager", Msg: "manager skipped an unreadable record: " + e.Error()}); err != nil && ctx.Err() == nil {
			log.Warn("event log write failed", "err", err)
		}
	}
	t1 := time.Now()
	st, f, sync, err := prepare(snap, d.Timings, log)
	prepared := time.Since(t1)
	if err != nil {
		return err
	}
	f.beating, f.now = d.Beating, d.Now

	sender := notify.New(log)
	defer sender.Wait()
	fencer := d.Fencer
	if fencer == nil {
		fencer = &storeFencer{cs: cs, log: log, sender: sender, runner: d.FenceRunner}
	}
	var defs Definitions = f
	if d.Defs != nil {
		defs = d.Defs
	}
	var record func(Record)
	if d.RecordDir != "" {
		node, term := "", int64(0)
		if d.Leader != nil {
			node, term = d.Leader.Node(), d.Leader.Rev()
		}
		// A term that went through a hold has a shell, and a recording,
		// per stretch: term-T-N.jsonl, then term-T-N.2.jsonl...
		var f *os.File
		var path string
		for k := 1; ; k++ {
			suffix := ""
			if k > 1 {
				suffix = fmt.Sprintf(".%d", k)
			}
			path = filepath.Join(d.RecordDir, fmt.Sprintf("term-%d-%s%s.jsonl", term, node, suffix))
			f, err = os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
			if !errors.Is(err, os.ErrExist) || k == 1000 {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("manager: record the term: %w", err)
		}
		rec := NewRecorder(f)
		defer func() {
			if err := rec.Close(); err != nil {
				log.Error("the term's recording is incomplete", "file", path, "err", err)
			}
		}()
		record = rec.Record
		log.Info("recording the term", "file", path)
	}
	attempts := map[string]int{} // fence tries per node since it failed, for the log
	sh := New(Config{
		Record:   record,
		State:    st,
		Writer:   &ManagerWriter{L: d.Leader, Cli: cli, RetryFor: d.Timings.LeaseTTL, Logger: log, Resume: snap.Resume},
		Fencer:   fencer,
		Defs:     defs,
		Features: f.Features,
		Logger:   log,
		Now:      d.Now,
		OnStep: func(now time.Time, acts []manager.Action) {
			var evs []cluster.Event
			for _, a := range acts {
				if node, ok := downNode(a); ok && d.Isolation != nil {
					if why, isolated := d.Isolation(node); isolated {
						evs = append(evs, cluster.Event{At: now, Kind: "node", Node: node, Msg: node + " is cut off from the cluster network but alive (" + why + ")"})
					}
				}
				if ev, ok := eventOf(a, now); ok {
					if a.Kind == manager.ActFence {
						// The core's attempt is an id; people count tries.
						attempts[a.Node]++
						ev.Msg = fmt.Sprintf("fence %s (attempt %d)", a.Node, attempts[a.Node])
					}
					evs = append(evs, ev)
				}
				if a.Kind == manager.ActLog && strings.HasPrefix(a.Msg, "node ") && strings.Contains(a.Msg, " failed") {
					attempts[strings.Fields(a.Msg)[1]] = 0
				}
			}
			if err := cs.AddEvents(ctx, evs); err != nil && ctx.Err() == nil {
				log.Warn("event log write failed", "err", err)
			}
			notifyEvents(ctx, cs, sender, evs)
		},
	})

	// Operations the previous manager left in flight: their migrations are
	// tracked again, and the agents' reports about them that came in before
	// this term are fed again, so none waits for a result already given.
	replay := sh.TakeOver(d.Now(), snap.Reports, func(node string) bool { _, live := f.live[node]; return live })

	inputs := make(chan Input, 256+len(replay))
	for _, in := range replay {
		inputs <- in
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// Commands queued before this term, oldest first.
		for _, c := range snap.Commands {
			cmd := manager.Command(c.Command)
			select {
			case inputs <- Input{Command: &cmd, CommandID: c.ID}:
			case <-wctx.Done():
				return
			}
		}
		for _, sd := range snap.Shutdowns {
			select {
			case inputs <- Input{Shutdown: &sd}:
			case <-wctx.Done():
				return
			}
		}
	}()
	runCtx, endTerm := context.WithCancelCause(ctx)
	defer endTerm(nil)
	// A hold ends the shell between two steps, never within one: the
	// inputs it reads are closed after the step in progress.
	holdCtx, hold := context.WithCancel(context.Background())
	defer hold()
	held := holdCtx.Done()
	f.watch(wctx, cli, rev, inputs, func(err error) {
		if errors.Is(err, errHeld) {
			hold()
			return
		}
		endTerm(err)
	})
	shellIn := make(chan Input)
	go func() {
		for {
			var in Input
			select {
			case in = <-inputs:
			case <-held:
				close(shellIn)
				return
			case <-wctx.Done():
				return
			}
			select {
			case shellIn <- in:
			case <-held:
				close(shellIn)
				return
			case <-wctx.Done():
				return
			}
		}
	}()
	go trimEvents(wctx, cs, log)
	// What a takeover costs, for the operator and the control-plane
	// benchmark: reading the store, decoding what it read, restoring the
	// state (the first step and its save follow, logged by the shell).
	log.Info("manager running", "nodes", len(st.Nodes), "guests", len(st.Guests), "rev", rev,
		"read", read.Round(time.Millisecond), "decoded", decoded.Round(time.Millisecond), "restored", prepared.Round(time.Millisecond))
	err = sh.Run(runCtx, sync, shellIn)
	select {
	case <-held:
		if ctx.Err() == nil {
			return errHeld
		}
	default:
	}
	var inv *InvariantError
	if errors.As(err, &inv) {
		recordIncident(context.WithoutCancel(ctx), cs, d.Leader, inv, log)
		return err
	}
	if cause := context.Cause(runCtx); ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// prepare restores (or creates) the core's state from a snapshot, brings
// its configuration up to date with the records, and returns the feed that
// follows later changes and the Sync that starts the term.
func prepare(snap *Snapshot, timings manager.Timings, log *slog.Logger) (*manager.State, *feed, manager.Sync, error) {
	policy := snap.Policy
	st := snap.State
	if st == nil {
		st = manager.New(manager.Config{Timings: timings})
	}
	applyPolicy(&st.Config, policy)
	st.Config.Timings = timings
	if err := st.PutRules(policy.Rules); err != nil {
		log.Error("affinity rules not applied", "err", err)
	}

	f := &feed{log: log, reports: map[string]map[string]hostctl.Report{}, live: map[string]model.NodeFacts{}, poolHealth: map[string]map[string]cluster.PoolHealth{}, now: time.Now, grace: vanishGrace(timings.Keepalive)}
	f.pools = slices.Clone(snap.Pools)
	for _, r := range snap.Reports {
		f.setReport(r.Node, r.Report.Guest, r.Report)
	}
	for _, l := range snap.Live {
		f.live[l.Name] = l.Facts
	}
	f.liveChanged()
	// Bring the configuration up to date with the records.
	for _, name := range snap.Registered {
		if !st.HasNode(name) {
			facts := f.live[name]
			if err := st.AddNode(name, facts.Memory, facts.CPUs); err != nil {
				return nil, nil, manager.Sync{}, err
			}
			if err := st.SetWitness(name, facts.Witness); err != nil {
				return nil, nil, manager.Sync{}, err
			}
		}
	}
	domains := map[string]bool{}
	for _, dom := range snap.Domains {
		domains[dom.Name] = true
		if err := st.PutDomain(dom); err != nil {
			log.Error("domain not applied", "domain", dom.Name, "err", err)
		}
	}
	// Which live node's agent reports each guest running: the first in
	// name order if two do (the Sync then sees both).
	runningOn := map[string]string{}
	for _, r := range snap.Reports {
		if _, live := f.live[r.Node]; !live || !isRunning(r.Report.State) {
			continue
		}
		if _, seen := runningOn[r.Report.Guest]; !seen {
			runningOn[r.Report.Guest] = r.Node
		}
	}
	guests := map[string]bool{}
	for _, g := range snap.Guests {
		guests[g.Spec.Name] = true
		f.setDef(g)
		if err := applyGuest(st, g, runningOn[g.Spec.Name], f.pools); err != nil {
			log.Error("guest not applied", "guest", g.Spec.Name, "err", err)
		}
	}
	for _, g := range append([]*manager.Guest(nil), st.Guests...) {
		if !guests[g.Spec.Name] {
			if err := st.RemoveGuest(g.Spec.Name); err != nil {
				log.Warn("deleted guest still active; kept until it stops", "guest", g.Spec.Name, "err", err)
			}
		}
	}
	for _, dom := range append([]model.Domain(nil), st.Domains...) {
		if !domains[dom.Name] {
			if err := st.RemoveDomain(dom.Name); err != nil {
				log.Warn("deleted domain still in use; kept", "domain", dom.Name, "err", err)
			}
		}
	}
	for _, c := range snap.PoolHealth {
		if f.poolHealth[c.Node] == nil {
			f.poolHealth[c.Node] = map[string]cluster.PoolHealth{}
		}
		f.poolHealth[c.Node][c.Pool] = c.Health
	}
	nodes := make([]string, 0, len(f.poolHealth))
	for node := range f.poolHealth {
		nodes = append(nodes, node)
	}
	slices.Sort(nodes)
	for _, node := range nodes {
		if st.HasNode(node) {
			if err := st.SetNodePools(node, f.missingPools(node)); err != nil {
				log.Warn("node's pool checks not applied", "node", node, "err", err)
			}
		}
	}
	sync := manager.Sync{}
	for _, l := range snap.Live {
		sync.Nodes = append(sync.Nodes, f.nodeReport(l.Name, l.Facts))
	}
	return st, f, sync, nil
}

// applyGuest adds a guest record to the core or updates its policy.
func applyGuest(st *manager.State, g cluster.Guest, runningOn string, pools []storage.Pool) error {
	g.Spec.Pools = guestPools(g)
	capable, _ := storage.FailoverCapable(g.Def, pools)
	g.Spec.Pinned = !capable
	if st.Guest(g.Spec.Name) != nil {
		return st.UpdateGuestSpec(g.Spec)
	}
	spec := g.Spec
	if spec.Node != "" && !st.HasNode(spec.Node) {
		spec.Node = ""
	}
	if runningOn != "" {
		spec.Node = runningOn
	}
	return st.AddGuest(spec, runningOn != "")
}

// guestPools lists the storage pools a guest's disks are on.
func guestPools(g cluster.Guest) []string {
	var out []string
	for _, d := range g.Def.Disks {
		if d.Pool != "" && !slices.Contains(out, d.Pool) {
			out = append(out, d.Pool)
		}
	}
	return out
}

// missingPools lists the pools whose latest check on node says unusable.
func (f *feed) missingPools(node string) []string {
	var out []string
	for pool, h := range f.poolHealth[node] {
		if !h.Usable() {
			out = append(out, pool)
		}
	}
	return out
}

// feed turns store changes into shell inputs. Its maps are touched only by
// the watch goroutine after RunManager hands over.
type feed struct {
	log        *slog.Logger
	reports    map[string]map[string]hostctl.Report
	live       map[string]model.NodeFacts
	poolHealth map[string]map[string]cluster.PoolHealth // node -> pool -> check

	// mu guards pools, defs and features, which the shell's goroutine
	// reads too (Definition, Features).
	mu       sync.Mutex
	pools    []storage.Pool                 // the pools as of the last change seen
	defs     map[string]guestdef.Definition // guests' definitions, to judge their disks when pools change and for orders
	features model.Features                 // of the live hosts

	// newer is a record of a newer schema than this build reads, seen by
	// translate: the term ends with it (the manager resigns).
	newer error

	// beating says whether a host's agent beats now (Daemon.Beating);
	// vanished are the hosts whose live key was deleted while they beat,
	// with when, for grace (see livehold.go).
	beating  func(node string) bool
	vanished map[string]time.Time
	grace    time.Duration
	now      func() time.Time
}

// liveChanged recomputes the live hosts' features after f.live changed.
func (f *feed) liveChanged() {
	facts := make([]model.NodeFacts, 0, len(f.live))
	for _, x := range f.live {
		facts = append(facts, x)
	}
	c := model.ClusterFeatures(facts)
	f.mu.Lock()
	f.features = c
	f.mu.Unlock()
}

// Features is what every live host's agent has (Config.Features).
func (f *feed) Features() model.Features {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.features
}

func (f *feed) setDef(g cluster.Guest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.defs == nil {
		f.defs = map[string]guestdef.Definition{}
	}
	f.defs[g.Spec.Name] = g.Def
}

// Definition is a guest's definition as of the last guest and pool
// records the feed has seen, with disk paths resolved: always at least as
// new as the inputs the shell has stepped, since the feed records them
// before it passes the inputs on. It saves a store read per order.
func (f *feed) Definition(guest, node string) (guestdef.Definition, error) {
	f.mu.Lock()
	def, ok := f.defs[guest]
	pools := f.pools
	f.mu.Unlock()
	if !ok {
		return guestdef.Definition{}, fmt.Errorf("guest %q: no guest record: %w", guest, cluster.ErrNotFound)
	}
	for _, disk := range def.Disks {
		if disk.Pool != "" {
			return storage.ResolveDisk(def, pools)
		}
	}
	return def, nil
}

// repin judges every guest's disks against the pools anew: a pool declared
// shared (or no longer) after its guests were configured changes whether
// they may leave their node at once, not at their next edit.
func (f *feed) repin() []Input {
	f.mu.Lock()
	defer f.mu.Unlock()
	pinned := make(map[string]bool, len(f.defs))
	for name, def := range f.defs {
		capable, _ := storage.FailoverCapable(def, f.pools)
		pinned[name] = !capable
	}
	return []Input{{Config: &Change{Pinned: pinned}}}
}

func (f *feed) setReport(node, guest string, r hostctl.Report) {
	if f.reports[node] == nil {
		f.reports[node] = map[string]hostctl.Report{}
	}
	f.reports[node][guest] = r
}

// runningOn says which live node's agent reports a guest running, if any
// (the first in name order if two do).
func (f *feed) runningOn(guest string) string {
	for _, node := range slices.Sorted(maps.Keys(f.reports)) {
		if _, live := f.live[node]; !live {
			continue
		}
		if r, ok := f.reports[node][guest]; ok && isRunning(r.State) {
			return node
		}
	}
	return ""
}

func isRunning(s hostctl.GuestState) bool {
	switch s {
	case hostctl.Running, hostctl.Paused, hostctl.Leaving, hostctl.Stopping, hostctl.Starting:
		return true
	}
	return false
}

func (f *feed) nodeReport(name string, facts model.NodeFacts) manager.NodeReport {
	r := manager.NodeReport{Name: name, Memory: facts.Memory, CPUs: facts.CPUs, CPUModels: facts.CPUModels, BootID: facts.BootID, Witness: facts.Witness}
	for guest, rep := range f.reports[name] {
		switch {
		case isRunning(rep.State):
			r.Running = append(r.Running, guest)
		case rep.State == hostctl.Stopped && rep.OrderID == "" && rep.Reason == hostctl.ReasonSelfFence:
			r.SelfFenced = append(r.SelfFenced, guest)
		}
	}
	slices.Sort(r.Running)
	slices.Sort(r.SelfFenced)
	return r
}

// watch starts one watch per subtree the manager follows and forwards
// their changes as inputs.
func (f *feed) watch(ctx context.Context, cli *clientv3.Client, rev int64, out chan<- Input, fail func(error)) {
	go func() {
		next := rev + 1
		for ctx.Err() == nil {
			// WithRequireLeader ends the watch when this store member
			// loses its leader (a store election, a partition): resume
			// from the next revision rather than going deaf. Only a
			// compaction past that revision ends the term (the next one
			// starts from a fresh snapshot).
			wch := cli.Watch(clientv3.WithRequireLeader(ctx), store.Prefix, clientv3.WithPrefix(), clientv3.WithRev(next), clientv3.WithPrevKV())
			for {
				var wr clientv3.WatchResponse
				var ok bool
				var expire <-chan time.Time
				if until, held := f.vanishedUntil(); held {
					expire = time.After(time.Until(until))
				}
				select {
				case wr, ok = <-wch:
				case <-expire:
					for _, in := range f.expireVanished(f.now()) {
						select {
						case out <- in:
						case <-ctx.Done():
							return
						}
					}
					continue
				case <-ctx.Done():
					return
				}
				if !ok {
					break
				}
				if err := wr.Err(); err != nil {
					if wr.CompactRevision != 0 || errors.Is(err, rpctypes.ErrCompacted) {
						f.log.Error("manager watch compacted; ending the term", "err", err, "rev", next)
						fail(fmt.Errorf("manager watch from revision %d: %w", next, err))
						return
					}
					f.log.Warn("manager watch interrupted; resuming", "err", err, "rev", next)
					break
				}
				for _, ev := range wr.Events {
					if holdOf(ev) {
						fail(errHeld)
						return
					}
					for _, in := range f.translate(ev) {
						select {
						case out <- in:
						case <-ctx.Done():
							return
						}
					}
					if f.newer != nil {
						f.log.Error("a record newer than this agent reads; ending the term", "err", f.newer)
						fail(fmt.Errorf("manager: %w", f.newer))
						return
					}
					next = ev.Kv.ModRevision + 1
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
}

// gone is the input for a host whose live key was deleted: it is down.
func (f *feed) gone(name string) []Input {
	delete(f.live, name)
	f.liveChanged()
	delete(f.reports, name)
	return []Input{{NodeGone: name}}
}

func (f *feed) translate(ev *clientv3.Event) []Input {
	key := string(ev.Kv.Key)
	del := ev.Type == clientv3.EventTypeDelete
	var se *model.SchemaError
	if !del && errors.As(store.CheckSchema(key, ev.Kv.Value), &se) {
		f.newer = se // the term ends: see watch
		return nil
	}
	switch {
	case strings.HasPrefix(key, store.PrefixNodeLive):
		name := strings.TrimPrefix(key, store.PrefixNodeLive)
		if del {
			if f.deferGone(name, f.now()) {
				return nil
			}
			return f.gone(name)
		}
		var facts model.NodeFacts
		if json.Unmarshal(ev.Kv.Value, &facts) != nil {
			return nil
		}
		prev, was := f.live[name]
		var out []Input
		if _, held := f.vanished[name]; held {
			delete(f.vanished, name)
			if prev.BootID == facts.BootID {
				f.log.Info("a beating host registered again after its live key was deleted: it stayed up", "node", name)
				f.live[name] = facts
				f.liveChanged()
				return nil
			}
			// Another boot: the host did go down meanwhile.
			out, was = f.gone(name), false
		}
		f.live[name] = facts
		f.liveChanged()
		if was && ev.IsModify() {
			return nil // facts refreshed, or an agent restart that kept the node up
		}
		r := f.nodeReport(name, facts)
		return append(out, Input{NodeUp: &r})
	case strings.HasPrefix(key, store.PrefixNodeReg):
		name := strings.TrimPrefix(key, store.PrefixNodeReg)
		if del || ev.IsModify() {
			return nil
		}
		return []Input{{Config: &Change{AddNode: name}}}
	case strings.HasPrefix(key, cluster.PrefixReports):
		node, guest, ok := cluster.ReportFromKey(key)
		if !ok || del {
			return nil
		}
		var r hostctl.Report
		if json.Unmarshal(ev.Kv.Value, &r) != nil {
			return nil
		}
		f.setReport(node, guest, r)
		return []Input{{Report: &NodeReport{Node: node, Report: r}}}
	case strings.HasPrefix(key, cluster.PrefixCommands):
		if del || ev.IsModify() {
			return nil
		}
		if in, ok := commandInput(ev.Kv.Value); ok {
			return []Input{in}
		}
	case strings.HasPrefix(key, cluster.PrefixGuests):
		name := strings.TrimPrefix(key, cluster.PrefixGuests)
		if del {
			f.mu.Lock()
			delete(f.defs, name)
			f.mu.Unlock()
			return []Input{{Config: &Change{RemoveGuest: name}}}
		}
		var g cluster.Guest
		if json.Unmarshal(ev.Kv.Value, &g) != nil {
			return nil
		}
		f.setDef(g)
		running := f.runningOn(g.Spec.Name)
		f.mu.Lock()
		pools := slices.Clone(f.pools)
		f.mu.Unlock()
		return []Input{{Config: &Change{Guest: &GuestChange{Record: g, RunningOn: running, Pools: pools}}}}
	case strings.HasPrefix(key, cluster.PrefixDomains):
		name := strings.TrimPrefix(key, cluster.PrefixDomains)
		if del {
			return []Input{{Config: &Change{RemoveDomain: name}}}
		}
		var d model.Domain
		if json.Unmarshal(ev.Kv.Value, &d) != nil {
			return nil
		}
		return []Input{{Config: &Change{Domain: &d}}}
	case key == cluster.KeyPolicy:
		// The fencing mode and shutdown policy apply from the next step; a
		// deleted policy is the default one.
		p := cluster.DefaultPolicy()
		if !del && json.Unmarshal(ev.Kv.Value, &p) != nil {
			return nil
		}
		return []Input{{Config: &Change{Policy: &p}}}
	case strings.HasPrefix(key, cluster.PrefixPools):
		name := strings.TrimPrefix(key, cluster.PrefixPools)
		f.mu.Lock()
		// A new slice: Definition may hold the old one.
		f.pools = slices.DeleteFunc(slices.Clone(f.pools), func(p storage.Pool) bool { return p.Name == name })
		var p storage.Pool
		if !del && json.Unmarshal(ev.Kv.Value, &p) == nil {
			f.pools = append(f.pools, p)
		}
		f.mu.Unlock()
		return f.repin()
	case strings.HasPrefix(key, cluster.PrefixPoolHealth):
		node := f.setPoolHealth(key, ev.Kv.Value)
		if del {
			node, _, _ = strings.Cut(strings.TrimPrefix(key, cluster.PrefixPoolHealth), "/")
			pool := strings.TrimPrefix(key, cluster.PrefixPoolHealth+node+"/")
			delete(f.poolHealth[node], pool)
		}
		if node == "" {
			return nil
		}
		missing := f.missingPools(node)
		return []Input{{Config: &Change{NodePools: &NodePools{Node: node, Missing: missing}}}}
	case strings.HasPrefix(key, cluster.PrefixShutdown):
		if del {
			return nil
		}
		if in, ok := shutdownInput(key, ev.Kv.Value); ok {
			return []Input{in}
		}
	}
	return nil
}

// setPoolHealth records a pool check and returns its node ("" if unreadable).
func (f *feed) setPoolHealth(key string, v []byte) string {
	node, pool, ok := strings.Cut(strings.TrimPrefix(key, cluster.PrefixPoolHealth), "/")
	var h cluster.PoolHealth
	if !ok || json.Unmarshal(v, &h) != nil {
		return ""
	}
	if f.poolHealth[node] == nil {
		f.poolHealth[node] = map[string]cluster.PoolHealth{}
	}
	f.poolHealth[node][pool] = h
	return node
}

func commandInput(v []byte) (Input, bool) {
	var c cluster.Command
	if json.Unmarshal(v, &c) != nil || c.Done {
		return Input{}, false
	}
	cmd := manager.Command(c.Command)
	return Input{Command: &cmd, CommandID: c.ID}, true
}

// Shutdown is what a node writes under its lease at shutdown/<node> when its
// host goes down gracefully.
type Shutdown struct {
	Reboot bool `json:"reboot"`
}

func shutdownInput(key string, v []byte) (Input, bool) {
	var s Shutdown
	if json.Unmarshal(v, &s) != nil {
		return Input{}, false
	}
	return Input{Shutdown: &manager.NodeShutdown{Node: strings.TrimPrefix(key, cluster.PrefixShutdown), Reboot: s.Reboot}}, true
}

// downNode is the host a core action says it found down ("node X failed;
// ...", "node X is offline; ...").
func downNode(a manager.Action) (string, bool) {
	if a.Kind != manager.ActLog {
		return "", false
	}
	f := strings.Fields(a.Msg)
	if len(f) < 3 || f[0] != "node" || !(f[2] == "failed;" || (f[2] == "is" && len(f) > 3 && f[3] == "offline;")) {
		return "", false
	}
	return f[1], true
}

// eventOf turns a core action into an event log entry, for those worth
// showing operators.
func eventOf(a manager.Action, now time.Time) (cluster.Event, bool) {
	ev := cluster.Event{At: now, Kind: "manager", Node: a.Node, Guest: a.Guest, Msg: a.String()}
	switch a.Kind {
	case manager.ActLog, manager.ActStart, manager.ActStop, manager.ActMigrate, manager.ActShutdownReady:
	case manager.ActFence:
		ev.Kind = "fence"
	case manager.ActReject:
		ev.Kind = "operator"
	default:
		return ev, false
	}
	return ev, true
}

// storeFencer fences with the configuration currently in the store.
type storeFencer struct {
	cs     *cluster.Store
	log    *slog.Logger
	sender *notify.Sender
	runner *fence.Runner
}

func (f *storeFencer) Fence(ctx context.Context, node string) error {
	cfg, err := cluster.ReadSealed[fence.Config](ctx, f.cs, cluster.KeyFenceConfig)
	if err != nil {
		return fmt.Errorf("fence node %q: read fence configuration: %w", node, err)
	}
	fn, err := fence.New(cfg, fence.Options{Runner: f.runner, Logger: f.log})
	if err != nil {
		return fmt.Errorf("fence node %q: %w", node, err)
	}
	res, err := fn.Fence(ctx, node)
	ev := cluster.Event{Kind: "fence", Node: node, Msg: fenceMsg(node, res, err), At: time.Now()}
	_ = f.cs.AddEvent(ctx, ev)
	notifyEvents(ctx, f.cs, f.sender, []cluster.Event{ev})
	return err
}

// notifyEvents sends the events that admins want to hear of at once to
// the webhooks and the mail receiver of the notification configuration,
// in the background.
func notifyEvents(ctx context.Context, cs *cluster.Store, sender *notify.Sender, evs []cluster.Event) {
	if sender == nil {
		return
	}
	var cfg notify.Config
	var name string
	loaded := false
	for _, e := range evs {
		ne := notify.Event{At: e.At, Kind: e.Kind, Node: e.Node, Guest: e.Guest, Msg: e.Msg}
		class, ok := notify.Classify(ne)
		if !ok {
			continue
		}
		if !loaded {
			loaded = true
			var err error
			if cfg, err = cs.NotifyConfig(ctx); err != nil || cfg.Empty() {
				return
			}
			if cc, err := cs.Raw().ClusterConfig(ctx); err == nil {
				name = cc.Name
			}
		}
		sender.SendAsync(cfg, notify.Notification{Cluster: name, Class: class, Event: ne, Text: notify.Text(name, ne)})
	}
}

func fenceMsg(node string, res fence.Result, err error) string {
	if err != nil {
		return fmt.Sprintf("fencing %s failed: %v", node, err)
	}
	confirmed := ""
	if res.Confirmed {
		confirmed = ", confirmed"
	}
	return fmt.Sprintf("fenced %s: level %d (%s), %s%s, in %v", node, res.Level, strings.Join(res.Devices, " + "), res.Action, confirmed, res.Duration.Round(time.Millisecond))
}

// recordIncident keeps what a failed core step needs for a post-mortem
// (the event, the panic, the stack and the state the step left) under
// cluster.PrefixIncidents and raises an alert in the event log.
func recordIncident(ctx context.Context, cs *cluster.Store, l *store.Leadership, inv *InvariantError, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	state, err := json.Marshal(inv.State)
	if err != nil {
		state = []byte(fmt.Sprintf("%q", "state does not encode: "+err.Error()))
	}
	ev, err := json.Marshal(inv.Event)
	if err != nil {
		ev = []byte("null")
	}
	node, term := "", int64(0)
	if l != nil {
		node, term = l.Node(), l.Rev()
	}
	key, err := cs.AddIncident(ctx, cluster.Incident{
		At: inv.At, Node: node, Term: term, EventType: fmt.Sprintf("%T", inv.Event), Event: ev,
		Panic: inv.Panic, Stack: string(inv.Stack), State: state,
	})
	if err != nil {
		log.Error("manager core failed; the incident could not be recorded", "err", err, "panic", inv.Panic)
	} else {
		log.Error("manager core failed; incident recorded, resigning", "key", key, "panic", inv.Panic)
	}
	msg := fmt.Sprintf("ALERT: the manager on %s stopped on an internal error and resigned (incident %s): %s", node, key, inv.Panic)
	if err := cs.AddEvent(ctx, cluster.Event{Kind: "alert", Node: node, Msg: msg}); err != nil {
		log.Error("alert event not written", "err", err)
	}
}

// EventsKept is how many event log entries the manager keeps.
const EventsKept = 20000

// trimEvents keeps the event log to its newest EventsKept entries.
func trimEvents(ctx context.Context, cs *cluster.Store, log *slog.Logger) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if err := cs.TrimEvents(ctx, EventsKept); err != nil && ctx.Err() == nil {
			log.Warn("event log not trimmed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// phaseRank orders a migration's phases: receive before send.
func phaseRank(phase string) string {
	switch phase {
	case "recv":
		return "0"
	case "send":
		return "1"
	}
	return "2"
}
