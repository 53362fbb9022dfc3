package cli

// Shell completion of names from the cluster, and the man pages, both
// generated from the cobra tree.

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
)

func init() {
	Register(&Command{
		Path:    "man",
		Args:    "DIR",
		Short:   "write man pages of every command to DIR (for packages)",
		Example: "haven man /usr/share/man/man1",
		Hidden:  true,
		Flags: func(fs *pflag.FlagSet) Runner {
			return func(ctx context.Context, env *Env, args []string) error {
				if err := wantN(args, 1, "the directory to write the man pages to"); err != nil {
					return err
				}
				if err := os.MkdirAll(args[0], 0o755); err != nil {
					return err
				}
				root := NewRoot(env)
				root.DisableAutoGenTag = true
				hdr := &doc.GenManHeader{Title: "HAVEN", Section: "1", Source: "Haven", Manual: "Haven manual"}
				if err := doc.GenManTree(root, hdr, args[0]); err != nil {
					return fmt.Errorf("write man pages: %w", err)
				}
				return nil
			}
		},
	})
}

// completionTimeout bounds the API calls made while completing.
const completionTimeout = 2 * time.Second

// completeGuestThenNode completes a guest name first, then a node name.
func completeGuestThenNode(ctx context.Context, env *Env, args []string, prefix string) []string {
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	c, err := (&clientFlags{output: "table"}).client(env)
	if err != nil {
		return nil
	}
	defer c.Close()
	var names []string
	switch len(args) {
	case 0:
		gs, err := c.Guests(ctx)
		if err != nil {
			return nil
		}
		for _, g := range gs {
			names = append(names, g.Name)
		}
	case 1:
		ns, err := c.Nodes(ctx)
		if err != nil {
			return nil
		}
		for _, n := range ns {
			names = append(names, n.Name)
		}
	}
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

// completeNode completes a node name as the first argument.
func completeNode(ctx context.Context, env *Env, args []string, prefix string) []string {
	if len(args) != 0 {
		return nil
	}
	return completeGuestThenNode(ctx, env, []string{""}, prefix)
}
