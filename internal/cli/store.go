package cli

// `haven store ...`: back up the cluster's store (an etcd snapshot taken
// through any agent's API, checked before it is kept), check a backup, and
// restore one into a new etcd data directory (to seed an external etcd
// cluster, or to start over after losing the store).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

func init() {
	Register(&Command{
		Path:    "store backup",
		Args:    "FILE",
		Short:   "save a consistent snapshot of the cluster's store to FILE and check it (admin)",
		Example: "haven store backup /backup/haven-$(date +%F).snap",
		Flags:   cmdStoreBackup,
	})
	Register(&Command{
		Path:    "store verify",
		Args:    "FILE",
		Short:   "check a store backup: its SHA-256, its database's consistency and the Haven cluster in it",
		Example: "haven store verify /backup/haven-2026-12-06.snap",
		Flags:   cmdStoreVerify,
	})
	Register(&Command{
		Path:  "store restore",
		Args:  "FILE --to DIR --name NAME --peer-url URL [--initial-cluster NAME=URL,...]",
		Short: "restore a checked store backup into a new etcd data directory (one per member of the new etcd cluster)",
		Example: "haven store restore haven.snap --to /var/lib/etcd/e1 --name e1 --peer-url https://10.0.0.11:2380 \\\n" +
			"    --initial-cluster e1=https://10.0.0.11:2380,e2=https://10.0.0.12:2380,e3=https://10.0.0.13:2380",
		Flags: cmdStoreRestore,
	})
	Register(&Command{
		Path:    "store roles",
		Args:    "NODE[=CN|=CERT-FILE]|CERT-FILE...",
		Short:   "print the etcdctl commands that confine Haven's hosts to Haven's keys, each writing only its own reports and liveness, in an external etcd (one user per host: the CN of its store certificate)",
		Example: "haven store roles h1 h2 h3 | sh -x\nhaven store roles h1=/etc/haven/h1-store.pem h2=etcd-client-h2",
		Flags:   cmdStoreRoles,
	})
}

func cmdStoreRoles(fs *pflag.FlagSet) Runner {
	return func(ctx context.Context, env *Env, args []string) error {
		if len(args) == 0 {
			return fmt.Errorf("store roles: name each host: NODE (its store user is NODE), NODE=CN or NODE=CERT-FILE (the CN of its --store-cert), or CERT-FILE (CN = node name)")
		}
		var hosts []store.HostUser
		for _, a := range args {
			node, u, named := strings.Cut(a, "=")
			if !named {
				u = a
			}
			if b, err := os.ReadFile(u); err == nil {
				cert, err := pki.ParseCert(b)
				if err != nil {
					return fmt.Errorf("store roles: %s: %w", u, err)
				}
				u = cert.Subject.CommonName
			}
			if !named {
				node = u
			}
			for _, n := range []string{node, u} {
				if !pki.ValidHostName(n) || strings.HasPrefix(n, "-") {
					return fmt.Errorf("store roles: %q: %q is neither a certificate file nor a name (letters, digits, '-', '.')", a, n)
				}
				if n == store.RootUser {
					return fmt.Errorf("store roles: %q: no host or store user may be %s, etcd's administrator", a, store.RootUser)
				}
			}
			hosts = append(hosts, store.HostUser{Node: node, User: u})
		}
		_, err := fmt.Fprint(env.Stdout, store.RolesScript(hosts))
		return err
	}
}

func printSnapshotInfo(env *Env, path string, info store.SnapshotInfo, asJSON bool) error {
	if asJSON {
		return printJSON(env.Stdout, map[string]any{"file": path, "snapshot": info})
	}
	fmt.Fprintf(env.Stdout, "%s: %d bytes, SHA-256 and database check OK; cluster %q (id %s) at store revision %d, %d keys (%d Haven)\n",
		path, info.Bytes, info.Cluster.Name, info.Cluster.ID, info.Revision, info.Keys, info.Haven)
	return nil
}

func cmdStoreBackup(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	return func(ctx context.Context, env *Env, args []string) error {
		c, err := cf.connect(env, args, 1, "the backup file")
		if err != nil {
			return err
		}
		defer c.Close()
		path := args[0]
		tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
		if err != nil {
			return fmt.Errorf("store backup: %w", err)
		}
		defer os.Remove(tmp.Name())
		if _, err := c.StoreSnapshot(ctx, tmp); err != nil {
			tmp.Close()
			return fmt.Errorf("store backup: %w", err)
		}
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return fmt.Errorf("store backup: %w", err)
		}
		if err := tmp.Close(); err != nil {
			return fmt.Errorf("store backup: %w", err)
		}
		info, err := store.VerifySnapshot(tmp.Name())
		if err != nil {
			return fmt.Errorf("store backup: the snapshot received does not check out, nothing kept: %w", err)
		}
		if err := os.Rename(tmp.Name(), path); err != nil {
			return fmt.Errorf("store backup: %w", err)
		}
		return printSnapshotInfo(env, path, info, cf.output == "json")
	}
}

func cmdStoreVerify(fs *pflag.FlagSet) Runner {
	asJSON := fs.Bool("json", false, "print what was found as JSON")
	return func(ctx context.Context, env *Env, args []string) error {
		if err := wantN(args, 1, "the backup file"); err != nil {
			return err
		}
		info, err := store.VerifySnapshot(args[0])
		if err != nil {
			return err
		}
		return printSnapshotInfo(env, args[0], info, *asJSON)
	}
}

func cmdStoreRestore(fs *pflag.FlagSet) Runner {
	to := fs.String("to", "", "the new etcd data directory (must not exist or be empty)")
	name := fs.String("name", "", "this member's name in the new etcd cluster")
	peer := fs.String("peer-url", "", "this member's peer URL")
	initial := fs.String("initial-cluster", "", "every member of the new cluster, NAME=PEER-URL,... (default: this member alone)")
	token := fs.String("initial-cluster-token", "haven", "the new cluster's token")
	noRoles := fs.Bool("no-roles", false, "turn the store roles off in the copy, for an etcd that will not authenticate the hosts by their cluster certificates (set them up there with `haven store roles`)")
	return func(ctx context.Context, env *Env, args []string) error {
		if err := wantN(args, 1, "the backup file"); err != nil {
			return err
		}
		switch {
		case *to == "":
			return Usagef("--to DIR is required: the new etcd data directory")
		case *name == "":
			return Usagef("--name is required: this member's name")
		case *peer == "":
			return Usagef("--peer-url is required: this member's peer URL")
		}
		if *initial == "" {
			*initial = *name + "=" + *peer
		}
		if !strings.Contains(","+*initial, ","+*name+"=") {
			return Usagef("--initial-cluster %q does not list --name %q", *initial, *name)
		}
		info, err := store.VerifySnapshot(args[0])
		if err != nil {
			return err
		}
		err = snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
			SnapshotPath: args[0], Name: *name, OutputDataDir: *to,
			PeerURLs: []string{*peer}, InitialCluster: *initial, InitialClusterToken: *token,
			// Revisions go on from past the backup's, and what lies between
			// counts as compacted: a watcher resumes with an error, not with
			// a silent gap.
			RevisionBump: 1_000_000, MarkCompacted: true,
		})
		if err != nil {
			return fmt.Errorf("store restore into %s: %w", *to, err)
		}
		if *noRoles {
			if err := store.RolesOffInDataDir(*to); err != nil {
				return err
			}
		}
		fmt.Fprintf(env.Stdout, "restored cluster %q (store revision %d, %d keys) into %s as member %s of %s\n",
			info.Cluster.Name, info.Revision, info.Keys, *to, *name, *initial)
		return nil
	}
}
