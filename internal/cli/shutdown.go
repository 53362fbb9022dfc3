package cli

import (
	"github.com/spf13/pflag"

	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/haven-ha/haven/internal/ha"
)

func init() {
	Register(&Command{
		Path:  "node shutdown",
		Args:  "NAME [--reboot] [--wait] [--timeout 10m]",
		Short: "shut a host down gracefully: apply the shutdown policy to its guests, then let it go",
		Flags: cmdNodeShutdown,
	})
}

func cmdNodeShutdown(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	reboot := fs.Bool("reboot", false, "the host reboots: its guests come back once it is online again")
	wait := fs.Bool("wait", false, "wait until the manager says the host is empty")
	timeout := fs.Duration("timeout", 10*time.Minute, "with --wait: give up after this long")
	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
		if len(pos) != 1 {
			return Usagef("give one host name")
		}
		name := pos[0]
		c, err := cf.client(env)
		if err != nil {
			return err
		}
		defer c.Close()
		path := "/api/v1/nodes/" + url.PathEscape(name) + "/shutdown"
		var st ha.ShutdownStatus
		if err := c.Do(ctx, "POST", path, ha.ShutdownRequest{Reboot: *reboot}, &st); err != nil {
			return err
		}
		if *wait {
			wctx, cancel := context.WithTimeout(ctx, *timeout)
			defer cancel()
			tick := time.NewTicker(500 * time.Millisecond)
			defer tick.Stop()
			for !st.Ready {
				select {
				case <-wctx.Done():
					return fmt.Errorf("host %q is not empty after %v: see 'haven status' for the guests still on it", name, *timeout)
				case <-tick.C:
				}
				if err := c.Do(wctx, "GET", path, nil, &st); err != nil {
					return err
				}
			}
		}
		if cf.output == "json" {
			return printJSON(env.Stdout, st)
		}
		switch {
		case st.Ready:
			fmt.Fprintf(env.Stdout, "host %s is empty: it may shut down now\n", name)
		default:
			fmt.Fprintf(env.Stdout, "shutdown of host %s recorded; the manager is moving its guests (use --wait to wait)\n", name)
		}
		return nil
	}
}
