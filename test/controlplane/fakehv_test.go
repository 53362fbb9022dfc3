package controlplane

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
)

// fleet is the simulated hosts' hypervisors, so that a live migration can
// reach its target. It lives only in this test package: the daemon never
// runs it.
type fleet struct {
	mu    sync.Mutex
	hosts map[string]*fakeHV
}

func (f *fleet) add(node string) *fakeHV {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := &fakeHV{node: node, fleet: f, guests: map[string]hypervisor.State{}, events: make(chan hypervisor.Event, 1024)}
	f.hosts[node] = h
	return h
}

func (f *fleet) host(node string) *fakeHV {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hosts[node]
}

// fakeHV is an honest in-memory hypervisor: guests run where they were
// started until stopped, killed or migrated away, and every call says what
// really happened (an unknown guest is ErrNotFound, a second start
// ErrAlreadyRunning). It boots nothing.
type fakeHV struct {
	node   string
	fleet  *fleet
	mu     sync.Mutex
	guests map[string]hypervisor.State
	off    bool // the host lost power: every call fails
	events chan hypervisor.Event
}

var errPoweredOff = fmt.Errorf("host powered off: %w", hypervisor.ErrUnavailable)

func (h *fakeHV) Name() string { return "bench" }

func (h *fakeHV) Start(ctx context.Context, def guestdef.Definition) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.off {
		return errPoweredOff
	}
	if s, ok := h.guests[def.Name]; ok && s != hypervisor.Incoming {
		return fmt.Errorf("start %s on %s: %w", def.Name, h.node, hypervisor.ErrAlreadyRunning)
	}
	h.guests[def.Name] = hypervisor.Running
	return nil
}

func (h *fakeHV) Stop(ctx context.Context, name string, _ time.Duration) error {
	return h.Kill(ctx, name)
}

func (h *fakeHV) Kill(ctx context.Context, name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.off {
		return errPoweredOff
	}
	if _, ok := h.guests[name]; !ok {
		return fmt.Errorf("stop %s on %s: %w", name, h.node, hypervisor.ErrNotFound)
	}
	delete(h.guests, name)
	return nil
}

func (h *fakeHV) Status(ctx context.Context, name string) (hypervisor.Status, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.off {
		return hypervisor.Status{}, errPoweredOff
	}
	s, ok := h.guests[name]
	if !ok {
		return hypervisor.Status{}, fmt.Errorf("%s on %s: %w", name, h.node, hypervisor.ErrNotFound)
	}
	return hypervisor.Status{Name: name, State: s}, nil
}

func (h *fakeHV) List(ctx context.Context) ([]hypervisor.Status, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.off {
		return nil, errPoweredOff
	}
	out := make([]hypervisor.Status, 0, len(h.guests))
	for name, s := range h.guests {
		out = append(out, hypervisor.Status{Name: name, State: s})
	}
	return out, nil
}

func (h *fakeHV) Events() <-chan hypervisor.Event { return h.events }

func (h *fakeHV) PrepareIncoming(ctx context.Context, def guestdef.Definition, _ hypervisor.IncomingOptions) (hypervisor.MigrationTarget, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.off {
		return hypervisor.MigrationTarget{}, errPoweredOff
	}
	if _, ok := h.guests[def.Name]; ok {
		return hypervisor.MigrationTarget{}, fmt.Errorf("receive %s on %s: %w", def.Name, h.node, hypervisor.ErrAlreadyRunning)
	}
	h.guests[def.Name] = hypervisor.Incoming
	return hypervisor.MigrationTarget{Node: h.node, URI: "bench:" + h.node}, nil
}

func (h *fakeHV) Migrate(ctx context.Context, name string, t hypervisor.MigrationTarget, progress func(hypervisor.Progress)) error {
	dst := h.fleet.host(strings.TrimPrefix(t.URI, "bench:"))
	if dst == nil {
		return fmt.Errorf("migrate %s: no host at %q", name, t.URI)
	}
	h.mu.Lock()
	if h.off {
		h.mu.Unlock()
		return errPoweredOff
	}
	if h.guests[name] != hypervisor.Running {
		h.mu.Unlock()
		return fmt.Errorf("migrate %s from %s: %w", name, h.node, hypervisor.ErrNotFound)
	}
	h.mu.Unlock()
	dst.mu.Lock()
	if dst.off || dst.guests[name] != hypervisor.Incoming {
		dst.mu.Unlock()
		return fmt.Errorf("migrate %s: %s is not waiting for it", name, dst.node)
	}
	dst.guests[name] = hypervisor.Running
	dst.mu.Unlock()
	h.mu.Lock()
	delete(h.guests, name)
	h.mu.Unlock()
	now := time.Now()
	dst.events <- hypervisor.Event{Guest: name, Kind: hypervisor.EventResumed, At: now}
	h.events <- hypervisor.Event{Guest: name, Kind: hypervisor.EventMigrated, At: now}
	return nil
}

func (h *fakeHV) Close() error { return nil }

// powerOff loses every guest of the host at once, as a power loss does.
func (h *fakeHV) powerOff() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.off = true
	h.guests = map[string]hypervisor.State{}
}

func (h *fakeHV) running() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, s := range h.guests {
		if s == hypervisor.Running {
			n++
		}
	}
	return n
}
