package cli

import (
	"github.com/spf13/pflag"

	"context"
	"fmt"
	"strings"

	"github.com/haven-ha/haven/internal/api"

	"github.com/haven-ha/haven/internal/storage"
)

func init() {
	Register(&Command{Path: "pool list", Short: "list storage pools", Flags: cmdPoolList})
	Register(&Command{Path: "pool add", Args: "NAME (--path DIR | --vg VG)", Example: "haven pool add shared --path /srv/shared --shared\nhaven pool add lvm --vg vg_guests --shared", Short: "define a storage pool (a directory mounted on every host, or an LVM volume group)", Flags: cmdPoolAdd})
	Register(&Command{Path: "pool delete", Args: "NAME", Example: "haven pool delete shared", Short: "forget a storage pool (its data is left alone)", Flags: cmdPoolDelete})
	Register(&Command{Path: "pool show", Args: "NAME", Example: "haven pool show shared", Short: "every host's latest check of a pool: present, writable, free space, shared", Flags: cmdPoolShow})
	Register(&Command{Path: "pool volume create", Args: "POOL NAME --size SIZE", Example: "haven pool volume create shared web1 --size 20GiB\nhaven pool volume create lvm db1 --size 50GiB --format raw", Short: "create a volume (a guest disk) in a pool", Flags: cmdVolumeCreate})
}

func cmdPoolShow(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)

	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
		c, err := cf.connect(env, args, 1, "one pool name")
		if err != nil {
			return err
		}
		defer c.Close()
		rows, err := c.PoolHealth(ctx, pos[0])
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(env.Stdout, rows)
		}
		tw := newTable(env.Stdout, "HOST", "USABLE", "FREE", "TOTAL", "CHECKED", "PROBLEM")
		for _, r := range rows {
			problem := r.Error
			if len(r.NotSharedWith) > 0 {
				problem = fmt.Sprintf("does not see the markers of %s: not the same storage", strings.Join(r.NotSharedWith, ", "))
			}
			tw.row(r.Node, fmt.Sprint(r.Usable()), gib(r.Free), gib(r.Total), r.Checked.Format("15:04:05"), problem)
		}
		if err := tw.flush(); err != nil {
			return err
		}
		if len(rows) == 0 {
			fmt.Fprintln(env.Stdout, "no host has checked this pool yet (agents check every 10 s)")
		}
		return nil
	}
}

func cmdVolumeCreate(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	size := fs.String("size", "", "volume size, such as 10GiB")
	format := fs.String("format", "qcow2", "qcow2 or raw")
	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
		if len(pos) != 2 {
			return Usagef("give the pool and the volume name")
		}
		n, err := api.ParseSize(*size)
		if err != nil || n <= 0 {
			return Usagef("--size %q: give a size such as 10GiB", *size)
		}
		c, err := cf.client(env)
		if err != nil {
			return err
		}
		defer c.Close()
		v, err := c.CreateVolume(ctx, pos[0], api.VolumeRequest{Name: pos[1], Size: api.Size(n), Format: *format})
		if err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(env.Stdout, v)
		}
		fmt.Fprintf(env.Stdout, "volume %s created in pool %s: %s (%s, %s)\n", v.Name, v.Pool, v.Path, api.FormatSize(v.Size), v.Format)
		return nil
	}
}

func cmdPoolList(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)

	return func(ctx context.Context, env *Env, args []string) error {
		c, err := cf.connect(env, args, 0, "")
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
}

func cmdPoolAdd(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	var p storage.Pool
	fs.StringVar(&p.Path, "path", "", "dir pool: the directory, mounted at this path on every host")
	fs.StringVar(&p.VG, "vg", "", "lvm pool: the volume group visible to every host")
	fs.BoolVar(&p.Shared, "shared", false, "every host sees the same storage (verified by the agents with marker files)")
	fs.BoolVar(&p.Devices, "devices", false, "dir pool under /dev whose entries are block devices guests may use as raw disks (such as /dev/disk/by-id)")
	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
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
}

func cmdPoolDelete(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)

	return func(ctx context.Context, env *Env, args []string) error {
		pos := args
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
}

// gib formats a byte count in GiB for tables.
func gib(n int64) string { return fmt.Sprintf("%.1f GiB", float64(n)/float64(1<<30)) }
