// Package selffence owns what a host's agent decides on its own, without the
// cluster: when it must self-fence after losing the quorate side (stop its
// guests and power off before the manager may start them elsewhere), and
// which guests it adopts after an agent restart. It is pure logic; the
// simulator uses it now and the real agent will drive the hardware watchdog
// and the hypervisor with the same decisions.
package selffence

import (
	"sort"
	"time"
)

// Monitor tracks a host's membership of the quorate side. The zero value is
// not usable; use New.
type Monitor struct {
	ttl       time.Duration
	connected bool
	lostAt    time.Time
	fenced    bool
	freeze    bool
}

// SetFreeze sets the cluster's quorum_loss policy as it applies to this
// host: with freeze set (quorum_loss: freeze, fence devices present) a host
// that loses the quorate side keeps its guests running and never
// self-fences; the quorate side fences it with its device.
func (m *Monitor) SetFreeze(freeze bool) { m.freeze = freeze }

// Freeze reports whether the monitor runs under quorum_loss freeze.
func (m *Monitor) Freeze() bool { return m.freeze }

// New returns a monitor for a host that is in the cluster now. ttl is the
// lease TTL: the host's lease, renewed until it lost the cluster, expires at
// most ttl later, and that moment is its self-fence deadline.
func New(ttl time.Duration) *Monitor { return &Monitor{ttl: ttl, connected: true} }

// Observe records whether the host reaches the quorate side at now. Losing it
// starts the countdown; regaining it before the deadline cancels it.
func (m *Monitor) Observe(now time.Time, connected bool) {
	if connected == m.connected {
		return
	}
	m.connected = connected
	if !connected {
		m.lostAt = now
	}
}

// Connected reports whether the host is in the quorate side.
func (m *Monitor) Connected() bool { return m.connected }

// Deadline returns the self-fence deadline while the host is cut off.
func (m *Monitor) Deadline() (time.Time, bool) {
	if m.connected {
		return time.Time{}, false
	}
	return m.lostAt.Add(m.ttl), true
}

// Decision is what the host must do now.
type Decision int

const (
	// Wait: nothing to do (connected, deadline not reached, or no guest).
	Wait Decision = iota
	// Fence: stop every guest at once and power off; stay off until an
	// operator powers the host on.
	Fence
)

// Decide says what to do at now with running guests on the host. A host
// running no guest never self-fences, nor does one under freeze.
func (m *Monitor) Decide(now time.Time, running int) Decision {
	d, cut := m.Deadline()
	if !cut || m.fenced || m.freeze || running == 0 || now.Before(d) {
		return Wait
	}
	m.fenced = true
	return Fence
}

// Adoption is what an agent reports after it restarts.
type Adoption struct {
	// Running: guests the hypervisor still runs; the agent adopts them and
	// reports them running.
	Running []string
	// Gone: guests it reported running before the restart that no longer
	// run; it reports them crashed.
	Gone []string
}

// Adopt compares what the agent had reported running before it restarted
// with what the hypervisor runs now. Both results are sorted.
func Adopt(reported, hypervisor []string) Adoption {
	now := map[string]bool{}
	for _, g := range hypervisor {
		now[g] = true
	}
	var a Adoption
	a.Running = append(a.Running, hypervisor...)
	for _, g := range reported {
		if !now[g] {
			a.Gone = append(a.Gone, g)
		}
	}
	sort.Strings(a.Running)
	sort.Strings(a.Gone)
	return a
}
