package hostagent

import (
	"context"
	"time"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/storage"
)

// PoolCheckEvery is how often a host checks the storage pools.
const PoolCheckEvery = 10 * time.Second

// poolLoop checks every storage pool on this host: present, writable, free
// space, and, for a pool declared shared, that the markers the other hosts
// wrote into it are visible here (so it really is the same storage). The
// results go to the store under the node's lease, where the manager and the
// operators read them.
func (h *Host) poolLoop(ctx context.Context) {
	t := time.NewTicker(PoolCheckEvery)
	defer t.Stop()
	for {
		h.checkPools(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *Host) checkPools(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, PoolCheckEvery)
	defer cancel()
	cs := h.cfg.Cluster
	pools, err := cs.Pools(ctx)
	if err != nil || len(pools) == 0 {
		return
	}
	others, err := cs.PoolHealths(ctx)
	if err != nil {
		return
	}
	for _, p := range pools {
		ph := cluster.PoolHealth{Health: p.Check(ctx, h.cfg.Node), Checked: h.cfg.Now()}
		if ph.OK() && p.Shared && p.Kind != storage.KindLVM && !p.Devices {
			ph.Token = storage.NewToken()
			if err := p.WriteMarker(h.cfg.Node, ph.Token, h.cfg.Now()); err != nil {
				ph.Error = err.Error()
			} else if seen, err := p.ReadMarkers(); err != nil {
				ph.Error = err.Error()
			} else {
				published := map[string]string{}
				for node, o := range others[p.Name] {
					if node != h.cfg.Node && o.Token != "" {
						published[node] = o.Token
					}
				}
				ph.NotSharedWith = storage.VerifyShared(published, seen)
			}
		}
		if err := cs.PutPoolHealth(ctx, h.cfg.Node, ph, h.cfg.Live.Lease()); err != nil {
			h.log.Warn("pool check not stored", "pool", p.Name, "err", err)
			continue
		}
		if !ph.Usable() {
			h.log.Warn("pool not usable on this host", "pool", p.Name, "error", ph.Error, "not_shared_with", ph.NotSharedWith)
		}
	}
}
