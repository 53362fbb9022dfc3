package cli

// `haven domain ...`: failover domains (the hosts a guest prefers, in
// priorities or in order; restricted; nofailback), as in Cluster Suite.

import (
	"github.com/spf13/pflag"

	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/haven-ha/haven/internal/model"
)

func init() {
	Register(&Command{Path: "domain list", Short: "list failover domains", Flags: cmdDomainList})
	Register(&Command{Path: "domain show", Args: "NAME", Example: "haven domain show web", Short: "show a failover domain and the guests that use it", Flags: cmdDomainShow})
	Register(&Command{Path: "domain create", Args: "NAME --member NODE[:PRIORITY]...", Example: "haven domain create web --member h1:1 --member h2:2\nhaven domain create db --member h1,h2,h3 --ordered --restricted", Short: "create a failover domain", Flags: cmdDomainCreate})
	Register(&Command{Path: "domain delete", Args: "NAME", Example: "haven domain delete web", Short: "delete a failover domain no guest uses", Flags: cmdDomainDelete})
}

func cmdDomainList(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)

	return func(ctx context.Context, env *Env, args []string) error {
		c, err := cf.connect(env, args, 0, "")
		if err != nil {
			return err
		}
		defer c.Close()
		ds, err := c.Domains(ctx)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(env.Stdout, ds)
		}
		tw := newTable(env.Stdout, "NAME", "MEMBERS", "FLAGS", "GUESTS")
		for _, d := range ds {
			tw.row(d.Name, members(d.Domain), domainFlags(d.Domain), strings.Join(d.Guests, ","))
		}
		return tw.flush()
	}
}

func members(d model.Domain) string {
	var ms []string
	for _, m := range d.Members {
		if d.Ordered {
			ms = append(ms, m.Node)
		} else {
			ms = append(ms, m.Node+":"+strconv.Itoa(m.Priority))
		}
	}
	sep := ","
	if d.Ordered {
		sep = " > "
	}
	return strings.Join(ms, sep)
}

func domainFlags(d model.Domain) string {
	var fl []string
	if d.Ordered {
		fl = append(fl, "ordered")
	}
	if d.Restricted {
		fl = append(fl, "restricted")
	}
	if d.NoFailback {
		fl = append(fl, "nofailback")
	}
	return strings.Join(fl, ",")
}

func cmdDomainShow(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)

	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
		c, err := cf.connect(env, args, 1, "one domain name")
		if err != nil {
			return err
		}
		defer c.Close()
		d, err := c.Domain(ctx, pos[0])
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(env.Stdout, d)
		}
		w := env.Stdout
		fmt.Fprintf(w, "Domain %s\n", d.Name)
		kind := "priorities (higher is preferred; equal priorities share the load)"
		if d.Ordered {
			kind = "ordered (first is most preferred)"
		}
		fmt.Fprintf(w, "  Members:     %s\n  Preference:  %s\n", members(d.Domain), kind)
		fmt.Fprintf(w, "  Restricted:  %v (guests never run outside the members)\n", d.Restricted)
		fmt.Fprintf(w, "  No failback: %v (guests do not move back to a preferred member by themselves)\n", d.NoFailback)
		g := strings.Join(d.Guests, ", ")
		if g == "" {
			g = "(none)"
		}
		fmt.Fprintf(w, "  Guests:      %s\n", g)
		return nil
	}
}

func cmdDomainCreate(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	var ms listFlag
	var d model.Domain
	fs.Var(&ms, "member", "a member host, NODE or NODE:PRIORITY (repeat; with --ordered the order counts)")
	fs.BoolVar(&d.Ordered, "ordered", false, "members are preferred in the order given")
	fs.BoolVar(&d.Restricted, "restricted", false, "guests never run outside the members")
	fs.BoolVar(&d.NoFailback, "nofailback", false, "guests do not move back to a more preferred member by themselves")
	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
		if len(pos) != 1 {
			return Usagef("give one domain name")
		}
		if len(ms) == 0 {
			return Usagef("give at least one --member NODE[:PRIORITY]")
		}
		d.Name = pos[0]
		for _, m := range ms {
			for _, one := range strings.Split(m, ",") {
				node, prio, hasPrio := strings.Cut(one, ":")
				dm := model.DomainMember{Node: node}
				if hasPrio {
					p, err := strconv.Atoi(prio)
					if err != nil {
						return Usagef("--member %q: the priority must be a number", one)
					}
					dm.Priority = p
				}
				d.Members = append(d.Members, dm)
			}
		}
		c, err := cf.client(env)
		if err != nil {
			return err
		}
		defer c.Close()
		out, err := c.CreateDomain(ctx, d)
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(env.Stdout, out)
		}
		fmt.Fprintf(env.Stdout, "failover domain %q created: %s %s\n", out.Name, members(out.Domain), paren(domainFlags(out.Domain)))
		return nil
	}
}

func cmdDomainDelete(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)

	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
		c, err := cf.connect(env, args, 1, "one domain name")
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.DeleteDomain(ctx, pos[0]); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(env.Stdout, map[string]any{"deleted": pos[0]})
		}
		fmt.Fprintf(env.Stdout, "failover domain %q deleted\n", pos[0])
		return nil
	}
}
