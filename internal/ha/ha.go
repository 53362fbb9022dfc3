// Package ha wires high availability into the agent: on every host it runs
// the host side (package hostagent: the manager's orders carried out through
// the hypervisor driver, guest reports, self-fencing); on the elected agent
// it runs the manager (package control around the pure core in package
// manager). It is a plugin of package agent: cmd/haven wires it with
// agent.New(cfg, agent.WithPlugins(ha.New(opts), ...)).
package ha

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/console"
	"github.com/haven-ha/haven/internal/control"
	"github.com/haven-ha/haven/internal/heartbeat"
	"github.com/haven-ha/haven/internal/hostagent"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/watchdog"
)

// DriverFactory opens this host's hypervisor driver. It returns nil, nil for
// a host that runs no guests (a control-plane-only member).
type DriverFactory func(ctx context.Context, a *agent.Agent) (hypervisor.Driver, error)

// Options configure the plugin.
type Options struct {
	Driver DriverFactory
	// WatchdogDevice: see HostOptions.
	WatchdogDevice string
	// Timings override the manager's defaults; the lease TTL and keepalive
	// always come from the agent's own configuration.
	Timings *manager.Timings
	// RecordDir: see HostOptions.
	RecordDir string
	// HealthNetworks: see HostOptions.
	HealthNetworks []netip.Prefix
}

// plugin is the HA plugin of one agent.
type plugin struct {
	opts Options
	mu   sync.Mutex
	a    *agent.Agent // set at Setup
}

// New returns the HA plugin for one agent (agent.WithPlugins): the host
// side (its hypervisor driver, orders, reports, self-fencing), graceful
// shutdown, the guests' consoles, and the manager's term when the agent is
// elected.
func New(o Options) agent.Plugin {
	p := &plugin{opts: o}
	return agent.Plugin{Name: "ha", Setup: p.setup, WhileManager: p.whileManager}
}

// Timings are the manager's timings for agent a with options o.
func Timings(a *agent.Agent, o Options) manager.Timings {
	t := manager.DefaultTimings()
	if o.Timings != nil {
		t = *o.Timings
	}
	cfg := a.Config()
	if cfg.LeaseTTL > 0 {
		t.LeaseTTL = cfg.LeaseTTL
	}
	if cfg.KeepAlive > 0 {
		t.Keepalive = cfg.KeepAlive
	}
	return t
}

func (p *plugin) agent() *agent.Agent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.a
}

func (p *plugin) setup(ctx context.Context, a *agent.Agent) error {
	p.mu.Lock()
	if p.a != nil && p.a != a {
		p.mu.Unlock()
		return fmt.Errorf("ha: this plugin already serves agent %q: give each agent its own ha.New", p.a.Node())
	}
	p.a = a
	p.mu.Unlock()
	if dir := p.opts.RecordDir; dir != "" {
		// Made now, so that a wrong --record fails the start, not the
		// first manager term this agent is elected to serve.
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("agent --record %q: %w", dir, err)
		}
	}
	registerShutdown(a.API(), a.Store())
	if err := clearShutdown(ctx, a.Store(), a.Node()); err != nil {
		return err
	}
	go func() {
		select {
		case <-a.Ready():
		case <-ctx.Done():
			return
		}
		log := a.Config().Logger
		if log == nil {
			log = slog.Default()
		}
		failFast(ctx, a, log)
	}()
	o := p.opts
	var drv hypervisor.Driver
	if o.Driver != nil {
		var err error
		if drv, err = o.Driver(ctx, a); err != nil {
			return fmt.Errorf("open hypervisor driver: %w", err)
		}
	}
	if err := registerConsole(a, drv); err != nil {
		return err
	}
	if drv == nil {
		return nil
	}
	// This host may run guests: until its host side has adopted them, a
	// stop keeps the lease (an agent stopped right after it started must
	// not take the host down with it).
	a.KeepLeaseOnStop(func() bool { return true })
	log := a.Config().Logger
	if log == nil {
		log = slog.Default()
	}
	go func() {
		select {
		case <-a.Ready():
		case <-ctx.Done():
			return
		}
		t := Timings(a, o)
		wd, err := openWatchdog(o.WatchdogDevice, t, log)
		if err != nil {
			log.Error("watchdog unusable: this host will refuse guests in watchdog fencing mode", "op", "watchdog", "err", err)
		}
		h := hostagent.New(hostagent.Config{
			Watchdog:       wd,
			Node:           a.Node(),
			DataDir:        a.DataDir(),
			Cluster:        cluster.New(a.Store()),
			Live:           a.Liveness(),
			Driver:         drv,
			LeaseTTL:       t.LeaseTTL,
			Keepalive:      t.Keepalive,
			StopTimeout:    t.StopTimeout,
			Logger:         log,
			HealthNetworks: o.HealthNetworks,
		})
		// Until its guests are adopted, the host may run guests it does
		// not count yet: a stop then keeps the lease too.
		a.KeepLeaseOnStop(func() bool { return !h.Adopted() || h.Running() > 0 })
		if err := h.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("host side stopped", "err", err)
		}
	}()
	return nil
}

// registerConsole serves the guests' serial consoles (package console):
// attached here for guests of this host, proxied to their host otherwise.
func registerConsole(a *agent.Agent, drv hypervisor.Driver) error {
	console.Register(a.API(), console.Config{Node: a.Node(), Store: a.Store(), Cluster: cluster.New(a.Store()),
		Driver: drv, PeerTLS: a.PeerTLS, Logger: a.Config().Logger})
	return nil
}

func (p *plugin) whileManager(ctx context.Context, l *store.Leadership) error {
	a := p.agent()
	if a == nil {
		return fmt.Errorf("ha: elected on node %q before the plugin's setup", l.Node())
	}
	return control.RunManager(ctx, control.Daemon{
		Cluster:     cluster.New(a.Store()),
		Leader:      l,
		Timings:     Timings(a, p.opts),
		Logger:      a.Config().Logger,
		RecordDir:   p.opts.RecordDir,
		FenceRunner: a.FenceRunner(),
		Beating: func(node string) bool {
			if node == l.Node() {
				return true // the manager's own host: this code runs there
			}
			hb := a.Heartbeat()
			return hb != nil && hb.Verdict(node).State == heartbeat.Alive
		},
		Isolation: func(node string) (string, bool) {
			hb := a.Heartbeat()
			if hb == nil {
				return "", false
			}
			v := hb.Verdict(node)
			return v.String(), v.Isolated()
		},
	})
}

// SelfFenceMargin is how long before its lease could expire in the store a
// host that lost the cluster kills its guests.
const SelfFenceMargin = time.Second

// WatchdogTiming is the self-fencing timing the agents and the manager
// share.
func WatchdogTiming(t manager.Timings) watchdog.Timing {
	return watchdog.Timing{
		LeaseTTL:           t.LeaseTTL,
		KeepaliveInterval:  t.Keepalive,
		WatchdogTimeout:    t.WatchdogTimeout,
		StopGuestsDeadline: t.LeaseTTL - SelfFenceMargin,
		ManagerWait:        t.WatchdogWait(),
	}
}

// openWatchdog checks the self-fencing timing and prepares the watchdog (it
// is opened, and so armed, only when a guest is to run in watchdog mode).
func openWatchdog(device string, t manager.Timings, log *slog.Logger) (*watchdog.Watchdog, error) {
	if device == "" {
		return nil, nil
	}
	timing := WatchdogTiming(t)
	if err := timing.Validate(); err != nil {
		return nil, err
	}
	return watchdog.New(timing.WatchdogConfig(device), watchdog.OpenAny, time.Now, log)
}
