package cli

// `haven events [-f]`: the cluster's event and audit log.

import (
	"github.com/spf13/pflag"

	"context"
	"fmt"

	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/cluster"
)

func init() {
	Register(&Command{Path: "events", Example: "haven events\nhaven events -n 100 --guest web1\nhaven events -f          # follow live; Ctrl-C ends\nhaven events --story -n 500   # each failover as one story with its timings", Short: "show the cluster's event and audit log; -f follows it live", Flags: cmdEvents})
}

func cmdEvents(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	var f client.EventFilter
	fs.IntVarP(&f.N, "lines", "n", 20, "how many of the latest events to show first")
	follow := fs.BoolP("follow", "f", false, "keep showing new events as they happen (Ctrl-C ends)")
	fs.StringVar(&f.Guest, "guest", "", "only the events of this guest")
	fs.StringVar(&f.Node, "node", "", "only the events of this node")
	story := fs.Bool("story", false, "group the events into incidents: a host failing, its fence, its guests running again, each step timed from the fault")
	return func(ctx context.Context, env *Env, args []string) error {
		if err := wantN(args, 0, ""); err != nil {
			return err
		}
		if f.N < 0 || f.N > 10000 {
			return Usagef("-n %d: give 0 to 10000", f.N)
		}
		c, err := cf.client(env)
		if err != nil {
			return err
		}
		defer c.Close()
		show := func(e cluster.Event) error {
			if cf.output == "json" {
				return printJSONLine(env, e)
			}
			_, err := fmt.Fprintln(env.Stdout, eventLine(e))
			return err
		}
		if *follow && *story {
			return Usagef("--story reads the log as it is: drop -f")
		}
		if *follow {
			return c.StreamEvents(ctx, f, show)
		}
		if f.N == 0 {
			return nil
		}
		evs, err := c.Events(ctx, f)
		if err != nil {
			return err
		}
		if *story {
			ss := stories(evs)
			if cf.output == "json" {
				return printJSON(env.Stdout, ss)
			}
			printStories(env.Stdout, ss)
			return nil
		}
		if cf.output == "json" {
			return printJSON(env.Stdout, evs)
		}
		for _, e := range evs {
			if err := show(e); err != nil {
				return err
			}
		}
		return nil
	}
}
