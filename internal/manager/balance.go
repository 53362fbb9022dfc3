package manager

import (
	"fmt"
	"slices"
	"sort"

	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/placement"
)

// balance evens out memory use (cluster policy balance: manual | auto),
// after placement in every step. Use is counted memory / memory of each
// host that can take guests (online, not in maintenance, not shutting down,
// not a witness), in basis points. While the most used host's use exceeds
// the least used one's by more than Threshold points, it looks for one live
// migration to the least used host (dst) from the most used host (src: the
// next most used when the most used has no such guest, and so on, while the
// difference exceeds the threshold) of a
// guest that is running with no operation in flight, migratable, not pinned,
// not moved by rebalancing within Cooldown, whose move keeps its hard rules
// and restricted domain, puts it in a tier of its domain at least as
// preferred as src's, and makes the pair's difference smaller; of those the
// one leaving the smallest difference (ties: name order). auto migrates it
// (at most MaxMoves rebalancing migrations in flight); manual logs it as a
// proposal, once. Nothing is balanced while an evacuation, a return or a
// failback is in flight or wanted, or a host is in maintenance or shutting
// down with guests on it: those take precedence.
func (st *stepper) balance() {
	s := st.s
	b := s.Config.Balance
	if !b.On() {
		s.Proposal = ""
		return
	}
	b = b.WithDefaults()
	inFlight := 0
	for _, g := range s.Guests {
		if g.Op == nil {
			continue
		}
		switch g.Op.Purpose {
		case PurposeEvacuate, PurposeReturn, PurposeFailback:
			return
		case PurposeBalance:
			inFlight++
		}
	}
	if inFlight >= b.MaxMoves {
		return
	}
	used := make([]int64, len(s.Nodes))
	cnt := make([]int, len(s.Nodes))
	cpus := make([]int64, len(s.Nodes))
	s.count(used, cnt, cpus)
	dst := -1
	var hosts []int
	bp := func(i int) int64 { return used[i] * 10000 / s.nodeMem(s.Nodes[i]) }
	for i, n := range s.Nodes {
		if (n.Maintenance || n.Shutdown != nil) && used[i] > 0 {
			return // an evacuation or shutdown has precedence
		}
		if n.Status != NodeOnline || n.Maintenance || n.Shutdown != nil || n.Witness || s.nodeMem(n) <= 0 {
			continue
		}
		hosts = append(hosts, i)
		if dst < 0 || bp(i) < bp(dst) {
			dst = i
		}
	}
	// Sources: the hosts whose use exceeds dst's by more than the
	// threshold, most used first (ties: name order).
	sort.SliceStable(hosts, func(a, c int) bool { return bp(hosts[a]) > bp(hosts[c]) })
	for _, src := range hosts {
		if src == dst || bp(src)-bp(dst) <= int64(b.Threshold)*100 {
			break
		}
		if st.balanceFrom(b, src, dst, used, cnt, cpus) {
			return
		}
	}
	s.Proposal = ""
}

// balanceFrom looks for the move from src to dst; it reports whether it
// found one (and migrated it or proposed it).
func (st *stepper) balanceFrom(b model.Balance, src, dst int, used []int64, cnt []int, cpus []int64) bool {
	s := st.s
	bp := func(i int) int64 { return used[i] * 10000 / s.nodeMem(s.Nodes[i]) }
	ms, md := s.nodeMem(s.Nodes[src]), s.nodeMem(s.Nodes[dst])
	cur := bp(src) - bp(dst)
	rs := s.ruleSet()
	snap := placement.Snapshot{Nodes: make([]placement.Node, len(s.Nodes))}
	for i, n := range s.Nodes {
		snap.Nodes[i] = placement.Node{Name: n.Name, Memory: s.nodeMem(n), Used: used[i], Guests: cnt[i], Eligible: i == dst, CPUs: s.nodeCPUs(n), CPUUsed: cpus[i]}
	}
	// A place kept on dst (a restart after its delay, a preemption's
	// room) counts there as in placement.
	for _, g := range s.Guests {
		if g.State != GuestRecovering || g.Op != nil || g.Spec.State != model.DesiredStarted {
			continue
		}
		if g.PreemptOn == s.Nodes[dst].Name || (g.Need == NeedRestart && g.Node == s.Nodes[dst].Name) {
			snap.Nodes[dst].Used += s.guestMem(g)
			snap.Nodes[dst].CPUUsed += s.guestCPUs(g)
			snap.Nodes[dst].Guests++
		}
	}
	if rs != nil {
		snap.Where = s.whereFn(rs)
	}
	var best *Guest
	var bestDiff int64
	for _, g := range s.Guests {
		if !g.Running || g.State != GuestStarted || g.Op != nil || g.Node != s.Nodes[src].Name || !g.Spec.Migratable || g.Spec.Pinned {
			continue
		}
		if !g.BalancedAt.IsZero() && st.now.Sub(g.BalancedAt) < b.Cooldown {
			continue
		}
		if st.now.Before(g.MoveRetryAt()) {
			continue // its migrations failed: it waits out their backoff
		}
		if !s.allowed(g, s.Nodes[dst].Name) || !s.hasPools(g, s.Nodes[dst]) {
			continue
		}
		if t := s.tiersOf(g); t != nil && placement.TierOf(t, dst) > placement.TierOf(t, src) {
			continue
		}
		m := s.guestMem(g)
		diff := (used[src]-m)*10000/ms - (used[dst]+m)*10000/md
		if diff < 0 {
			diff = -diff
		}
		if diff >= cur || (best != nil && diff >= bestDiff) {
			continue
		}
		r := placement.NewRequest(g.Spec.Name, m, nil)
		r.Prefer, r.PreferOnly = dst, true
		r.CPUs = s.guestCPUs(g)
		if rs != nil {
			r.Rules = rs.guest[g.Spec.Name]
			r.Unfit = slices.Clone(rs.unfit[g.Spec.Name])
			if r.Rules != nil && r.Rules.Group != "" {
				continue // a hard together group moves only as a unit
			}
		}
		s.newModelUnfit().apply(g, &r)
		if placement.NewPlanner(&snap).Place(&r).Node != dst {
			continue
		}
		best, bestDiff = g, diff
	}
	if best == nil {
		return false
	}
	what := fmt.Sprintf("%s from %s to %s (memory use %s%% and %s%%, threshold %d points)", best.Spec.Name, s.Nodes[src].Name, s.Nodes[dst].Name, pct(bp(src)), pct(bp(dst)), b.Threshold)
	if b.Mode == model.BalanceManual {
		if s.Proposal != what {
			s.Proposal = what
			st.logf("balance: proposes to migrate %s", what)
		}
		return true
	}
	s.Proposal = ""
	st.logf("balance: migrating %s", what)
	best.BalancedAt = st.now
	st.move(best, s.Nodes[dst].Name, PurposeBalance)
	return true
}

// pct writes basis points as a percentage with one decimal.
func pct(bp int64) string { return fmt.Sprintf("%d.%d", bp/100, (bp%100)/10) }
