package qemu

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/haven-ha/haven/internal/hypervisor"
)

func (d *Driver) emit(g *guest, kind hypervisor.EventKind, reason string) {
	d.log.Info("guest event", "guest", g.name, "event", kind, "reason", reason)
	d.events.push(hypervisor.Event{Guest: g.name, Kind: kind, Reason: reason, At: d.cfg.Now()})
}

// waitChild reaps a QEMU the driver started.
func (d *Driver) waitChild(g *guest) {
	err := g.child.Wait()
	how := "exited"
	if err != nil {
		how = err.Error()
	}
	d.onExit(g, "qemu "+how)
}

// onExit runs once when a guest's QEMU is gone.
func (d *Driver) onExit(g *guest, how string) {
	d.mu.Lock()
	if g.gone {
		d.mu.Unlock()
		return
	}
	g.gone = true
	closed := d.closed || g.starting
	mon := g.mon
	if !closed {
		// Under d.mu: a Start of the same name waits, so these never remove
		// the files of the next QEMU.
		os.Remove(filepath.Join(g.dir, "qmp.sock"))
		os.Remove(filepath.Join(g.dir, "qemu.pid"))
		os.Remove(filepath.Join(g.dir, "incoming"))
		os.Remove(filepath.Join(g.dir, "qga.sock"))
		os.Remove(filepath.Join(g.dir, "console.sock"))
		os.Remove(filepath.Join(g.dir, "vnc.sock"))
	}
	var kind hypervisor.EventKind
	var reason string
	switch {
	case g.migratedAway:
		d.setState(g, hypervisor.Shutoff, "migrated away")
	case g.panicked:
		kind, reason = hypervisor.EventCrashed, "guest panicked"
		d.setState(g, hypervisor.Crashed, reason)
	case g.incoming && !g.stopping:
		kind, reason = hypervisor.EventStopped, "incoming migration failed: "+how
		d.setState(g, hypervisor.Shutoff, reason)
	case g.shutdownGuest:
		kind, reason = hypervisor.EventStopped, "shutdown from inside"
		d.setState(g, hypervisor.Shutoff, reason)
	case g.stopping:
		kind, reason = hypervisor.EventStopped, "stopped by haven"
		d.setState(g, hypervisor.Shutoff, reason)
	default:
		kind, reason = hypervisor.EventCrashed, how
		if g.shutdownReason != "" {
			reason += " (" + g.shutdownReason + ")"
		}
		d.setState(g, hypervisor.Crashed, reason)
	}
	d.mu.Unlock()
	close(g.exited)
	if !closed && kind != "" {
		d.emit(g, kind, reason)
	}
	if mon != nil {
		mon.close()
	}
}

// onQMPEvent handles an asynchronous QMP event of g.
func (d *Driver) onQMPEvent(g *guest, e qmpEvent) {
	var emit hypervisor.EventKind
	var reason string
	d.mu.Lock()
	switch e.Event {
	case "GUEST_PANICKED":
		// The pvpanic device: the guest kernel panicked. QEMU pauses or
		// exits by its panic action; either way the guest is dead, and
		// is reported crashed once its QEMU is gone (killed here, so that
		// a paused one does not linger).
		if !g.panicked && !g.stopping && !g.incoming {
			g.panicked = true
			pid := g.pid
			d.mu.Unlock()
			d.log.Warn("guest kernel panicked; killing its QEMU", "guest", g.name, "pid", pid)
			if pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
	case "SHUTDOWN":
		var data struct {
			Guest  bool   `json:"guest"`
			Reason string `json:"reason"`
		}
		json.Unmarshal(e.Data, &data)
		g.shutdownGuest = data.Guest
		g.shutdownReason = data.Reason
	case "BLOCK_IO_ERROR":
		var data struct {
			Device    string `json:"device"`
			NodeName  string `json:"node-name"`
			Operation string `json:"operation"`
			Action    string `json:"action"`
			Reason    string `json:"reason"`
		}
		json.Unmarshal(e.Data, &data)
		if data.Action == "stop" && g.state != hypervisor.Paused {
			dev := data.Device
			if dev == "" {
				dev = data.NodeName
			}
			reason = fmt.Sprintf("io-error: %s on %s: %s", data.Operation, dev, data.Reason)
			d.setState(g, hypervisor.Paused, "io-error")
			emit = hypervisor.EventPaused
		}
	case "STOP":
		// A pause that is not a migration's switchover and not already an
		// I/O error: someone paused the guest.
		if !g.migrating && !g.incoming && g.state == hypervisor.Running {
			d.setState(g, hypervisor.Paused, "paused")
			emit, reason = hypervisor.EventPaused, "paused"
		}
	case "RESUME":
		switch {
		case g.incoming:
			g.incoming = false
			os.Remove(filepath.Join(g.dir, "incoming"))
			d.setState(g, hypervisor.Running, "migrated in")
			emit, reason = hypervisor.EventResumed, "incoming migration completed"
		case g.state == hypervisor.Paused:
			d.setState(g, hypervisor.Running, "resumed")
			emit, reason = hypervisor.EventResumed, "resumed"
		}
	}
	d.mu.Unlock()
	if emit != "" && !d.isClosed() {
		d.emit(g, emit, reason)
	}
}

// eventQueue is an unbounded FIFO in front of the Events channel, so a slow
// reader never blocks the monitor and no event is dropped.
type eventQueue struct {
	out    chan hypervisor.Event
	mu     sync.Mutex
	queue  []hypervisor.Event
	wake   chan struct{}
	done   chan struct{}
	closed bool
}

func newEventQueue() *eventQueue {
	q := &eventQueue{out: make(chan hypervisor.Event, 64), wake: make(chan struct{}, 1), done: make(chan struct{})}
	go q.pump()
	return q
}

func (q *eventQueue) push(e hypervisor.Event) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.queue = append(q.queue, e)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *eventQueue) pump() {
	defer close(q.out)
	for {
		q.mu.Lock()
		if len(q.queue) == 0 {
			q.mu.Unlock()
			select {
			case <-q.wake:
				continue
			case <-q.done:
				return
			}
		}
		e := q.queue[0]
		q.queue = q.queue[1:]
		q.mu.Unlock()
		select {
		case q.out <- e:
		case <-q.done:
			return
		}
	}
}

func (q *eventQueue) close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.done)
	}
	q.mu.Unlock()
}
