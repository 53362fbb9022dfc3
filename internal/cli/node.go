package cli

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/model"
)

func init() {
	Register(&Command{
		Path:  "node list",
		Short: "list the cluster's hosts with their state (online, offline, maintenance) and facts",
		Flags: nodeListFlags,
	})
	Register(&Command{
		Path:    "node remove",
		Args:    "NAME",
		Short:   "forget an offline host (registration and store membership)",
		Example: "haven node remove h4",
		Flags:   nodeRemoveFlags,
	})
}

func nodeListFlags(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	return func(ctx context.Context, env *Env, args []string) error { return runNodeList(ctx, env, cf, args) }
}

func runNodeList(ctx context.Context, env *Env, cf *clientFlags, args []string) error {
	c, err := cf.connect(env, args, 0, "")
	if err != nil {
		return err
	}
	defer c.Close()
	ns, err := c.Nodes(ctx)
	if err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(env.Stdout, ns)
	}
	// Status knows what the node records do not: maintenance, and hosts
	// whose lease runs but that do not answer.
	hosts := map[string]api.Host{}
	if st, err := c.Status(ctx); err == nil {
		for _, h := range st.Hosts {
			hosts[h.Name] = h
		}
	}
	tw := newTable(env.Stdout, "NAME", "STATE", "SINCE", "STORE", "MEMORY", "CPUS", "HYPERVISOR", "VERSION", "API")
	for _, n := range ns {
		state, mem, cpus, hv, ver := "offline", "", "", "", ""
		if n.Online {
			state = "online"
		}
		if h, ok := hosts[n.Name]; ok && h.State == state {
			state = hostState(h)
		}
		if f := n.Facts; f != nil {
			mem = fmt.Sprintf("%.1f GiB", float64(f.Memory)/float64(model.GiB))
			cpus, hv, ver = strconv.Itoa(f.CPUs), f.Hypervisor, f.AgentVersion
		}
		storeRole := "client"
		if n.StoreMember {
			storeRole = "member"
		}
		tw.row(n.Name, state, fmtTime(n.Since), storeRole, mem, cpus, hv, ver, n.APIAddr)
	}
	return tw.flush()
}

func nodeRemoveFlags(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	return func(ctx context.Context, env *Env, args []string) error { return runNodeRemove(ctx, env, cf, args) }
}

func runNodeRemove(ctx context.Context, env *Env, cf *clientFlags, pos []string) error {
	c, err := cf.connect(env, pos, 1, "one node name")
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.RemoveNode(ctx, pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "node %q removed\n", pos[0])
	return nil
}
