package control

import (
	"fmt"
	"maps"
	"slices"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/storage"
)

// Change is a change of configuration applied to the core's state outside
// Step: a node registered, a guest or domain created, edited or deleted,
// the policy or the pools changed. It is plain data (JSON), so that the
// inputs of a term can be recorded and replayed. At most one field is set;
// none is a no-op (the shell still steps with Tick).
type Change struct {
	// AddNode registers a node (offline until its lease appears).
	AddNode string `json:"add_node,omitempty"`
	// Guest is a guest record created or edited, with what the feed knew
	// when it came: which node's agent reports it running, and the pools.
	Guest *GuestChange `json:"guest,omitempty"`
	// RemoveGuest deletes a guest (refused while it runs or is busy).
	RemoveGuest string `json:"remove_guest,omitempty"`
	// Domain is a failover domain created or edited.
	Domain *model.Domain `json:"domain,omitempty"`
	// RemoveDomain deletes a failover domain.
	RemoveDomain string `json:"remove_domain,omitempty"`
	// Policy is the cluster policy (the default one when it was deleted).
	Policy *cluster.Policy `json:"policy,omitempty"`
	// Pinned is every guest's storage verdict after a pool changed: true
	// when its disks are not all on shared storage.
	Pinned map[string]bool `json:"pinned,omitempty"`
	// NodePools is a node's list of pools its agent found unusable.
	NodePools *NodePools `json:"node_pools,omitempty"`
}

// GuestChange is a guest record and its context.
type GuestChange struct {
	Record    cluster.Guest  `json:"record"`
	RunningOn string         `json:"running_on,omitempty"`
	Pools     []storage.Pool `json:"pools,omitempty"`
}

// NodePools is one node's unusable pools.
type NodePools struct {
	Node    string   `json:"node"`
	Missing []string `json:"missing,omitempty"`
}

// Apply makes the change to st.
func (c *Change) Apply(st *manager.State) error {
	switch {
	case c.AddNode != "":
		if st.HasNode(c.AddNode) {
			return nil
		}
		return st.AddNode(c.AddNode, 0, 0)
	case c.Guest != nil:
		return applyGuest(st, c.Guest.Record, c.Guest.RunningOn, c.Guest.Pools)
	case c.RemoveGuest != "":
		return st.RemoveGuest(c.RemoveGuest)
	case c.Domain != nil:
		return st.PutDomain(*c.Domain)
	case c.RemoveDomain != "":
		return st.RemoveDomain(c.RemoveDomain)
	case c.Policy != nil:
		applyPolicy(&st.Config, *c.Policy)
		return st.PutRules(c.Policy.Rules)
	case c.Pinned != nil:
		// In name order, so that an error is the same on every replay.
		for _, name := range slices.Sorted(maps.Keys(c.Pinned)) {
			p := c.Pinned[name]
			g := st.Guest(name)
			if g == nil || g.Spec.Pinned == p {
				continue
			}
			spec := g.Spec
			spec.Pinned = p
			if err := st.UpdateGuestSpec(spec); err != nil {
				return fmt.Errorf("guest %q: %w", name, err)
			}
		}
		return nil
	case c.NodePools != nil:
		if !st.HasNode(c.NodePools.Node) {
			return nil
		}
		return st.SetNodePools(c.NodePools.Node, c.NodePools.Missing)
	}
	return nil
}
