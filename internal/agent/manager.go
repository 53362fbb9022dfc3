package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/metrics"
	"github.com/haven-ha/haven/internal/store"
)

// electionLoop campaigns for the manager office and, each time it is won,
// runs the WhileManager functions until the office is lost.
func (a *Agent) electionLoop(ctx context.Context) {
	a.endOldTerm(ctx)
	for ctx.Err() == nil {
		l, err := a.st.Campaign(ctx, a.cfg.Node, a.cfg.LeaseTTL)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("manager election failed; retrying", "op", "election", "err", err)
				sleepCtx(ctx, time.Second)
			}
			continue
		}
		a.mu.Lock()
		a.leader = l
		a.mu.Unlock()
		metrics.IsManager.Set(1)
		a.log.Info("became manager", "op", "election", "term", l.Rev())
		a.writeTermLease(l.Lease())
		failed := a.term(ctx, l)
		a.writeTermLease(0)
		a.mu.Lock()
		a.leader = nil
		a.mu.Unlock()
		// Only the manager exports the cluster's guests and hosts.
		metrics.IsManager.Set(0)
		metrics.Guests.Reset()
		metrics.Hosts.Reset()
		if failed {
			sleepCtx(ctx, time.Second)
		}
	}
}

// storeLeaderElsewhere keeps the store's leader off the manager's host
// while this agent is the manager (checked every 2 s): a host that is both
// costs, when it dies, a store election before anyone can end its manager
// term, so the new manager would act a second or two later.
//
// Leadership moves only to a member whose host beats now
// (store.SetLeaderCandidates), never in a term's first seconds (a new
// manager's first steps, fencing a dead host and recovering its guests,
// come first: a transfer holds the store's writes while it lasts), and
// after a failed transfer not again for a while.
func (a *Agent) storeLeaderElsewhere(ctx context.Context, _ *store.Leadership) error {
	if a.embedded == nil {
		return nil
	}
	wait := leaderMoveSettle
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = 2 * time.Second
		if _, err := a.st.AvoidLeadership(); err != nil {
			a.log.Warn("store leader stays on the manager's host for now", "op", "election", "err", err, "retry_in", leaderMoveBackoff)
			wait = leaderMoveBackoff
		}
	}
}

// A manager moves the store leader off its host no sooner than
// leaderMoveSettle into its term, and not again for leaderMoveBackoff
// after a transfer failed.
const (
	leaderMoveSettle  = 10 * time.Second
	leaderMoveBackoff = 30 * time.Second
)

// fileTermLease keeps the election lease of this agent's term while it is
// the manager: an agent killed while manager is restarted by its next
// process, which ends that term at once (endOldTerm) instead of leaving the
// cluster without an acting manager until the lease's TTL.
const fileTermLease = "term-lease"

func (a *Agent) writeTermLease(id clientv3.LeaseID) {
	if id == 0 {
		_ = os.Remove(a.dir.file(fileTermLease))
		return
	}
	if err := os.WriteFile(a.dir.file(fileTermLease), []byte(strconv.FormatInt(int64(id), 16)+"\n"), 0o600); err != nil {
		a.log.Warn("term lease not saved", "op", "election", "err", err)
	}
}

// endOldTerm revokes the election lease of the term this host's previous
// agent process held when it died (the data dir's lock proves that process
// is gone).
func (a *Agent) endOldTerm(ctx context.Context) {
	b, err := os.ReadFile(a.dir.file(fileTermLease))
	if err != nil {
		return
	}
	id, err := strconv.ParseInt(strings.TrimSpace(string(b)), 16, 64)
	if err == nil && id != 0 {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if _, err := a.st.Client().Revoke(rctx, clientv3.LeaseID(id)); err == nil {
			a.log.Info("ended the manager term of this host's previous agent process", "op", "election")
		}
		cancel()
	}
	_ = os.Remove(a.dir.file(fileTermLease))
}

// term runs one manager term; it reports whether a manager function failed.
func (a *Agent) term(ctx context.Context, l *store.Leadership) (failed bool) {
	info := store.ManagerInfo{Node: a.cfg.Node, Since: a.now().UTC(), Rev: l.Rev()}
	if _, err := l.Do(ctx, clientv3.OpPut(store.KeyManagerInfo, store.MustEncode(store.KeyManagerInfo, info))); err != nil {
		a.log.Warn("record manager info", "op", "election", "err", err)
	}
	fns := []Plugin{{Name: "node-tracker", WhileManager: a.trackNodes}, {Name: "store-learners", WhileManager: a.tidyLearners},
		{Name: "store-leader-elsewhere", WhileManager: a.storeLeaderElsewhere}, {Name: "store-roles", WhileManager: a.enforceStoreRoles}}
	for _, p := range a.plugins {
		if p.WhileManager != nil {
			fns = append(fns, p)
		}
	}
	errc := make(chan error, len(fns))
	for _, p := range fns {
		go func() {
			err := p.WhileManager(l.Context(), l)
			if err != nil && l.Context().Err() == nil {
				a.log.Error("manager function failed; resigning", "op", "manager", "plugin", p.Name, "err", err)
				errc <- err
				return
			}
			errc <- nil
		}()
	}
	results := 0
wait:
	for {
		select {
		case <-l.Done():
			a.log.Warn("lost the manager office", "op", "election", "term", l.Rev())
			break wait
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = l.Resign(rctx)
			cancel()
			a.log.Info("resigned as manager", "op", "election")
			break wait
		case err := <-errc:
			results++
			if err != nil {
				failed = true
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_ = l.Resign(rctx)
				cancel()
				break wait
			}
		}
	}
	l.Close()
	for ; results < len(fns); results++ {
		<-errc
	}
	return failed
}

// trackNodes is the manager duty of this package: it keeps
// /haven/nodes/state/<node> (online or offline, since when) in line with
// the liveness keys.
func (a *Agent) trackNodes(ctx context.Context, l *store.Leadership) error {
	st := a.st
	for ctx.Err() == nil {
		live, rev, err := st.LiveNodes(ctx)
		if err != nil {
			sleepCtx(ctx, time.Second)
			continue
		}
		regs, err := st.Nodes(ctx)
		if err != nil {
			sleepCtx(ctx, time.Second)
			continue
		}
		states, err := st.NodeStates(ctx)
		if err != nil {
			sleepCtx(ctx, time.Second)
			continue
		}
		recorded := true
		for _, r := range regs {
			_, on := live[r.Name]
			if s, ok := states[r.Name]; !ok || s.Online != on {
				if err := a.setNodeState(ctx, l, r.Name, on); err != nil {
					if store.IsNotLeader(err) {
						return nil
					}
					a.log.Warn("record node state; reading again", "op", "liveness", "peer", r.Name, "err", err)
					recorded = false
				}
			}
		}
		if !recorded {
			// The watch below starts after these changes: a state left
			// unrecorded would stay wrong (a host back online shown
			// online since before it died).
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		wctx, stop := context.WithCancel(ctx)
		for ev := range st.WatchLive(wctx, rev) {
			if ev.Resync {
				break
			}
			on := ev.Facts != nil
			if ev.Facts != nil {
				if s, ok := states[ev.Node]; ok && s.Online {
					continue // facts update only
				}
			}
			if err := a.setNodeState(ctx, l, ev.Node, on); err != nil {
				if store.IsNotLeader(err) || ctx.Err() != nil {
					stop()
					return nil
				}
				a.log.Warn("record node state; reading again", "op", "liveness", "peer", ev.Node, "err", err)
				break
			}
			states[ev.Node] = store.NodeState{Online: on}
			if on {
				a.log.Info("node up", "op", "liveness", "peer", ev.Node)
			} else {
				a.log.Warn("node down", "op", "liveness", "peer", ev.Node)
			}
		}
		stop()
		sleepCtx(ctx, 200*time.Millisecond)
	}
	return nil
}

// learnerGrace is how long a store learner may stay one, while its host is
// not live, before the manager removes it: a host that died while joining
// would otherwise block every later join (etcd allows one learner).
const learnerGrace = time.Minute

// tidyLearners removes store learners left by hosts that died while
// joining.
func (a *Agent) tidyLearners(ctx context.Context, l *store.Leadership) error {
	if a.state.External {
		return nil
	}
	seen := map[uint64]time.Time{}
	tick := a.learnerTick
	if tick == 0 {
		tick = 5 * time.Second
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		members, err := a.st.Members(ctx)
		if err != nil {
			continue
		}
		live, _, err := a.st.LiveNodes(ctx)
		if err != nil {
			continue
		}
		now := a.now()
		learners := map[uint64]bool{}
		for _, m := range members {
			if !m.Learner {
				continue
			}
			learners[m.ID] = true
			first, ok := seen[m.ID]
			if !ok {
				seen[m.ID] = now
				continue
			}
			if _, up := live[m.Name]; up || now.Sub(first) < learnerGrace {
				continue
			}
			if l.Check(ctx) != nil {
				return nil
			}
			if err := a.st.RemoveMember(ctx, m.ID); err != nil {
				a.log.Warn("remove stale store learner", "op", "store", "peer", m.Name, "err", err)
				continue
			}
			a.log.Warn("removed a store learner whose host never came up", "op", "store", "peer", m.Name, "member", fmt.Sprintf("%x", m.ID))
		}
		for id := range seen {
			if !learners[id] {
				delete(seen, id)
			}
		}
	}
}

func (a *Agent) setNodeState(ctx context.Context, l *store.Leadership, node string, online bool) error {
	key := store.KeyNodeState(node)
	val := store.MustEncode(key, store.NodeState{Online: online, Since: a.now().UTC()})
	// Only for registered nodes: a removed node must not reappear.
	_, err := l.DoIf(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(store.KeyNodeReg(node)), ">", 0)}, clientv3.OpPut(key, val))
	if errors.Is(err, store.ErrConflict) {
		return nil
	}
	return err
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
