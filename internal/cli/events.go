package cli

// `haven events [-f]`: the cluster's event and audit log.

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/cluster"
)

func init() {
	Register(&Command{Path: "events", Args: "[-n 20] [-f] [--guest NAME] [--node NAME] [-o table|json]", Short: "show the cluster's event and audit log; -f follows it live", Run: runEvents})
}

func runEvents(ctx context.Context, env *Env, args []string) error {
	fs, cf := opsFlags("events", env)
	var f client.EventFilter
	fs.IntVar(&f.N, "n", 20, "how many of the latest events to show first")
	follow := fs.Bool("f", false, "keep showing new events as they happen (Ctrl-C ends)")
	fs.StringVar(&f.Guest, "guest", "", "only the events of this guest")
	fs.StringVar(&f.Node, "node", "", "only the events of this node")
	if err := wantArgs(fs, args, 0, ""); err != nil {
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

// printJSONLine writes v as one line of JSON (for streams).
func printJSONLine(env *Env, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(env.Stdout, "%s\n", b)
	return err
}
