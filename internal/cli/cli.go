// Package cli owns the `haven` command line: the command tree, flag parsing
// conventions, output formats and exit codes. Each feature adds its commands
// in a file of its own with Register, from an init function. Commands that act
// on a cluster talk to an agent through its API client only.
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
)

// Env is what a command may touch of the outside world. Tests pass their own.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
	Stdin  io.Reader
	Getenv func(string) string
}

// Command is one leaf of the command tree, such as "guest start".
type Command struct {
	// Path is the words that select the command, such as "guest start".
	Path string
	// Args is the synopsis of the arguments, for the help text.
	Args string
	// Short is a one-line description.
	Short string
	// Run runs the command. Returning a UsageError prints the command's help
	// and exits 2; any other error exits 1.
	Run func(ctx context.Context, env *Env, args []string) error
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

// Register adds a command to the tree. It panics on a duplicate path, which
// is a programming error.
func Register(c *Command) {
	if _, dup := commands[c.Path]; dup {
		panic("cli: duplicate command " + c.Path)
	}
	commands[c.Path] = c
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
	cmd, rest := lookup(args)
	if cmd == nil {
		if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
			printHelp(env.Stdout, prefixOf(args[min(1, len(args)):]))
			return 0
		}
		fmt.Fprintf(env.Stderr, "haven: unknown command %q\n\n", strings.Join(args, " "))
		printHelp(env.Stderr, prefixOf(args))
		return 2
	}
	for _, a := range rest {
		if a == "-h" || a == "--help" || a == "-help" {
			printCommandHelp(env.Stdout, cmd)
			return 0
		}
	}
	err := cmd.Run(ctx, env, rest)
	var ue *UsageError
	var ee *ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.Code
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "haven %s: %s\n", cmd.Path, ue.Msg)
		printCommandHelp(env.Stderr, cmd)
		return 2
	default:
		fmt.Fprintf(env.Stderr, "haven %s: %v\n", cmd.Path, err)
		return 1
	}
}

// lookup finds the longest registered path that prefixes args.
func lookup(args []string) (*Command, []string) {
	for n := min(len(args), 3); n > 0; n-- {
		if c, ok := commands[strings.Join(args[:n], " ")]; ok {
			return c, args[n:]
		}
	}
	return nil, args
}

// prefixOf keeps the leading words of args that are not flags.
func prefixOf(args []string) string {
	var words []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			break
		}
		words = append(words, a)
	}
	return strings.Join(words, " ")
}

func printHelp(w io.Writer, prefix string) {
	fmt.Fprintln(w, "Usage: haven COMMAND [ARGS]")
	fmt.Fprintln(w, "\nCommands:")
	paths := make([]string, 0, len(commands))
	for p := range commands {
		if prefix == "" || p == prefix || strings.HasPrefix(p, prefix+" ") {
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		for p := range commands {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		fmt.Fprintf(w, "  %-28s %s\n", p, commands[p].Short)
	}
	fmt.Fprintln(w, "\nRun 'haven COMMAND --help' for a command's flags.")
}

func printCommandHelp(w io.Writer, c *Command) {
	fmt.Fprintf(w, "Usage: haven %s %s\n  %s\n", c.Path, c.Args, c.Short)
}
