package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/haven-ha/haven/internal/model"
)

func init() {
	Register(&Command{Path: "policy rule add", Args: "NAME", Example: "haven policy rule add db-replicas --kind apart --guests db1,db2\nhaven policy rule add stack --kind together --guests app,db --soft\nhaven policy rule add licensed --kind on --guests erp --hosts h1,h2",
		Short: "add (or replace) an affinity rule: together, apart (guests), on, off (guests on hosts); hard unless --soft", Flags: cmdRuleAdd})
	Register(&Command{Path: "policy rule delete", Args: "NAME", Short: "delete an affinity rule", Flags: cmdRuleDelete})
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func cmdRuleAdd(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	kind := fs.String("kind", "", "together, apart, on or off")
	guests := fs.String("guests", "", "the guests, comma-separated")
	hosts := fs.String("hosts", "", "for on and off: the hosts, comma-separated")
	soft := fs.Bool("soft", false, "kept when possible instead of always (hard)")
	return func(ctx context.Context, env *Env, args []string) error {
		if err := wantN(args, 1, "the rule's name"); err != nil {
			return err
		}
		r := model.Rule{Name: args[0], Kind: model.AffinityKind(*kind), Guests: splitList(*guests), Hosts: splitList(*hosts), Soft: *soft}
		if err := r.Validate(); err != nil {
			return Usagef("%v", err)
		}
		return editRules(ctx, env, cf, func(rules []model.Rule) []model.Rule {
			rules = slices.DeleteFunc(rules, func(x model.Rule) bool { return x.Name == r.Name })
			return append(rules, r)
		})
	}
}

func cmdRuleDelete(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	return func(ctx context.Context, env *Env, args []string) error {
		if err := wantN(args, 1, "the rule's name"); err != nil {
			return err
		}
		found := false
		err := editRules(ctx, env, cf, func(rules []model.Rule) []model.Rule {
			n := len(rules)
			rules = slices.DeleteFunc(rules, func(x model.Rule) bool { return x.Name == args[0] })
			found = len(rules) < n
			return rules
		})
		if err == nil && !found {
			return fmt.Errorf("no rule named %q (see haven policy show)", args[0])
		}
		return err
	}
}

// editRules reads the policy, changes its rules and writes them back.
func editRules(ctx context.Context, env *Env, cf *clientFlags, change func([]model.Rule) []model.Rule) error {
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	defer c.Close()
	p, err := c.Policy(ctx)
	if err != nil {
		return err
	}
	rules := change(slices.Clone(p.Rules))
	if rules == nil {
		rules = []model.Rule{}
	}
	p, err = c.SetPolicy(ctx, map[string]any{"rules": rules})
	if err != nil {
		return err
	}
	return cf.print(env, p.Rules, func(w io.Writer) error { printRules(w, p.Rules); return nil })
}

func printRules(w io.Writer, rules []model.Rule) {
	if len(rules) == 0 {
		fmt.Fprintln(w, "Affinity rules:  none")
		return
	}
	fmt.Fprintln(w, "Affinity rules:")
	for _, r := range rules {
		hosts := ""
		if len(r.Hosts) > 0 {
			hosts = " hosts " + strings.Join(r.Hosts, ",")
		}
		fmt.Fprintf(w, "  %s: %s %s %s%s\n", r.Name, r.Strength(), r.Kind, strings.Join(r.Guests, ","), hosts)
	}
}

// parseReserve reads off, "hosts N" or "percent P".
func parseReserve(s string) (model.Reserve, error) {
	f := strings.Fields(s)
	if len(f) == 1 && f[0] == "off" {
		return model.Reserve{}, nil
	}
	if len(f) == 2 {
		if n, err := strconv.Atoi(f[1]); err == nil {
			switch {
			case f[0] == "hosts" && n >= 1:
				return model.Reserve{Hosts: n}, nil
			case f[0] == "percent" && n >= 1 && n <= 100:
				return model.Reserve{Percent: n}, nil
			}
		}
	}
	return model.Reserve{}, Usagef("--reserve %q: give off, \"hosts N\" (N >= 1) or \"percent P\" (1..100)", s)
}
