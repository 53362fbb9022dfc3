package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/storage"
)

func init() {
	Register(&Command{Path: "pool list", Short: "list storage pools", Flags: cmdPoolList})
	Register(&Command{Path: "pool add", Args: "NAME (--path DIR | --vg VG)", Example: "haven pool add shared --path /srv/shared --shared\nhaven pool add lvm --vg vg_guests --shared", Short: "define a storage pool (a directory mounted on every host, or an LVM volume group)", Flags: cmdPoolAdd})
	Register(&Command{Path: "pool delete", Args: "NAME", Example: "haven pool delete shared", Short: "forget a storage pool (its data is left alone)", Flags: cmdPoolDelete})
	Register(&Command{Path: "pool show", Args: "NAME", Example: "haven pool show shared", Short: "every host's latest check of a pool: present, writable, free space, shared", Flags: cmdPoolShow})
	Register(&Command{Path: "pool volume create", Args: "POOL NAME --size SIZE", Example: "haven pool volume create shared web1 --size 20GiB\nhaven pool volume create lvm db1 --size 50GiB --format raw", Short: "create a volume (a guest disk) in a pool", Flags: cmdVolumeCreate})
}

var cmdPoolShow = showCmd("one pool name", (*client.Client).PoolHealth,
	func(w io.Writer, rows []api.PoolHealthRow) error {
		err := writeTable(w, rows, []string{"HOST", "USABLE", "FREE", "TOTAL", "CHECKED", "PROBLEM"}, func(r api.PoolHealthRow) []string {
			problem := r.Error
			if len(r.NotSharedWith) > 0 {
				problem = fmt.Sprintf("does not see the markers of %s: not the same storage", strings.Join(r.NotSharedWith, ", "))
			}
			return []string{r.Node, fmt.Sprint(r.Usable()), gib(r.Free), gib(r.Total), r.Checked.Format("15:04:05"), problem}
		})
		if err == nil && len(rows) == 0 {
			_, err = fmt.Fprintln(w, "no host has checked this pool yet (agents check every 10 s)")
		}
		return err
	})

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
		return cf.printf(env, v, "volume %s created in pool %s: %s (%s, %s)", v.Name, v.Pool, v.Path, api.FormatSize(v.Size), v.Format)
	}
}

var cmdPoolList = listCmd((*client.Client).Pools, []string{"NAME", "KIND", "WHERE", "SHARED"},
	func(p api.Pool) []string {
		where, kind := p.Path, p.Kind
		if kind == "" {
			kind = storage.KindDir
		}
		if kind == storage.KindLVM {
			where = "/dev/" + p.VG
		}
		return []string{p.Name, string(kind), where, fmt.Sprint(p.Shared)}
	})

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
		return cf.printf(env, p, "pool %q added", p.Name)
	}
}

var cmdPoolDelete = deleteCmd("one pool name", (*client.Client).DeletePool, "pool %q deleted")

// gib formats a byte count in GiB for tables.
func gib(n int64) string { return fmt.Sprintf("%.1f GiB", float64(n)/float64(1<<30)) }
