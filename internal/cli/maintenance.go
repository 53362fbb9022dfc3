package cli

// `haven node maintenance NAME on|off`: move a host's guests away (live
// migration where allowed) and keep new ones off it, or take it back.

import (
	"github.com/spf13/pflag"

	"context"
	"time"
)

func init() {
	Register(&Command{Path: "node maintenance", Args: "NAME on|off", Example: "haven node maintenance h2 on --wait 10m   # until its guests have moved\nhaven node maintenance h2 off", Short: "put a host in maintenance (its guests move away) or take it out", Flags: cmdNodeMaintenance})
}

func cmdNodeMaintenance(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	wait := fs.Duration("wait", time.Minute, "how long to wait for the outcome (0: only for the manager to accept the command)")
	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
		if len(pos) != 2 || (pos[1] != "on" && pos[1] != "off") {
			return Usagef("give the node's name and on or off")
		}
		c, err := cf.client(env)
		if err != nil {
			return err
		}
		defer c.Close()
		res, err := c.Maintenance(ctx, pos[0], pos[1] == "on")
		if err != nil {
			return err
		}
		return finishCommand(ctx, env, c, cf, res, *wait)
	}
}
