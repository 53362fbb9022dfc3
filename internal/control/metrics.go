package control

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/metrics"
)

// recoveryClock times recoveries for haven_recovery_seconds: from the
// fault the manager saw (a host's lease expired: failover; a guest crashed:
// restart) to the first start order for the guest, and to its start
// result. A recovery the manager abandons (the guest is disabled, stopped
// or left failed) is dropped unmeasured. It lives in the manager's term:
// a new manager does not know the faults its predecessor saw.
type recoveryClock struct {
	pending map[string]*recovery
}

type recovery struct {
	kind    string // failover or restart
	since   time.Time
	ordered bool
}

// before notes the guests that ev puts into recovery, while the state
// still says where they ran.
func (c *recoveryClock) before(st *manager.State, now time.Time, ev manager.Event) {
	if c.pending == nil {
		c.pending = map[string]*recovery{}
	}
	switch e := ev.(type) {
	case manager.Sync:
		// A new manager: nodes not listed are down, and their guests are
		// recovered from now on (the old manager may have died with them).
		up := map[string]bool{}
		for _, n := range e.Nodes {
			up[n.Name] = true
		}
		for _, g := range st.Guests {
			if g.Running && g.Node != "" && !up[g.Node] {
				if _, ok := c.pending[g.Spec.Name]; !ok {
					c.pending[g.Spec.Name] = &recovery{kind: "failover", since: now}
				}
			}
		}
	case manager.NodeDown:
		for _, g := range st.Guests {
			if g.Node == e.Node && g.Running {
				c.pending[g.Spec.Name] = &recovery{kind: "failover", since: now}
			}
		}
	case manager.GuestCrashed:
		if _, ok := c.pending[e.Guest]; !ok {
			c.pending[e.Guest] = &recovery{kind: "restart", since: now}
		}
	}
}

// after observes start orders and start results.
func (c *recoveryClock) after(st *manager.State, now time.Time, ev manager.Event, acts []manager.Action) {
	for _, a := range acts {
		if r := c.pending[a.Guest]; r != nil && a.Kind == manager.ActStart && !r.ordered {
			r.ordered = true
			metrics.Recovery.WithLabelValues(r.kind, "order").Observe(now.Sub(r.since).Seconds())
		}
	}
	if e, ok := ev.(manager.GuestResult); ok && e.Result == manager.ResultStarted {
		if r := c.pending[e.Guest]; r != nil {
			metrics.Recovery.WithLabelValues(r.kind, "running").Observe(now.Sub(r.since).Seconds())
			delete(c.pending, e.Guest)
		}
	}
	for name := range c.pending {
		g := st.Guest(name)
		if g == nil || g.State == manager.GuestDisabled || g.State == manager.GuestFailed || g.State == manager.GuestStopped {
			delete(c.pending, name)
		}
	}
}

// The labels of the guest and host gauges, in the order of their counts.
var (
	guestStates = []manager.GuestState{manager.GuestStarted, manager.GuestStopped, manager.GuestDisabled, manager.GuestFailed, manager.GuestRecovering, manager.GuestFencing, manager.GuestFrozen}
	hostStates  = []string{"online", "offline", "failed", "fenced", "left", "maintenance"}
	// The gauges themselves, looked up once: countStates runs at every
	// step (of the daemon's manager, and of every simulated one).
	stateGauges = sync.OnceValues(func() (g, h []prometheus.Gauge) {
		for _, s := range guestStates {
			g = append(g, metrics.Guests.WithLabelValues(string(s)))
		}
		for _, s := range hostStates {
			h = append(h, metrics.Hosts.WithLabelValues(s))
		}
		return g, h
	})
	saveStateWrites = sync.OnceValue(func() prometheus.Observer { return metrics.StoreWrite.WithLabelValues("save_state") })
)

// countStates exports the guests and hosts by state.
func countStates(st *manager.State) {
	var guests [7]float64
	var hosts [6]float64
	quiet := st.Unquiet(func(g *manager.Guest) {
		if i := slices.Index(guestStates, g.State); i >= 0 {
			guests[i]++
		}
	})
	if i := slices.Index(guestStates, manager.GuestStarted); i >= 0 {
		guests[i] += float64(quiet) // the quiet guests are all started
	}
	for _, n := range st.Nodes {
		s := string(n.Status)
		if n.Maintenance {
			s = "maintenance"
		}
		if i := slices.Index(hostStates, s); i >= 0 {
			hosts[i]++
		}
	}
	gg, hg := stateGauges()
	for i, v := range guests {
		gg[i].Set(v)
	}
	for i, v := range hosts {
		hg[i].Set(v)
	}
}
