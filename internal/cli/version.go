package cli

import (
	"context"
	"fmt"
	"runtime"

	"github.com/spf13/pflag"

	"github.com/haven-ha/haven/internal/version"
)

func init() {
	Register(&Command{
		Path:  "version",
		Short: "print the version of this haven binary",
		Flags: func(fs *pflag.FlagSet) Runner {
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) > 0 {
					return Usagef("takes no arguments")
				}
				rev := version.Revision()
				if len(rev) > 12 {
					rev = rev[:12]
				}
				if rev != "" {
					rev = "commit " + rev + ", "
				}
				fmt.Fprintf(env.Stdout, "haven %s (%s%s, %s/%s)\n", version.String(), rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
				return nil
			}
		},
	})
}
