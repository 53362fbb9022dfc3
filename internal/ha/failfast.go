package ha

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/heartbeat"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store"
)

// failFast runs on every agent and acts on the heartbeat monitor's Gone
// verdicts (no heartbeat and no answer from the host's address for
// heartbeat.DefaultDeadAfter, 1.5 s):
//
//   - A manager whose host is Gone loses its term: its election lease is
//     revoked, so the next candidate takes over at once instead of after
//     the lease TTL (8 s). Safe whoever is wrong: every manager write is
//     guarded by its election key (docs/architecture.md), so a deposed
//     manager that was alive after all can write nothing.
//   - With fence devices (fencing: agent), a host that is Gone loses its
//     liveness lease: it fails now, not at its lease's expiry. The manager
//     does this for every host; the others only for the manager's host,
//     so that the next manager finds it failed. Its fence device is then
//     the safety, as for any failed host: its guests start elsewhere only
//     once the device confirmed it off. A host alive after all (a false
//     alarm) is fenced too; the thresholds are chosen so that a 1 s network
//     outage, a store leader change, an agent restart or a saturated CPU
//     never get there (test/failover).
//
// In watchdog mode no liveness lease is touched: the lease and the
// self-fence deadline stay the only guarantee (docs/fencing.md).
//
// In every mode, the store client avoids the store members of hosts that
// are Gone or Silent for a second (avoidMembers): routing only.
func failFast(ctx context.Context, a *agent.Agent, log *slog.Logger) {
	hb := a.Heartbeat()
	if hb == nil {
		return
	}
	ff := newFastFail(a.Store(), hb, log)
	ff.a = a
	ff.self = a.Config().Node
	ff.external = len(a.Config().StoreEndpoints) > 0
	ff.leases.followAll(ctx, ff.cli)
	t := time.NewTicker(heartbeat.DefaultInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if hb.Stopping() {
			// This agent stops: its heartbeat view goes stale (every
			// peer looks silent), and the stop itself points the store
			// client where it must (Store.StopMember).
			return
		}
		vs := hb.Verdicts()
		ff.avoidMembers(ctx, unanswering(vs))
		var gone []string
		for name, v := range vs {
			if v.State == heartbeat.Gone {
				gone = append(gone, name)
			}
		}
		if len(gone) > 0 {
			ff.act(ctx, gone)
		}
	}
}

func newFastFail(st *store.Store, hb verdicts, log *slog.Logger) *fastFail {
	return &fastFail{hb: hb, cs: cluster.New(st), cli: st.Client(), members: st.Members, wake: st.WakeCampaign, sever: st.Sever, revoke: st.RevokeLease, log: log, revoked: map[clientv3.LeaseID]bool{}, leases: newLeaseLog()}
}

// verdicts is what fastFail needs of the heartbeat monitor.
type verdicts interface {
	Verdict(name string) heartbeat.Verdict
}

type fastFail struct {
	a       *agent.Agent
	hb      verdicts
	cs      *cluster.Store
	cli     *clientv3.Client
	members func(context.Context) ([]store.Member, error) // the store's member list
	self    string                                        // this agent's host
	wake    func()                                        // wakes this agent's campaign (store.WakeCampaign)
	sever   func(endpoints []string) int                  // cuts the client's connections to those members (store.Sever)
	revoke  func(context.Context, clientv3.LeaseID) error // ends another host's lease, as root if need be (store.RevokeLease)
	log     *slog.Logger
	policy  cluster.Policy
	at      time.Time
	revoked map[clientv3.LeaseID]bool
	// leases is when this agent first saw each liveness and election
	// lease: a lease is ended only if it was seen before its host's
	// silence began (mayEnd).
	leases *leaseLog
	spared map[clientv3.LeaseID]bool // leases left alone, logged once
	// external: the store is an external etcd, whose members are not
	// Haven's hosts (avoidMembers does nothing).
	external bool
	avoided  string   // the hosts whose store members the client avoids, sorted, comma-separated
	set      []string // the endpoints avoidMembers gave the client, sorted
}

// mayEnd reports whether lease, a lease of host name's, may be ended on
// verdict v: only if v is Gone and this agent saw the lease before the
// host's silence began. A lease granted after that (the host booted again
// and registered before its heartbeats resumed, or registered while its
// heartbeats cannot get through) is the host's proof of life: it could
// only be granted by the host talking to a store quorum, so the silence
// says nothing about it. A lease this agent has not seen yet, or first saw
// only after the silence began, is left alone too: its host fails when the
// lease expires, as without heartbeats.
func (f *fastFail) mayEnd(name string, lease clientv3.LeaseID, v heartbeat.Verdict, now time.Time) bool {
	if v.State != heartbeat.Gone || lease == 0 || f.revoked[lease] {
		return false
	}
	seen, ok := f.leases.seen(lease)
	silent := now.Add(-v.Silence)
	if ok && seen.Before(silent) {
		return true
	}
	if !f.spared[lease] {
		if f.spared == nil {
			f.spared = map[clientv3.LeaseID]bool{}
		}
		f.spared[lease] = true
		f.log.Info("a silent host holds a lease not seen before its silence began (it registered again: alive); the lease is left to its TTL", "op", "failover", "node", name, "lease", fmt.Sprintf("%x", int64(lease)), "evidence", v.String())
	}
	return false
}

// leaseLog records when this agent first saw each lease attached to the
// keys under some prefixes (the live keys, the election keys), following
// them with a store watch.
type leaseLog struct {
	mu sync.Mutex
	at map[clientv3.LeaseID]time.Time
}

func newLeaseLog() *leaseLog { return &leaseLog{at: map[clientv3.LeaseID]time.Time{}} }

// seen is when lease was first seen.
func (l *leaseLog) seen(lease clientv3.LeaseID) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.at[lease]
	return t, ok
}

func (l *leaseLog) note(lease clientv3.LeaseID, now time.Time) {
	if lease == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.at[lease]; !ok {
		l.at[lease] = now
	}
}

func (l *leaseLog) forget(lease clientv3.LeaseID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.at, lease)
}

// followAll follows the live and the election keys in the background.
func (l *leaseLog) followAll(ctx context.Context, cli *clientv3.Client) {
	for _, prefix := range []string{store.PrefixNodeLive, store.KeyElection + "/"} {
		go l.follow(ctx, cli, prefix)
	}
}

// follow notes the leases of the keys under prefix until ctx ends: those
// there at the start, then every new one as the watch reports it. After a
// watch failure it starts over from a fresh read; a lease first read then is
// noted as seen then, which only ever leaves more leases alone.
func (l *leaseLog) follow(ctx context.Context, cli *clientv3.Client, prefix string) {
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := cli.Get(rctx, prefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			pause(ctx)
			continue
		}
		now := time.Now()
		for _, kv := range resp.Kvs {
			l.note(clientv3.LeaseID(kv.Lease), now)
		}
		wctx, wcancel := context.WithCancel(ctx)
		for wr := range cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil {
				break
			}
			now := time.Now()
			for _, ev := range wr.Events {
				switch {
				case ev.Type == mvccpb.PUT:
					l.note(clientv3.LeaseID(ev.Kv.Lease), now)
				case ev.PrevKv != nil:
					l.forget(clientv3.LeaseID(ev.PrevKv.Lease))
				}
			}
		}
		wcancel()
		pause(ctx) // a watch that ends at once is not retried in a busy loop
	}
}

func pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(200 * time.Millisecond):
	}
}

// avoidSilentAfter is how long a host's agent must have sent no heartbeat
// before the store client avoids the host's store member (avoidMembers),
// even though the host still answers: a stopped (SIGSTOP) or hung agent
// process, whose embedded member accepts connections but answers nothing.
const avoidSilentAfter = time.Second

// membersWait bounds avoidMembers' read of the member list.
const membersWait = 300 * time.Millisecond

// unanswering lists the hosts whose store members the store client should
// avoid: those Gone, and those Silent for avoidSilentAfter. A member is
// part of its host's agent process, so an agent that does not beat does
// not answer store requests either. Unlike Gone, this ends nothing: the
// client only sends its requests to the other members for a while.
func unanswering(vs map[string]heartbeat.Verdict) []string {
	var out []string
	for name, v := range vs {
		if v.State == heartbeat.Gone || (v.State == heartbeat.Silent && v.Silence >= avoidSilentAfter) {
			out = append(out, name)
		}
	}
	return out
}

// avoidMembers points this agent's store client away from the store
// members of the hosts named (unanswering), and back at every voting
// member once there are none. A connection to a member that does not
// answer is otherwise still used: requests sent over it hang until their
// deadline (the lease renewals, the election, the new manager's first
// reads and haven status with them), and gRPC's keepalive does not drop it
// while no request is in flight at its check, which short requests make
// the rule. The endpoints are set again when something else (the client's
// member sync) changed them while some are avoided.
func (f *fastFail) avoidMembers(ctx context.Context, avoid []string) {
	if f.external {
		return
	}
	slices.Sort(avoid)
	key := strings.Join(avoid, ",")
	if key == f.avoided && (key == "" || slices.Equal(sortedEndpoints(f.cli), f.set)) {
		return
	}
	// Serializable: a member's own list, answered without a store leader
	// (the avoided host may have been the leader). Short: a read sent
	// over the connection to be avoided is tried again at the next tick
	// on another.
	mctx, cancel := context.WithTimeout(ctx, membersWait)
	defer cancel()
	ms, err := f.members(store.Serializable(mctx))
	if err != nil {
		return
	}
	var keep, cut []string
	for _, m := range ms {
		switch {
		case slices.Contains(avoid, m.Name):
			cut = append(cut, m.ClientURLs...)
		case !m.Learner:
			keep = append(keep, m.ClientURLs...)
		}
	}
	if len(keep) == 0 {
		// Every voter is avoided (this host, a store client, is the one
		// cut off): the endpoints stay, and the list is not read again
		// until the avoided hosts change.
		f.avoided, f.set = key, sortedEndpoints(f.cli)
		return
	}
	f.cli.SetEndpoints(keep...)
	// The streams already on the avoided members' connections (lease
	// keepalives, watches) would stay there, waiting: cut them, so they
	// are opened again on the members kept.
	if n := f.sever(cut); n > 0 {
		f.log.Info("store client cut its connections to the avoided members", "op", "failover", "hosts", key, "connections", n)
	}
	switch {
	case key == f.avoided:
	case key != "":
		f.log.Info("store client avoids the store members of hosts that do not answer", "op", "failover", "hosts", key)
	default:
		f.log.Info("store client uses every store member again", "op", "failover")
	}
	f.avoided, f.set = key, sortedEndpoints(f.cli)
}

func sortedEndpoints(cli *clientv3.Client) []string {
	eps := cli.Endpoints()
	slices.Sort(eps)
	return eps
}

func (f *fastFail) act(ctx context.Context, gone []string) {
	// Every request requires a store leader: on a side without quorum it
	// fails at once instead of going through when the network heals,
	// after the peers beat again.
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), time.Second)
	defer cancel()
	if time.Since(f.at) > 2*time.Second {
		p, err := f.cs.Policy(rctx)
		if err != nil {
			return
		}
		f.policy, f.at = p, time.Now()
	}
	fences := f.policy.Fencing == model.FencingAgent
	if f.a.IsManager() {
		if fences {
			for _, name := range gone {
				f.endLiveness(rctx, name)
			}
		}
		return
	}
	f.replaceManager(rctx, gone, fences)
}

// replaceManager ends the term of a manager whose host is Gone (with fence
// devices, its liveness too). Once the election's leading key is this
// agent's (the term ended here or by another agent), it wakes this agent's
// campaign: etcd's own Campaign may wait on a watch that hangs on the dead
// host's store member, and its fallback read would come up to 500 ms later.
func (f *fastFail) replaceManager(ctx context.Context, gone []string, fences bool) {
	resp, err := f.cli.Get(ctx, store.KeyElection+"/", store.LeadingCandidate()...)
	if err != nil || len(resp.Kvs) != 1 {
		return
	}
	mgr, lease := string(resp.Kvs[0].Value), clientv3.LeaseID(resp.Kvs[0].Lease)
	if mgr == f.self {
		f.wake()
		return
	}
	if !slices.Contains(gone, mgr) {
		return
	}
	if fences {
		f.endLiveness(ctx, mgr)
	}
	if f.endTerm(ctx, mgr, lease) {
		f.replaceManager(ctx, gone, fences) // the next candidate may be this agent
	}
}

// endTerm revokes lease, the election lease of the manager on host name,
// if the host is Gone and may lose it (mayEnd); it reports whether it did.
func (f *fastFail) endTerm(ctx context.Context, name string, lease clientv3.LeaseID) bool {
	v := f.hb.Verdict(name)
	if !f.mayEnd(name, lease, v, time.Now()) {
		return false
	}
	if err := f.revoke(ctx, lease); err != nil {
		return false
	}
	f.revoked[lease] = true
	f.log.Warn("the manager's host is dead: its term ended so that another agent takes over", "op", "election", "manager", name, "evidence", v.String())
	return true
}

// endLiveness revokes the liveness lease of a Gone host, if it may
// (mayEnd).
func (f *fastFail) endLiveness(ctx context.Context, name string) {
	resp, err := f.cli.Get(ctx, store.KeyNodeLive(name))
	if err != nil || len(resp.Kvs) != 1 {
		return
	}
	lease := clientv3.LeaseID(resp.Kvs[0].Lease)
	v := f.hb.Verdict(name)
	if !f.mayEnd(name, lease, v, time.Now()) {
		return
	}
	if err := f.revoke(ctx, lease); err != nil {
		f.log.Warn("could not end the lease of a dead host", "op", "failover", "node", name, "err", err)
		return
	}
	f.revoked[lease] = true
	if v.Isolated() {
		// The manager's event log says so when it finds the host down,
		// whichever way its lease ended (control.Daemon.Isolation).
		f.log.Warn(name+" is cut off from the cluster network but alive ("+v.String()+"); failed without waiting for its lease: its fence device powers it off", "op", "failover", "node", name)
		return
	}
	msg := name + " is dead: " + v.String() + "; failed without waiting for its lease"
	f.log.Warn(msg, "op", "failover", "node", name)
	if err := f.cs.AddEvent(ctx, cluster.Event{Kind: "node", Node: name, Msg: msg}); err != nil && ctx.Err() == nil {
		f.log.Warn("event log write failed", "err", err)
	}
}
