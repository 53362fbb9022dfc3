package qemu

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
)

func (d *Driver) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// live returns the running guest named name.
func (d *Driver) live(name string) (*guest, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("driver closed: %w", hypervisor.ErrUnavailable)
	}
	g, ok := d.guests[name]
	if !ok || g.gone {
		return nil, hypervisor.ErrNotFound
	}
	return g, nil
}

// Stop implements hypervisor.Driver: the ACPI power button (QMP
// system_powerdown), then SIGKILL after timeout. A guest waiting for an
// incoming migration is killed at once.
func (d *Driver) Stop(ctx context.Context, name string, timeout time.Duration) error {
	g, err := d.live(name)
	if err != nil {
		return fmt.Errorf("stop guest %q: %w", name, err)
	}
	d.mu.Lock()
	g.stopping = true
	mon, incoming := g.mon, g.incoming
	d.mu.Unlock()
	d.log.Info("stopping guest", "guest", name, "op", "stop", "timeout", timeout)
	if incoming {
		// Nothing runs yet: no guest to shut down gracefully.
		timeout = 0
	} else if mon != nil {
		if err := mon.run(ctx, "system_powerdown", nil, nil); err != nil && !errors.Is(err, errMonitorClosed) {
			d.log.Warn("system_powerdown failed", "guest", name, "err", err)
		}
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-g.exited:
		return nil
	case <-ctx.Done():
		// Still make sure it is off before returning.
		d.forceOff(g)
		return fmt.Errorf("stop guest %q: %w (forced off)", name, ctx.Err())
	case <-t.C:
	}
	d.log.Warn("guest ignored the power button, forcing it off", "guest", name, "op", "stop")
	d.forceOff(g)
	select {
	case <-g.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop guest %q: QEMU pid %d did not exit after SIGKILL: %w", name, g.pid, ctx.Err())
	}
}

// forceOff SIGKILLs g's QEMU.
func (d *Driver) forceOff(g *guest) {
	d.mu.Lock()
	g.stopping = true
	pid := g.pid
	d.mu.Unlock()
	if pid > 0 {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Kill implements hypervisor.Driver.
func (d *Driver) Kill(ctx context.Context, name string) error {
	g, err := d.live(name)
	if err != nil {
		return fmt.Errorf("kill guest %q: %w", name, err)
	}
	d.log.Info("killing guest", "guest", name, "op", "kill")
	d.forceOff(g)
	select {
	case <-g.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kill guest %q: QEMU pid %d has not exited: %w", name, g.pid, ctx.Err())
	}
}

// Status implements hypervisor.Driver. For a live guest it asks QEMU
// (query-status) under ctx; a guest that exited keeps its last state until it
// is started again.
func (d *Driver) Status(ctx context.Context, name string) (hypervisor.Status, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return hypervisor.Status{}, fmt.Errorf("status of guest %q: driver closed: %w", name, hypervisor.ErrUnavailable)
	}
	g, ok := d.guests[name]
	if !ok {
		d.mu.Unlock()
		return hypervisor.Status{}, fmt.Errorf("status of guest %q: %w", name, hypervisor.ErrNotFound)
	}
	mon, gone := g.mon, g.gone
	d.mu.Unlock()
	if !gone && mon != nil {
		var st struct {
			Status string `json:"status"`
		}
		if err := mon.run(ctx, "query-status", nil, &st); err == nil {
			d.mu.Lock()
			d.applyRunState(g, st.Status)
			d.mu.Unlock()
		} else if !errors.Is(err, errMonitorClosed) {
			return hypervisor.Status{}, fmt.Errorf("status of guest %q: %w", name, err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status(g), nil
}

// applyRunState folds QEMU's run state into g; callers hold d.mu.
func (d *Driver) applyRunState(g *guest, rs string) {
	if g.incoming && rs != "inmigrate" {
		// The incoming migration is over (a guest that was paused on the
		// source arrives paused, without a RESUME event).
		g.incoming = false
	}
	switch rs {
	case "running":
		if g.state != hypervisor.Running {
			d.setState(g, hypervisor.Running, "running")
		}
	case "io-error":
		d.setState(g, hypervisor.Paused, "io-error")
	case "paused", "suspended", "debug", "watchdog", "internal-error", "colo", "restore-vm", "save-vm", "prelaunch":
		if g.state != hypervisor.Paused {
			d.setState(g, hypervisor.Paused, rs)
		}
	case "inmigrate":
		d.setState(g, hypervisor.Incoming, "waiting for migration")
	case "finish-migrate", "postmigrate":
		d.setState(g, hypervisor.Paused, "migrating")
	case "guest-panicked":
		d.setState(g, hypervisor.Crashed, "guest panicked")
	case "shutdown":
		d.setState(g, hypervisor.Shutoff, "shutting down")
	}
}

func (d *Driver) status(g *guest) hypervisor.Status {
	s := hypervisor.Status{Name: g.name, State: g.state, Reason: g.reason, Since: g.since}
	if !g.gone {
		s.PID = g.pid
	}
	return s
}

// List implements hypervisor.Driver: every guest whose QEMU runs here.
func (d *Driver) List(ctx context.Context) ([]hypervisor.Status, error) {
	d.mu.Lock()
	var names []string
	for name, g := range d.guests {
		if !g.gone {
			names = append(names, name)
		}
	}
	d.mu.Unlock()
	var out []hypervisor.Status
	for _, n := range names {
		s, err := d.Status(ctx, n)
		if errors.Is(err, hypervisor.ErrNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("list guests: %w", err)
		}
		if s.State != hypervisor.Shutoff && s.State != hypervisor.Crashed || s.PID != 0 {
			out = append(out, s)
		}
	}
	return out, nil
}

// Definition returns the definition a running guest was started with.
func (d *Driver) Definition(name string) (guestdef.Definition, error) {
	g, err := d.live(name)
	if err != nil {
		return guestdef.Definition{}, fmt.Errorf("definition of guest %q: %w", name, err)
	}
	return g.def, nil
}
