package agent

import (
	"context"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/guestdef"
)

// operatorAPI is the operator endpoints of the API (guests, domains,
// commands, fencing, pools, policy, events, the OpenAPI document) and the
// guests in the status: part of every agent.
func operatorAPI() Plugin {
	return Plugin{Name: "operator-api", Setup: func(ctx context.Context, a *Agent) error {
		api.RegisterOps(a.API(), api.OpsConfig{
			Cluster:     cluster.New(a.Store()),
			Importers:   guestImporters(),
			FenceRunner: a.FenceRunner(),
			Context:     ctx,
		})
		return nil
	}}
}

// guestImporters are the configuration formats `haven guest import` reads.
func guestImporters() map[string]api.Importer {
	return map[string]api.Importer{
		"libvirt": guestdef.FromLibvirtXML,
		"xen":     guestdef.FromXenConfig,
	}
}
