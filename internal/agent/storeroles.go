package agent

import (
	"context"
	"time"

	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store"
)

// storeRolesTick is how often the manager checks whether it may turn the
// embedded store's roles on.
const storeRolesTick = 5 * time.Second

// enforceStoreRoles turns the embedded store's roles on in a cluster made
// before they existed (a new cluster has them from --init): once every
// online host runs a release that administers the store as root
// (model.FeatureStoreRoles), it gives every registered host its store user
// and turns etcd's authentication on, as root, and records it in the
// cluster's identity. A host that is down then gets its user too; one that
// comes back with an older release can still do everything but root's
// part (signing joins, removing hosts, backups) until it is upgraded.
func (a *Agent) enforceStoreRoles(ctx context.Context, l *store.Leadership) error {
	if a.state.External {
		return nil
	}
	waiting := false
	for {
		if done := a.storeRolesStep(ctx, l, &waiting); done {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(storeRolesTick):
		}
	}
}

// storeRolesStep makes one attempt; it reports whether there is nothing
// left to do in this term.
func (a *Agent) storeRolesStep(ctx context.Context, l *store.Leadership, waiting *bool) bool {
	cc, err := a.st.ClusterConfig(ctx)
	if err != nil || cc.External {
		return err == nil
	}
	if !cc.StoreRoles {
		// Wait for the hosts first: etcd answers whether the roles are on
		// only through raft.
		live, _, err := a.st.LiveNodes(ctx)
		if err != nil {
			return false
		}
		facts := make([]model.NodeFacts, 0, len(live))
		for _, f := range live {
			facts = append(facts, f)
		}
		if f := model.ClusterFeatures(facts); !f.Has(model.FeatureStoreRoles) {
			if !*waiting {
				a.log.Info("store roles wait for every host to upgrade", "op", "store", "behind", f.Behind)
				*waiting = true
			}
			return false
		}
	}
	on, err := a.st.RolesEnforced(ctx)
	if err != nil {
		return false
	}
	if on {
		if !cc.StoreRoles {
			if err := a.st.SetStoreRoles(ctx, true); err != nil {
				return false
			}
		}
		return true
	}
	regs, err := a.st.Nodes(ctx)
	if err != nil {
		return false
	}
	hosts := make([]string, 0, len(regs))
	for _, r := range regs {
		hosts = append(hosts, r.Name)
	}
	if l.Check(ctx) != nil {
		return true
	}
	if err := a.st.EnforceRoles(ctx, hosts); err != nil {
		a.log.Warn("turn the store roles on", "op", "store", "err", err)
		return false
	}
	if err := a.st.SetStoreRoles(ctx, true); err != nil {
		a.log.Warn("record the store roles", "op", "store", "err", err)
		return false
	}
	a.log.Warn("the store enforces its roles now: each host writes only its own reports", "op", "store", "hosts", hosts)
	return true
}
