package cli

// `haven domain ...`: failover domains (the hosts a guest prefers, in
// priorities or in order; restricted; nofailback), as in Cluster Suite.

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/model"
)

func init() {
	Register(&Command{Path: "domain list", Short: "list failover domains", Flags: cmdDomainList})
	Register(&Command{Path: "domain show", Args: "NAME", Example: "haven domain show web", Short: "show a failover domain and the guests that use it", Flags: cmdDomainShow})
	Register(&Command{Path: "domain create", Args: "NAME --member NODE[:PRIORITY]...", Example: "haven domain create web --member h1:1 --member h2:2\nhaven domain create db --member h1,h2,h3 --ordered --restricted", Short: "create a failover domain", Flags: cmdDomainCreate})
	Register(&Command{Path: "domain delete", Args: "NAME", Example: "haven domain delete web", Short: "delete a failover domain no guest uses", Flags: cmdDomainDelete})
}

var cmdDomainList = listCmd((*client.Client).Domains, []string{"NAME", "MEMBERS", "FLAGS", "GUESTS"},
	func(d api.DomainInfo) []string {
		return []string{d.Name, members(d.Domain), domainFlags(d.Domain), strings.Join(d.Guests, ",")}
	})

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

var cmdDomainShow = showCmd("one domain name", (*client.Client).Domain,
	func(w io.Writer, d *api.DomainInfo) error {
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
	})

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
		return cf.printf(env, out, "failover domain %q created: %s %s", out.Name, members(out.Domain), paren(domainFlags(out.Domain)))
	}
}

var cmdDomainDelete = deleteCmd("one domain name", (*client.Client).DeleteDomain, "failover domain %q deleted")
