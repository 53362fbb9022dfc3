// Package cli owns the `haven` command line: the command tree (built with
// cobra), flag conventions, output formats and exit codes. Each feature adds
// its commands in a file of its own with Register, from an init function.
// Commands that act on a cluster talk to an agent through its API client
// only.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Env is what a command may touch of the outside world. Tests pass their own.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
	Stdin  io.Reader
	Getenv func(string) string
}

// Runner runs a command with its positional arguments; its flags are
// already parsed into the variables its Command.Flags bound.
type Runner func(ctx context.Context, env *Env, args []string) error

// Command is one leaf of the command tree, such as "guest start".
type Command struct {
	// Path is the words that select the command, such as "guest start".
	Path string
	// Args is the synopsis of the positional arguments, such as "NAME NODE".
	Args string
	// Short is a one-line description; Long an optional longer one.
	Short, Long string
	// Example shows one or more invocations, one per line, with comments.
	Example string
	// Hidden keeps the command out of help and completion.
	Hidden bool
	// Flags defines the command's flags on fs and returns the function
	// that runs it. It is called once per command line.
	Flags func(fs *pflag.FlagSet) Runner
	// Complete, if set, completes the positional arguments (for example
	// with guest names from the cluster).
	Complete func(ctx context.Context, env *Env, args []string, toComplete string) []string
}

// UsageError reports a wrong invocation of a command.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError.
func Usagef(format string, a ...any) error { return &UsageError{Msg: fmt.Sprintf(format, a...)} }

// ExitError ends the program with a given code after printing nothing more.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

var commands = map[string]*Command{}

// Register adds a command to the tree. It panics on a duplicate path or a
// command without Flags, which are programming errors.
func Register(c *Command) {
	if _, dup := commands[c.Path]; dup {
		panic("cli: duplicate command " + c.Path)
	}
	if c.Flags == nil {
		panic("cli: command " + c.Path + " has no Flags")
	}
	commands[c.Path] = c
}

// groupShort describes the commands that only group others.
var groupShort = map[string]string{
	"guest":       "guests under cluster control: list, create, start, stop, migrate",
	"node":        "the cluster's hosts: list, maintenance, shutdown, fence",
	"domain":      "failover domains: the hosts a guest prefers",
	"fence":       "fence devices and levels",
	"policy":      "the cluster policy: fencing mode, shutdown policy, quorum loss, preemption",
	"pool":        "storage pools and their volumes",
	"pool volume": "volumes (guest disks) in a pool",
	"token":       "API and join tokens",
	"ca":          "the cluster CA: rotate it",
	"user":        "users of the web UI and the API",
	"sim":         "the deterministic cluster simulator",
}

// Main runs the command line and returns the process exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := &Env{Stdout: os.Stdout, Stderr: os.Stderr, Stdin: os.Stdin, Getenv: os.Getenv}
	return Run(ctx, env, args)
}

// Run is Main with the environment passed in.
func Run(ctx context.Context, env *Env, args []string) int {
	root := NewRoot(env)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	var ue *UsageError
	var ee *ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.Code
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "%s: %s\n", cmd.CommandPath(), ue.Msg)
		if cmd.Runnable() {
			fmt.Fprintf(env.Stderr, "Usage: %s\n", cmd.UseLine())
		}
		fmt.Fprintf(env.Stderr, "Run '%s --help' for its flags and examples.\n", cmd.CommandPath())
		return 2
	case isUnknownCommand(err):
		fmt.Fprintf(env.Stderr, "%s: %v\nRun '%s --help' for the list of commands.\n", cmd.CommandPath(), strings.TrimRight(err.Error(), "\n"), cmd.CommandPath())
		return 2
	default:
		fmt.Fprintf(env.Stderr, "%s: %v\n", cmd.CommandPath(), err)
		return 1
	}
}

func isUnknownCommand(err error) bool {
	return strings.HasPrefix(err.Error(), "unknown command ")
}

// NewRoot builds the command tree with every registered command, wired
// to env. Completion (`haven completion bash|zsh|fish`) and man pages
// (`haven man DIR`, hidden) come from this same tree.
func NewRoot(env *Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "haven",
		Short: "Haven: high availability for virtual machines",
		Long: `Haven keeps virtual machines running on a cluster of hosts: it restarts
them when they fail, fences hosts that stop answering and moves their guests
elsewhere. The one binary is the per-host agent (haven agent), the operator
CLI and the simulator (haven sim).

Commands that act on a cluster reach an agent's API. They find it in
--server, $HAVEN_SERVER, the client config (~/.config/haven/config.yaml) or
the local agent's data dir; when one host does not answer they try the
cluster's other hosts.`,
		Example: `  haven agent --dev                  # a one-host cluster to try things
  haven status                       # hosts, manager, quorum
  haven guest list
  haven guest migrate web1 h3 --wait 2m`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.SetIn(env.Stdin)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &UsageError{Msg: err.Error()} })
	root.CompletionOptions.HiddenDefaultCmd = false
	root.SuggestionsMinimumDistance = 2

	nodes := map[string]*cobra.Command{"": root}
	var group func(path string) *cobra.Command
	group = func(path string) *cobra.Command {
		if c, ok := nodes[path]; ok {
			return c
		}
		parentPath, word := splitPath(path)
		parent := group(parentPath)
		short := groupShort[path]
		if short == "" {
			short = "commands for " + path
		}
		c := &cobra.Command{
			Use:                        word,
			Short:                      short,
			Args:                       cobra.ArbitraryArgs,
			SuggestionsMinimumDistance: 2,
			RunE: func(c *cobra.Command, args []string) error {
				if len(args) == 0 {
					return c.Help()
				}
				msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
				if s := c.SuggestionsFor(args[0]); len(s) > 0 {
					msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
				}
				return errors.New(msg)
			},
		}
		nodes[path] = c
		parent.AddCommand(c)
		return c
	}
	paths := make([]string, 0, len(commands))
	for p := range commands {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		spec := commands[p]
		parentPath, word := splitPath(p)
		use := word
		if spec.Args != "" {
			use += " " + spec.Args
		}
		c := &cobra.Command{
			Use:     use,
			Short:   spec.Short,
			Long:    spec.Long,
			Example: indent(spec.Example),
			Hidden:  spec.Hidden,
			Args:    cobra.ArbitraryArgs,
		}
		if c.Long == "" {
			c.Long = upperFirst(spec.Short) + "."
		}
		run := spec.Flags(c.Flags())
		c.RunE = func(c *cobra.Command, args []string) error {
			return run(c.Context(), env, args)
		}
		if spec.Complete != nil {
			complete := spec.Complete
			c.ValidArgsFunction = func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
				return complete(c.Context(), env, args, toComplete), cobra.ShellCompDirectiveNoFileComp
			}
		}
		if old, ok := nodes[p]; ok {
			// A group that is also a command itself: keep its children.
			for _, child := range old.Commands() {
				old.RemoveCommand(child)
				c.AddCommand(child)
			}
			group(parentPath).RemoveCommand(old)
		}
		nodes[p] = c
		group(parentPath).AddCommand(c)
	}
	return root
}

func splitPath(p string) (parent, word string) {
	i := strings.LastIndexByte(p, ' ')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

func indent(ex string) string {
	if ex == "" {
		return ""
	}
	lines := strings.Split(strings.TrimRight(ex, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "  " + strings.TrimLeft(l, " \t")
	}
	return strings.Join(lines, "\n")
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// wantN checks there are exactly n positional arguments; what names them
// in the error ("" when there are none).
func wantN(args []string, n int, what string) error {
	switch {
	case len(args) == n:
		return nil
	case n == 0:
		return Usagef("unexpected arguments: %s", strings.Join(args, " "))
	}
	return Usagef("give %s", what)
}
