package cli

import (
	"context"
	"flag"
	"fmt"

	"github.com/haven-ha/haven/internal/storage"
)

func init() {
	Register(&Command{Path: "pool list", Args: "[-o json]", Short: "list storage pools", Run: runPoolList})
	Register(&Command{Path: "pool add", Args: "NAME (--path DIR | --vg VG) [--shared]", Short: "define a storage pool (a directory mounted on every host, or an LVM volume group)", Run: runPoolAdd})
	Register(&Command{Path: "pool delete", Args: "NAME", Short: "forget a storage pool (its data is left alone)", Run: runPoolDelete})
}

func runPoolList(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("pool list", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var cf clientFlags
	cf.register(fs)
	if err := fs.Parse(args); err != nil {
		return Usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return Usagef("takes no arguments")
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	defer c.Close()
	pools, err := c.Pools(ctx)
	if err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(env.Stdout, pools)
	}
	tw := newTable(env.Stdout, "NAME", "KIND", "WHERE", "SHARED")
	for _, p := range pools {
		where, kind := p.Path, p.Kind
		if kind == "" {
			kind = storage.KindDir
		}
		if kind == storage.KindLVM {
			where = "/dev/" + p.VG
		}
		tw.row(p.Name, string(kind), where, fmt.Sprint(p.Shared))
	}
	return tw.flush()
}

func runPoolAdd(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("pool add", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var cf clientFlags
	cf.register(fs)
	var p storage.Pool
	fs.StringVar(&p.Path, "path", "", "dir pool: the directory, mounted at this path on every host")
	fs.StringVar(&p.VG, "vg", "", "lvm pool: the volume group visible to every host")
	fs.BoolVar(&p.Shared, "shared", false, "every host sees the same storage (verified by the agents with marker files)")
	name, rest := splitName(args)
	if err := fs.Parse(rest); err != nil {
		return Usagef("%v", err)
	}
	if name == "" || fs.NArg() > 0 {
		return Usagef("takes one pool NAME")
	}
	p.Name = name
	p.Kind = storage.KindDir
	if p.VG != "" {
		p.Kind = storage.KindLVM
	}
	if err := p.Validate(); err != nil {
		return Usagef("%v", err)
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.CreatePool(ctx, p); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(env.Stdout, p)
	}
	fmt.Fprintf(env.Stdout, "pool %q added\n", p.Name)
	return nil
}

func runPoolDelete(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("pool delete", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var cf clientFlags
	cf.register(fs)
	name, rest := splitName(args)
	if err := fs.Parse(rest); err != nil {
		return Usagef("%v", err)
	}
	if name == "" || fs.NArg() > 0 {
		return Usagef("takes one pool NAME")
	}
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.DeletePool(ctx, name); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "pool %q deleted\n", name)
	return nil
}
