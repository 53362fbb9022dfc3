package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/haven-ha/haven/internal/api/client"
)

// The shape most API commands share: check the positional arguments, open
// the client, make one call, and print its answer, as indented JSON with
// -o json, else as text (a table, a sentence). These helpers hold that
// shape once; a command says only what differs.

// print writes v as JSON with -o json, else calls text with the output.
func (c *clientFlags) print(env *Env, v any, text func(w io.Writer) error) error {
	if c.output == "json" {
		return printJSON(env.Stdout, v)
	}
	return text(env.Stdout)
}

// printf writes v as JSON with -o json, else one line of text.
func (c *clientFlags) printf(env *Env, v any, format string, args ...any) error {
	return c.print(env, v, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, format+"\n", args...)
		return err
	})
}

// printTable writes rows as JSON with -o json, else as a table with the
// columns cols, a line per row.
func printTable[T any](env *Env, cf *clientFlags, rows []T, cols []string, row func(T) []string) error {
	return cf.print(env, rows, func(w io.Writer) error { return writeTable(w, rows, cols, row) })
}

// writeTable writes rows as a table with the columns cols.
func writeTable[T any](w io.Writer, rows []T, cols []string, row func(T) []string) error {
	tw := newTable(w, cols...)
	for _, r := range rows {
		tw.row(row(r)...)
	}
	return tw.flush()
}

// The calls these helpers make take the client first, so that the
// client's methods serve as they are: (*client.Client).Domains.

// apiCmd builds a command that takes n positional arguments (what names
// them in the usage error), makes one API call with them, and prints its
// answer: as JSON with -o json, else with text.
func apiCmd[T any](n int, what string,
	call func(c *client.Client, ctx context.Context, args []string) (T, error),
	text func(w io.Writer, args []string, v T) error) func(*pflag.FlagSet) Runner {
	return func(fs *pflag.FlagSet) Runner {
		cf := addClientFlags(fs)
		return func(ctx context.Context, env *Env, args []string) error {
			c, err := cf.connect(env, args, n, what)
			if err != nil {
				return err
			}
			defer c.Close()
			v, err := call(c, ctx, args)
			if err != nil {
				return err
			}
			return cf.print(env, v, func(w io.Writer) error { return text(w, args, v) })
		}
	}
}

// getCmd builds a command without arguments that prints what get answers
// with text (JSON with -o json).
func getCmd[T any](get func(*client.Client, context.Context) (T, error), text func(w io.Writer, v T) error) func(*pflag.FlagSet) Runner {
	return apiCmd(0, "",
		func(c *client.Client, ctx context.Context, _ []string) (T, error) { return get(c, ctx) },
		func(w io.Writer, _ []string, v T) error { return text(w, v) })
}

// listCmd builds a command without arguments that lists what list answers
// as a table with the columns cols, a line per item (JSON with -o json).
func listCmd[T any](list func(*client.Client, context.Context) ([]T, error), cols []string, row func(T) []string) func(*pflag.FlagSet) Runner {
	return getCmd(list, func(w io.Writer, rows []T) error { return writeTable(w, rows, cols, row) })
}

// deleteCmd builds a command that deletes the thing named by its one
// argument (what names it in the usage error) and says so with done, a
// format with one %q for the name; with -o json it prints {"deleted": NAME}.
func deleteCmd(what string, del func(*client.Client, context.Context, string) error, done string) func(*pflag.FlagSet) Runner {
	return apiCmd(1, what,
		func(c *client.Client, ctx context.Context, args []string) (map[string]any, error) {
			return map[string]any{"deleted": args[0]}, del(c, ctx, args[0])
		},
		func(w io.Writer, args []string, _ map[string]any) error {
			_, err := fmt.Fprintf(w, done+"\n", args[0])
			return err
		})
}

// showCmd builds a command that gets the thing named by its one argument
// (what names it in the usage error) and prints it with text (JSON with
// -o json).
func showCmd[T any](what string, get func(*client.Client, context.Context, string) (T, error), text func(w io.Writer, v T) error) func(*pflag.FlagSet) Runner {
	return apiCmd(1, what,
		func(c *client.Client, ctx context.Context, args []string) (T, error) { return get(c, ctx, args[0]) },
		func(w io.Writer, _ []string, v T) error { return text(w, v) })
}
