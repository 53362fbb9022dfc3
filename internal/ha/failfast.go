package ha

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

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
func failFast(ctx context.Context, a *agent.Agent, log *slog.Logger) {
	hb := a.Heartbeat()
	if hb == nil {
		return
	}
	ff := &fastFail{a: a, hb: hb, cs: cluster.New(a.Store()), cli: a.Store().Client(), log: log, revoked: map[clientv3.LeaseID]bool{}}
	t := time.NewTicker(heartbeat.DefaultInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var gone []string
		for name, v := range hb.Verdicts() {
			if v.State == heartbeat.Gone {
				gone = append(gone, name)
			}
		}
		ff.avoidGone(ctx, gone)
		if len(gone) > 0 {
			ff.act(ctx, gone)
		}
	}
}

type fastFail struct {
	a       *agent.Agent
	hb      *heartbeat.Monitor
	cs      *cluster.Store
	cli     *clientv3.Client
	log     *slog.Logger
	policy  cluster.Policy
	at      time.Time
	revoked map[clientv3.LeaseID]bool
	// heard is, per host and per kind of lease ended ("live", "election"),
	// when that host was last heard of at the time its lease was ended. A
	// silence is acted on once: a lease the host takes afterwards (it
	// booted again and re-registered before its heartbeats resumed) is the
	// host's own proof of life, not more evidence of its death.
	heard   map[string]time.Time
	avoided string // the gone hosts whose store members the client avoids
}

// actOnce runs act (which ends a lease of name's) unless the silence v
// describes was acted on already for kind; it records the silence when act
// reports that it ended the lease.
func (f *fastFail) actOnce(kind, name string, v heartbeat.Verdict, act func() bool) {
	heardAt := time.Now().Add(-v.Silence).Truncate(time.Millisecond)
	key := kind + "/" + name
	if prev, ok := f.heard[key]; ok && !heardAt.After(prev.Add(heartbeat.DefaultInterval)) {
		return // the same silence: its lease was ended already
	}
	if act() {
		if f.heard == nil {
			f.heard = map[string]time.Time{}
		}
		f.heard[key] = heardAt
	}
}

// avoidGone points this agent's store client away from the store members
// of gone hosts, and back at every voting member once none is gone. A
// connection to a dead member is otherwise still used until its keepalive
// fails (seconds), and requests sent over it hang: the lease renewals, the
// election and the new manager's first reads with them.
func (f *fastFail) avoidGone(ctx context.Context, gone []string) {
	if len(f.a.Config().StoreEndpoints) > 0 {
		return // an external store: its members are not Haven's hosts
	}
	slices.Sort(gone)
	key := strings.Join(gone, ",")
	if key == f.avoided {
		return
	}
	mctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ms, err := f.a.Store().Members(mctx)
	if err != nil {
		return
	}
	var keep []string
	for _, m := range ms {
		if !m.Learner && !slices.Contains(gone, m.Name) {
			keep = append(keep, m.ClientURLs...)
		}
	}
	if len(keep) == 0 {
		return
	}
	f.cli.SetEndpoints(keep...)
	if key != "" {
		f.log.Info("store client avoids the store members of dead hosts", "op", "failover", "gone", key)
	}
	f.avoided = key
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
	resp, err := f.cli.Get(rctx, store.KeyElection+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil || len(resp.Kvs) != 1 {
		return
	}
	mgr, lease := string(resp.Kvs[0].Value), clientv3.LeaseID(resp.Kvs[0].Lease)
	for _, name := range gone {
		if name != mgr {
			continue
		}
		if fences {
			f.endLiveness(rctx, name)
		}
		if v := f.hb.Verdict(name); lease != 0 && !f.revoked[lease] && v.State == heartbeat.Gone {
			f.actOnce("election", name, v, func() bool {
				if _, err := f.cli.Revoke(rctx, lease); err != nil {
					return false
				}
				f.revoked[lease] = true
				f.log.Warn("the manager's host is dead: its term ended so that another agent takes over", "op", "election", "manager", mgr, "evidence", v.String())
				return true
			})
		}
	}
}

// endLiveness revokes the liveness lease of a Gone host.
func (f *fastFail) endLiveness(ctx context.Context, name string) {
	resp, err := f.cli.Get(ctx, store.KeyNodeLive(name))
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		return
	}
	lease := clientv3.LeaseID(resp.Kvs[0].Lease)
	if f.revoked[lease] {
		return
	}
	v := f.hb.Verdict(name)
	if v.State != heartbeat.Gone {
		return
	}
	ended := false
	f.actOnce("live", name, v, func() bool {
		if _, err := f.cli.Revoke(ctx, lease); err != nil {
			f.log.Warn("could not end the lease of a dead host", "op", "failover", "node", name, "err", err)
			return false
		}
		ended = true
		return true
	})
	if !ended {
		return
	}
	f.revoked[lease] = true
	msg := name + " is dead: " + v.String() + "; failed without waiting for its lease"
	if v.Isolated() {
		msg = name + " is cut off from the cluster network but alive (" + v.String() + "); failed without waiting for its lease: its fence device powers it off"
	}
	f.log.Warn(msg, "op", "failover", "node", name)
	if err := f.cs.AddEvent(ctx, cluster.Event{Kind: "node", Node: name, Msg: msg}); err != nil && ctx.Err() == nil {
		f.log.Warn("event log write failed", "err", err)
	}
}
