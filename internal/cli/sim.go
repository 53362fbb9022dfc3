package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"github.com/haven-ha/haven/internal/control"
	"github.com/haven-ha/haven/internal/scenario"
	"github.com/haven-ha/haven/internal/sim"
)

func init() {
	Register(&Command{
		Path:    "sim run",
		Args:    "FILE|DIR...",
		Short:   "run scenario files on the simulated cluster; exit 0 only if every expectation and invariant held",
		Example: "haven sim run scenarios/\nhaven sim run scenarios/failover.yaml --json",
		Flags:   cmdSimRun,
	})
	Register(&Command{
		Path:    "sim replay",
		Args:    "FILE",
		Short:   "replay a manager term recorded with haven agent --record through the same core and shell; exit 0 only if every decision is the same",
		Example: "haven sim replay /var/lib/haven/record/term-1234-h1.jsonl",
		Flags:   cmdSimReplay,
	})
}

func cmdSimReplay(fs *pflag.FlagSet) Runner {
	return func(ctx context.Context, env *Env, args []string) error {
		if len(args) != 1 {
			return Usagef("name one recording (a term-*.jsonl file written by haven agent --record)")
		}
		f, err := os.Open(args[0])
		if err != nil {
			return fmt.Errorf("read the recording: %w", err)
		}
		defer f.Close()
		res, err := control.Replay(ctx, f, env.Stdout)
		if err != nil {
			return fmt.Errorf("replay %s: %w", args[0], err)
		}
		fmt.Fprintf(env.Stdout, "%d inputs, %d decisions compared, %d differ\n", res.Steps, res.Decisions, res.Diverged)
		if res.Diverged > 0 {
			return &ExitError{Code: 1}
		}
		return nil
	}
}

func cmdSimRun(fs *pflag.FlagSet) Runner {
	asJSON := fs.Bool("json", false, "print each scenario's result as JSON")
	return func(ctx context.Context, env *Env, paths []string) error { return runSim(ctx, env, *asJSON, paths) }
}

func runSim(ctx context.Context, env *Env, asJSON bool, paths []string) error {
	if len(paths) == 0 {
		return Usagef("name a scenario file or a directory of them")
	}
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("read scenarios: %w", err)
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return fmt.Errorf("read scenario directory %q: %w", p, err)
		}
		var fs []string
		for _, e := range ents {
			if !e.IsDir() && (strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
				fs = append(fs, filepath.Join(p, e.Name()))
			}
		}
		if len(fs) == 0 {
			return fmt.Errorf("no scenario files (*.yaml) in %q", p)
		}
		sort.Strings(fs)
		files = append(files, fs...)
	}
	// Load everything first: a load error stops the run before anything runs.
	var scs []*scenario.Scenario
	var loadErrs []string
	for _, f := range files {
		sc, err := scenario.Load(f)
		if err != nil {
			loadErrs = append(loadErrs, err.Error())
			continue
		}
		scs = append(scs, sc)
	}
	if len(loadErrs) > 0 {
		for _, e := range loadErrs {
			fmt.Fprintln(env.Stderr, e)
		}
		fmt.Fprintf(env.Stderr, "haven sim run: %d scenario file(s) did not load; fix them and run again\n", len(loadErrs))
		return &ExitError{Code: 1}
	}
	passed, failed := 0, 0
	for _, sc := range scs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r := sim.Run(sc, sim.Options{Stop: func() bool { return ctx.Err() != nil }})
		if ctx.Err() != nil {
			fmt.Fprintf(env.Stderr, "haven sim run: stopped (%v) in %s\n", context.Cause(ctx), sc.File)
			return &ExitError{Code: 1}
		}
		if asJSON {
			r.WriteJSON(env.Stdout)
		} else {
			r.WriteText(env.Stdout)
		}
		passed += r.Passed()
		failed += r.Failed()
	}
	fmt.Fprintf(env.Stdout, "%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return &ExitError{Code: 1}
	}
	return nil
}
