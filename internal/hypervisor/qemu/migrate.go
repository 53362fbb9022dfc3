package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor"
)

// PrepareIncoming implements hypervisor.Driver: it starts QEMU with def's
// arguments plus -incoming tcp:MigrationAddr:PORT on a free port, listening
// with TLS when opts allow it and the driver has the credentials.
func (d *Driver) PrepareIncoming(ctx context.Context, def guestdef.Definition, opts hypervisor.IncomingOptions) (hypervisor.MigrationTarget, error) {
	tls := opts.TLS && d.tlsDir != ""
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort(d.cfg.MigrationAddr)
		if err != nil {
			return hypervisor.MigrationTarget{}, fmt.Errorf("prepare incoming migration of guest %q: find a free port on %s: %w", def.Name, d.cfg.MigrationAddr, err)
		}
		uri := "tcp:" + net.JoinHostPort(d.cfg.MigrationAddr, strconv.Itoa(port))
		err = d.launch(ctx, def, uri, tls)
		if err == nil {
			return hypervisor.MigrationTarget{Node: d.cfg.Node, URI: uri, TLS: tls}, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "in use") || ctx.Err() != nil {
			break
		}
	}
	return hypervisor.MigrationTarget{}, fmt.Errorf("prepare incoming migration of guest %q: %w", def.Name, lastErr)
}

// hasTLS reports whether g's QEMU was started with the migration TLS
// credentials (an adopted guest is asked through its command line).
func (d *Driver) hasTLS(g *guest) bool {
	d.mu.Lock()
	pid := g.pid
	d.mu.Unlock()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && strings.Contains(string(b), tlsClientID)
}

func freePort(addr string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// migrationInfo is the part of query-migrate the driver reads.
type migrationInfo struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
	Downtime  int64  `json:"downtime"` // ms
	RAM       *struct {
		Total     int64 `json:"total"`
		Remaining int64 `json:"remaining"`
	} `json:"ram"`
}

// Migrate implements hypervisor.Driver: QMP migrate to target.URI, polling
// query-migrate every 50 ms. On success the source QEMU quits and an
// EventMigrated is emitted; on failure or ctx end the migration is cancelled
// and the guest keeps running here (cont when QEMU left it paused).
func (d *Driver) Migrate(ctx context.Context, name string, target hypervisor.MigrationTarget, progress func(hypervisor.Progress)) error {
	g, err := d.live(name)
	if err != nil {
		return fmt.Errorf("migrate guest %q to node %q: %w", name, target.Node, err)
	}
	d.mu.Lock()
	if g.migrating {
		d.mu.Unlock()
		return fmt.Errorf("migrate guest %q to node %q: a migration is already running", name, target.Node)
	}
	if g.incoming || g.mon == nil {
		d.mu.Unlock()
		return fmt.Errorf("migrate guest %q to node %q: guest is not running here (state %s)", name, target.Node, g.state)
	}
	g.migrating = true
	mon := g.mon
	d.mu.Unlock()
	log := d.log.With("guest", name, "op", "migrate", "target", target.Node, "uri", target.URI)
	err = d.migrate(ctx, g, mon, target, progress, log)
	d.mu.Lock()
	g.migrating = false
	d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("migrate guest %q to node %q (%s): %w", name, target.Node, target.URI, err)
	}
	return nil
}

func (d *Driver) migrate(ctx context.Context, g *guest, mon *monitor, target hypervisor.MigrationTarget, progress func(hypervisor.Progress), log *slog.Logger) error {
	if !strings.HasPrefix(target.URI, "tcp:") && !strings.HasPrefix(target.URI, "unix:") {
		return fmt.Errorf("target URI %q is not a QEMU migration URI (tcp:HOST:PORT)", target.URI)
	}
	log.Info("migration starting")
	if bw := d.cfg.MigrationBandwidth; bw > 0 {
		if err := mon.run(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": bw}, nil); err != nil {
			return fmt.Errorf("set migration bandwidth: %w", err)
		}
	}
	if target.TLS {
		if !d.hasTLS(g) {
			return fmt.Errorf("the target listens with TLS, but this guest's QEMU has no TLS credentials (it was started without them): restart the guest, or turn migration TLS off on the target")
		}
		// The credentials as they are now (a CA rotation may have
		// changed them since this QEMU started).
		if err := d.reloadTLS(ctx, mon, log); err != nil {
			return err
		}
		if err := mon.run(ctx, "migrate-set-parameters", map[string]any{"tls-hostname": target.Node}, nil); err != nil {
			return fmt.Errorf("set migration TLS: %w", err)
		}
	} else if d.hasTLS(g) {
		// A target without TLS (an older agent): plain TCP.
		if err := mon.run(ctx, "migrate-set-parameters", map[string]any{"tls-creds": ""}, nil); err != nil {
			return fmt.Errorf("clear migration TLS: %w", err)
		}
		log.Warn("migrating without TLS: the target does not offer it")
	}
	if err := mon.run(ctx, "migrate", map[string]any{"uri": target.URI}, nil); err != nil {
		if mi, done := d.cancelMigration(g, mon, log); done {
			d.completed(g, mon, target, mi, log)
			return nil
		}
		return err
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		var mi migrationInfo
		err := mon.run(ctx, "query-migrate", nil, &mi)
		if err != nil {
			if errors.Is(err, errMonitorClosed) {
				return fmt.Errorf("source QEMU died during migration: %w", err)
			}
			if mi, done := d.cancelMigration(g, mon, log); done {
				d.completed(g, mon, target, mi, log)
				return nil
			}
			return err
		}
		if progress != nil && mi.RAM != nil {
			p := hypervisor.Progress{Total: mi.RAM.Total, Remaining: mi.RAM.Remaining}
			if mi.Status == "completed" {
				p.Remaining = 0
				p.Downtime = time.Duration(mi.Downtime) * time.Millisecond
			}
			progress(p)
		}
		switch mi.Status {
		case "completed":
			d.completed(g, mon, target, mi, log)
			return nil
		case "failed", "cancelled":
			d.recover(g, mon, log)
			desc := mi.ErrorDesc
			if desc == "" {
				desc = mi.Status
			}
			return fmt.Errorf("migration %s: %s (guest keeps running here)", mi.Status, desc)
		}
		select {
		case <-ctx.Done():
			if mi, done := d.cancelMigration(g, mon, log); done {
				d.completed(g, mon, target, mi, log)
				return nil
			}
			return fmt.Errorf("%w (migration cancelled; guest keeps running here)", ctx.Err())
		case <-t.C:
		}
	}
}

// completed finishes a migration QEMU reports complete: the guest now runs
// on the target, so the source QEMU quits (waited for, up to a few seconds).
func (d *Driver) completed(g *guest, mon *monitor, target hypervisor.MigrationTarget, mi migrationInfo, log *slog.Logger) {
	d.mu.Lock()
	g.migratedAway, g.stopping = true, true
	d.setState(g, hypervisor.Shutoff, "migrated to "+target.Node)
	d.mu.Unlock()
	log.Info("migration completed", "downtime_ms", mi.Downtime)
	d.emit(g, hypervisor.EventMigrated, "to node "+target.Node)
	// The source QEMU is gone before Migrate returns, so the guest can come
	// back here at once.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := mon.run(ctx, "quit", nil, nil); err != nil && !errors.Is(err, errMonitorClosed) {
		d.forceOff(g)
	}
	select {
	case <-g.exited:
		return
	case <-ctx.Done():
	}
	log.Warn("source QEMU did not quit after migration, killing it")
	d.forceOff(g)
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-g.exited:
	case <-t.C:
		log.Error("source QEMU still there after SIGKILL", "pid", g.pid)
	}
}

// cancelMigration cancels a running migration and makes sure the guest runs
// here again. When the migration completed anyway it reports done (and the
// guest must not be resumed here: it runs on the target).
func (d *Driver) cancelMigration(g *guest, mon *monitor, log *slog.Logger) (migrationInfo, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	log.Warn("cancelling migration")
	mon.run(ctx, "migrate_cancel", nil, nil)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var mi migrationInfo
	for ctx.Err() == nil {
		mi = migrationInfo{}
		if err := mon.run(ctx, "query-migrate", nil, &mi); err != nil {
			break
		}
		if mi.Status == "completed" {
			return mi, true
		}
		if s := mi.Status; s != "active" && s != "setup" && s != "cancelling" && s != "device" && s != "pre-switchover" {
			break
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	d.recover(g, mon, log)
	return mi, false
}

// recover resumes the source guest when a failed migration left it paused.
func (d *Driver) recover(g *guest, mon *monitor, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var mi migrationInfo
	if err := mon.run(ctx, "query-migrate", nil, &mi); err != nil || mi.Status == "completed" || mi.Status == "active" {
		// Never resume a guest that may be running on the target.
		log.Error("after failed migration: not resuming the guest here", "migration", mi.Status, "err", err)
		return
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := mon.run(ctx, "query-status", nil, &st); err != nil {
		log.Error("after failed migration: query-status", "err", err)
		return
	}
	if st.Status == "postmigrate" || st.Status == "finish-migrate" || st.Status == "paused" {
		if err := mon.run(ctx, "cont", nil, nil); err != nil {
			log.Error("after failed migration: cont", "err", err)
			return
		}
		log.Info("guest resumed on the source after a failed migration")
	}
	d.mu.Lock()
	d.setState(g, hypervisor.Running, "migration failed")
	d.mu.Unlock()
}
