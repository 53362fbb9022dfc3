package cli

// `haven node maintenance NAME on|off`: move a host's guests away (live
// migration where allowed) and keep new ones off it, or take it back.

import (
	"context"
	"time"
)

func init() {
	Register(&Command{Path: "node maintenance", Args: "NAME on|off [--wait 60s] [-o table|json]", Short: "put a host in maintenance (its guests move away) or take it out", Run: runNodeMaintenance})
}

func runNodeMaintenance(ctx context.Context, env *Env, args []string) error {
	fs, cf := opsFlags("node maintenance", env)
	wait := fs.Duration("wait", time.Minute, "how long to wait for the manager to carry the command out")
	pos, err := opsArgs(fs, args)
	if err != nil {
		return err
	}
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
