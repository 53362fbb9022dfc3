package cli

import (
	"context"
	"fmt"

	"github.com/haven-ha/haven/internal/storage"
)

func init() {
	Register(&Command{Path: "pool list", Args: "[-o json]", Short: "list storage pools", Run: runPoolList})
	Register(&Command{Path: "pool add", Args: "NAME (--path DIR | --vg VG) [--shared]", Short: "define a storage pool (a directory mounted on every host, or an LVM volume group)", Run: runPoolAdd})
	Register(&Command{Path: "pool delete", Args: "NAME", Short: "forget a storage pool (its data is left alone)", Run: runPoolDelete})
}

func runPoolList(ctx context.Context, env *Env, args []string) error {
	fs, cf := opsFlags("pool list", env)
	if err := wantArgs(fs, args, 0, ""); err != nil {
		return err
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
	fs, cf := opsFlags("pool add", env)
	var p storage.Pool
	fs.StringVar(&p.Path, "path", "", "dir pool: the directory, mounted at this path on every host")
	fs.StringVar(&p.VG, "vg", "", "lvm pool: the volume group visible to every host")
	fs.BoolVar(&p.Shared, "shared", false, "every host sees the same storage (verified by the agents with marker files)")
	pos, err := opsArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return Usagef("give one pool name")
	}
	p.Name = pos[0]
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
	fs, cf := opsFlags("pool delete", env)
	pos, err := opsArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return Usagef("give one pool name")
	}
	name := pos[0]
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
