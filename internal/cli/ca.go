package cli

// `haven ca ...`: rotate the cluster CA of a running cluster (the agents do
// the work, phase by phase; see docs/security.md) and watch it.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/haven-ha/haven/internal/api"
)

func init() {
	Register(&Command{
		Path:    "ca rotate",
		Args:    "[--wait] [--timeout 30m]",
		Short:   "replace the cluster CA without stopping a guest: every host trusts both, then presents the new one, then drops the old (admin)",
		Example: "haven ca rotate --wait",
		Flags:   cmdCARotate,
	})
	Register(&Command{
		Path:  "ca status",
		Args:  "[--wait] [--timeout 30m]",
		Short: "show the CA rotation: its phase and which hosts it waits for",
		Flags: cmdCAStatus,
	})
}

func cmdCARotate(fs *pflag.FlagSet) Runner {
	return cmdCA(fs, "POST", "/api/v1/ca/rotate", "ca rotate", "wait until every host trusts and presents the new CA only")
}

func cmdCAStatus(fs *pflag.FlagSet) Runner {
	return cmdCA(fs, "GET", "/api/v1/ca/rotation", "ca status", "wait until the rotation is done")
}

// cmdCA makes one call (starting the rotation, or reading it) and prints
// the rotation, after waiting for its end with --wait.
func cmdCA(fs *pflag.FlagSet, method, path, name, waitHelp string) Runner {
	cf := addClientFlags(fs)
	wait := fs.Bool("wait", false, waitHelp)
	timeout := fs.Duration("timeout", 30*time.Minute, "with --wait: give up waiting after this long (the rotation goes on)")
	return func(ctx context.Context, env *Env, args []string) error {
		if len(args) != 0 {
			return Usagef("%s takes no arguments", name)
		}
		var st api.CARotation
		if err := caCall(ctx, env, cf, method, path, &st); err != nil {
			return err
		}
		return caFollow(ctx, env, cf, &st, *wait, *timeout)
	}
}

// caCall makes one call with a new client: the CA file it trusts (the
// agent's DATA/pki/ca.crt) changes during the rotation.
func caCall(ctx context.Context, env *Env, cf *clientFlags, method, path string, out *api.CARotation) error {
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Do(ctx, method, path, nil, out)
}

// caFollow prints the rotation, after waiting for its end when wait.
func caFollow(ctx context.Context, env *Env, cf *clientFlags, st *api.CARotation, wait bool, timeout time.Duration) error {
	if wait {
		wctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		last := ""
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for st.Phase != "done" {
			if now := st.Phase + " " + strings.Join(st.Waiting, ","); now != last && cf.output != "json" {
				fmt.Fprintf(env.Stderr, "phase %s: waiting for %s\n", st.Phase, strings.Join(st.Waiting, ", "))
				last = now
			}
			select {
			case <-wctx.Done():
				return fmt.Errorf("the CA rotation is in phase %s after %v, waiting for %s: it goes on without this command (haven ca status); a host that is down holds it up until it is back or removed (haven node remove)", st.Phase, timeout, strings.Join(st.Waiting, ", "))
			case <-tick.C:
			}
			var next api.CARotation
			err := caCall(wctx, env, cf, "GET", "/api/v1/ca/rotation", &next)
			var ae *api.Error
			switch {
			case err == nil:
				*st = next
			case wctx.Err() != nil, errors.As(err, &ae) && ae.Status < http.StatusInternalServerError:
				return err
			default:
				// The agent answering may be restarting its store member
				// or changing its certificate: ask again.
			}
		}
	}
	return cf.print(env, st, func(w io.Writer) error { return writeCARotation(w, st) })
}

func writeCARotation(w io.Writer, st *api.CARotation) error {
	fmt.Fprintf(w, "CA rotation %s: phase %s since %s (started %s by %s)\n", st.ID, st.Phase,
		st.Changed.Local().Format(time.DateTime), st.Started.Local().Format(time.DateTime), st.By)
	fmt.Fprintf(w, "old CA %.16s, new CA %.16s\n", st.OldCA, st.NewCA)
	if len(st.Waiting) > 0 {
		fmt.Fprintf(w, "waiting for: %s\n", strings.Join(st.Waiting, ", "))
	}
	return writeTable(w, st.Hosts, []string{"HOST", "DONE", "ONLINE"}, func(h api.CARotationHost) []string {
		done := h.Phase
		if done == "" {
			done = "-"
		}
		return []string{h.Name, done, fmt.Sprint(h.Online)}
	})
}
