package sim

import (
	"fmt"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
)

// The guests' health checks in the simulated world (docs/manager.md,
// "Health checks, hangs and panics"). The daemon's agent runs each check
// every interval from the moment the guest runs on its host (or the agent
// adopted it); a failure counts once the start grace has passed or the
// check has passed once; the failures-th counted failure in a row kills the
// guest and reports it crashed. A dead service fails tcp, http and exec
// checks at once (refused); a hung kernel fails every check, including the
// guest agent heartbeat, each after its timeout. The simulator keeps exactly
// this schedule, so the time a fault is noticed is the daemon's.

// watchHealth (re)starts a running guest's checks now, as the agent does
// when the guest starts running on its host, is adopted, or keeps running
// after a failed stop or migration: a new start grace, no pass yet.
func (w *World) watchHealth(n *simNode, g string, v *vm) {
	v.since, v.passed = w.now, false
	w.schedHealth(n, g, v)
}

// unwatchHealth stops a guest's checks (an order stops or moves it).
func (w *World) unwatchHealth(v *vm) {
	w.token++
	v.hgen = w.token
}

// schedHealth schedules the moment a fault of v is noticed, if any check
// notices it. It reports whether one does.
func (w *World) schedHealth(n *simNode, g string, v *vm) bool {
	w.unwatchHealth(v)
	if !v.svcDead && !v.hung {
		return false
	}
	at, reason, ok := w.healthDetect(g, v)
	if !ok {
		return false
	}
	v.healthWhy = reason
	w.push(&item{t: at, kind: itHealthFail, node: n.name, guest: g, token: v.hgen})
	return true
}

// healthDetect computes when the first of g's checks to notice v's fault
// reaches its failure threshold.
func (w *World) healthDetect(g string, v *vm) (time.Duration, string, bool) {
	gi := w.guests[g]
	def := guestdef.Definition{Name: g, GuestAgent: gi.guestAgent, Health: gi.health}
	fault := max(v.faultAt, v.since)
	best, why, found := time.Duration(0), "", false
	for _, c := range def.Checks() {
		var lat time.Duration
		var out string
		switch {
		case v.hung:
			lat, out = c.Timeout.D(), "no answer within "+c.Timeout.D().String()
		case c.Agent:
			continue // the guest agent still answers; the service is dead
		default:
			out = "the service does not answer"
		}
		iv := c.Interval.D()
		k := int64((fault-v.since)/iv) + 1 // the first check after the fault
		passed := v.passed || k >= 2
		count := 0
		var at time.Duration
		for ; ; k++ {
			t := v.since + time.Duration(k)*iv
			if passed || t+lat-v.since >= c.StartGrace.D() {
				count++
			}
			if count >= c.Failures {
				at = t + lat
				break
			}
		}
		if !found || at < best {
			what := fmt.Sprintf("health check %q (%s)", c.Name, c.Kind())
			if c.Name == "heartbeat" {
				what = "guest agent heartbeat (a hung guest?)"
			}
			best, why, found = at, fmt.Sprintf("%s failed %d times in a row: %s", what, c.Failures, out), true
		}
	}
	return best, why, found
}

// healthFail is the agent killing a guest that failed its checks and
// reporting it crashed.
func (w *World) healthFail(n *simNode, it *item) {
	v := n.vms[it.guest]
	if v == nil || v.hgen != it.token || v.state != vmRunning || v.migrating != "" || n.power != powerOn || !n.agentUp {
		return // it stopped, moved, or its agent is down (and checks again when back)
	}
	w.logf("health", "%s on %s: %s; the agent kills it", it.guest, n.name, v.healthWhy)
	w.removeVM(n, it.guest)
	w.crashed(n, it.guest, v.healthWhy)
}

// guestFault applies `service GUEST dies` and `hang GUEST`.
func (w *World) guestFault(g string, hang bool) {
	what := "service dies"
	if hang {
		what = "kernel hangs"
	}
	for _, x := range w.nodes {
		v := x.vms[g]
		if v == nil || v.state != vmRunning {
			continue
		}
		if hang {
			if v.hung {
				w.logf("health", "%s on %s is already hung", g, x.name)
				return
			}
			v.hung = true
		} else {
			if v.svcDead || v.hung {
				w.logf("health", "%s on %s: its service is already down", g, x.name)
				return
			}
			v.svcDead = true
		}
		v.faultAt = w.now
		w.logf("health", "%s on %s: its %s", g, x.name, what)
		if v.migrating != "" || v.state != vmRunning {
			return // checked again once it runs settled
		}
		if !w.schedHealth(x, g, v) {
			w.logf("health", "%s: no health check notices it; it keeps running", g)
		}
		return
	}
	w.logf("health", "%s %s: it is not running; nothing happens", what, g)
}
