package manager

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/haven-ha/haven/internal/model"
)

// A step visits every guest (reconcile, placement, the invariants), and a
// cluster that starts G guests takes about G steps (one per start result):
// O(G²) in all. Most guests, though, are quiet: a step passes them by,
// except to count what they use on their hosts. A guest is quiet when it is
// started and nothing waits or counts against it (restarts, moves, tried
// hosts, preemption, a return, a wait), and either an operation of it is in
// flight (the step of its result touches it), or it runs, wanted started,
// with no failover domain, on a host online and neither in maintenance nor
// shutting down. It stays quiet until a step touches it or something
// changes about its host or the cluster's configuration.
//
// calm remembers which guests were not quiet after the last step and what
// the quiet ones use on each host. The step of a start result (the bulk of
// the steps of a large cluster) then visits only the guests that are not
// quiet and the result's guest: the same decisions in O(those) instead of
// O(G). Every other event visits every guest and builds calm anew; so does
// the step after anything that changes the state outside a step
// (configuration, guests, nodes, domains, rules: reindex or forget drops
// it), and every step with rules, admission control, rebalancing or
// preemption on, which read or change guests beyond those.
type calm struct {
	active []int   // indices in Guests of the guests not quiet, ascending (name order)
	used   []int64 // per node index: memory the quiet guests count there
	cnt    []int   // their number
	cpus   []int64 // their vCPUs (thousandths)
	quiet  int
	guests int // len(Guests) and len(Nodes) it was built for
	nodes  int
	config Config // the configuration it was built under
}

// VerifyCalm makes every step that visits only the guests that are not quiet also
// run the full step on a copy of the state and panic if the two differ
// (tests of the simulator set it).
var VerifyCalm bool

// forget drops calm: the next step visits every guest.
func (s *State) forget() { s.calm = nil }

// quiet reports whether a step passes g by, but to count what it uses (see
// calm): the conditions under which reconcile and place do nothing to g.
func (s *State) quiet(g *Guest) bool {
	if g.State != GuestStarted || g.Restarts != 0 || g.Moves != 0 || len(g.Tried) != 0 ||
		g.PreemptOn != "" || len(g.PreemptVictims) != 0 || g.ReturnTo != "" || g.Wait != "" || !g.MoveFailedAt.IsZero() {
		return false // (a migration backoff: the step at its end clears MoveFailedAt)
	}
	if g.Op != nil {
		return true // in flight: touched by the step of its result
	}
	if !g.Running || (g.Spec.State != "" && g.Spec.State != model.DesiredStarted) ||
		g.Preempted || g.PreemptedBy != "" || g.AlsoOn != "" || g.Spec.Domain != "" {
		return false
	}
	n := s.node(g.Node)
	return n != nil && n.Status == NodeOnline && !n.Maintenance && n.Shutdown == nil
}

// calmOff reports whether the configuration has steps read or change
// guests beyond the ones they are about: no calm then.
func (s *State) calmOff() bool {
	return len(s.Rules) != 0 || len(s.Broken) != 0 || s.Config.Reserve.On() || s.Config.Balance.On() || s.Config.Preemption
}

// calmFor returns the guests a step of ev needs to visit when that is
// fewer than all (nil: all of them), in name order; the guest of the
// result among them no longer counts in calm's sums.
func (s *State) calmFor(ev Event) []*Guest {
	c := s.calm
	r, ok := ev.(GuestResult)
	if c == nil || !ok || r.Result != ResultStarted || c.guests != len(s.Guests) || c.nodes != len(s.Nodes) ||
		s.calmOff() || !reflect.DeepEqual(c.config, s.Config) {
		return nil
	}
	x, ok := s.guestIdx[r.Guest]
	if !ok {
		return nil
	}
	if g := s.Guests[x]; g.Op == nil || g.Op.ID != r.Op || g.Op.Kind != OpStart {
		return nil
	}
	at, found := slices.BinarySearch(c.active, x)
	if !found {
		// Quiet until now: the step visits it, and remember counts it again.
		s.countGuest(s.Guests[x], -1, c.used, c.cnt, c.cpus)
		c.quiet--
		c.active = slices.Insert(c.active, at, x)
	}
	gs := make([]*Guest, len(c.active))
	for i, a := range c.active {
		gs[i] = s.Guests[a]
	}
	return gs
}

// remember builds calm after a step: from every guest after a full step,
// from the visited ones (gs) after a step that visited only those.
func (s *State) remember(gs []*Guest) {
	if s.calmOff() {
		s.calm = nil
		return
	}
	c := s.calm
	if gs == nil || c == nil {
		c = &calm{used: make([]int64, len(s.Nodes)), cnt: make([]int, len(s.Nodes)), cpus: make([]int64, len(s.Nodes)),
			guests: len(s.Guests), nodes: len(s.Nodes), config: s.Config}
		gs = s.Guests
	}
	active := c.active[:0]
	for _, g := range gs {
		if !s.quiet(g) {
			active = append(active, s.guestIdx[g.Spec.Name])
			continue
		}
		s.countGuest(g, 1, c.used, c.cnt, c.cpus)
		c.quiet++
	}
	c.active = active
	s.calm = c
}

// countCalm is count for a step that visits only gs: the quiet guests'
// sums plus what the visited ones count.
func (s *State) countCalm(gs []*Guest, used []int64, cnt []int, cpus []int64) {
	copy(used, s.calm.used)
	copy(cnt, s.calm.cnt)
	copy(cpus, s.calm.cpus)
	s.countGuests(gs, used, cnt, cpus)
}

// Unquiet calls fn for each guest that is not quiet (every guest when the
// last step did not keep track; see calm), in name order, and returns how
// many it passed by: quiet guests, all in state started. Callers that look
// at every guest after every step (metrics, the simulator's checker) use it
// to look only at those that can be in another state.
func (s *State) Unquiet(fn func(*Guest)) (quiet int) {
	if s.calm == nil || s.calm.guests != len(s.Guests) {
		for _, g := range s.Guests {
			fn(g)
		}
		return 0
	}
	for _, i := range s.calm.active {
		fn(s.Guests[i])
	}
	return s.calm.quiet
}

// verifyCalm runs the full step of ev on a copy of the state as it was
// before the step (before) and panics unless it decides what the step
// that visited only some guests did (acts, and the state after).
func (s *State) verifyCalm(before []byte, now time.Time, ev Event, acts []Action) {
	full, err := Restore(before)
	if err != nil {
		panic(err)
	}
	want := full.stepWith(now, ev, nil)
	if !reflect.DeepEqual(want, acts) {
		panic(fmt.Sprintf("manager: a step visiting only the guests not quiet decided %v, the full step %v", acts, want))
	}
	a, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	b, err := json.Marshal(full)
	if err != nil {
		panic(err)
	}
	if string(a) != string(b) {
		panic(fmt.Sprintf("manager: a step visiting only the guests not quiet left another state than the full step on %T %+v", ev, ev))
	}
}
