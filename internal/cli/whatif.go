package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
)

func init() {
	Register(&Command{Path: "whatif node-down", Args: "HOST[,HOST...]", Example: "haven whatif node-down h2\nhaven whatif node-down h2,h3 -o json",
		Short: "what would happen if these hosts failed now: where each guest goes, which wait and why, time to recover, admission control", Flags: cmdWhatIf(false)})
	Register(&Command{Path: "whatif maintenance", Args: "HOST[,HOST...]", Example: "haven whatif maintenance h1",
		Short: "what would happen if these hosts went into maintenance now: would the evacuation succeed, where each guest goes", Flags: cmdWhatIf(true)})
	groupShort["whatif"] = "ask the manager what a failure or maintenance would do, without doing it"
}

func cmdWhatIf(maintenance bool) func(fs *pflag.FlagSet) Runner {
	return func(fs *pflag.FlagSet) Runner {
		cf := addClientFlags(fs)
		return func(ctx context.Context, env *Env, args []string) error {
			if err := wantN(args, 1, "the hosts, like h2 or h2,h3"); err != nil {
				return err
			}
			c, err := cf.client(env)
			if err != nil {
				return err
			}
			defer c.Close()
			w, err := c.WhatIf(ctx, strings.Split(args[0], ","), maintenance)
			if err != nil {
				return err
			}
			if cf.output == "json" {
				return printJSON(env.Stdout, w)
			}
			printWhatIf(env, w)
			return nil
		}
	}
}

func printWhatIf(env *Env, w *manager.WhatIf) {
	what := "fail"
	if w.Maintenance {
		what = "go into maintenance"
	}
	fmt.Fprintf(env.Stdout, "If %s %s now:\n", strings.Join(w.Down, ", "), what)
	if len(w.Guests) == 0 {
		fmt.Fprintln(env.Stdout, "  no guest is affected")
	} else {
		tw := tabwriter.NewWriter(env.Stdout, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  GUEST\tFROM\tTO\tSTATE\tAFTER\tWHY IT WAITS")
		for _, g := range w.Guests {
			to, after := g.To, "-"
			if to == "" {
				to = "-"
			}
			if g.After > 0 {
				after = g.After.Round(100 * time.Millisecond).String()
				if g.Moved {
					after += " (live)"
				}
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", g.Guest, g.From, to, g.State, after, g.Wait)
		}
		tw.Flush()
	}
	switch {
	case w.Maintenance && w.Evacuated:
		fmt.Fprintln(env.Stdout, "Evacuation: succeeds")
	case w.Maintenance:
		fmt.Fprintln(env.Stdout, "Evacuation: does NOT succeed (guests stay)")
	default:
		fmt.Fprintf(env.Stdout, "Recovered: %s after the failure; %d guest(s) would wait\n", w.Recovered.Round(100*time.Millisecond), w.Waiting)
	}
	a := w.Admission
	switch {
	case !a.Reserve.On():
		fmt.Fprintln(env.Stdout, "Admission control: off")
	case a.Short > 0:
		fmt.Fprintf(env.Stdout, "Admission control (%s): would NOT hold: short by %s (%s protected, %s capacity, %s reserved)\n", a.Reserve, size(a.Short), size(a.Protected), size(a.Capacity), size(a.Reserved))
	default:
		fmt.Fprintf(env.Stdout, "Admission control (%s): would hold (%s protected, %s capacity, %s reserved)\n", a.Reserve, size(a.Protected), size(a.Capacity), size(a.Reserved))
	}
	for _, v := range w.Violations {
		fmt.Fprintf(env.Stdout, "Rule %s broken: %s\n", v.Rule, v.What)
	}
}

// size writes bytes in GiB with one decimal, or MiB below 1 GiB.
func size(b int64) string {
	if b >= model.GiB || b <= -model.GiB {
		return fmt.Sprintf("%.1fGiB", float64(b)/float64(model.GiB))
	}
	return fmt.Sprintf("%dMiB", b/model.MiB)
}
