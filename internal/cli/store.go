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
		Args:    "CN|CERT-FILE...",
		Short:   "print the etcdctl commands that confine Haven's hosts to Haven's keys in an external etcd (one user per store certificate CN)",
		Example: "haven store roles h1 h2 h3 | sh -x\nhaven store roles /etc/haven/h1-store.pem",
		Flags:   cmdStoreRoles,
	})
}

// storeRolesScript is the etcdctl script that gives each store user (the
// CN of a host's --store-cert) read and write on Haven's prefix only, and
// turns authentication on. The user names are checked as node names are.
func storeRolesScript(users []string) string {
	var b strings.Builder
	b.WriteString("# Haven's hosts may read and write " + store.Prefix + " and nothing else.\n")
	b.WriteString("# etcd must check client certificates (--client-cert-auth) and refuse\n")
	b.WriteString("# removed hosts (--client-crl-file: any agent's DATA/pki/revoked.crl).\n")
	b.WriteString("set -e\n")
	b.WriteString("etcdctl role add haven\n")
	b.WriteString("etcdctl role grant-permission haven --prefix=true readwrite " + store.Prefix + "\n")
	for _, u := range users {
		fmt.Fprintf(&b, "etcdctl user add %s --no-password\netcdctl user grant-role %s haven\n", u, u)
	}
	b.WriteString("# etcd needs a root user before authentication is on (asks for its password).\n")
	b.WriteString("etcdctl user get root >/dev/null 2>&1 || { etcdctl user add root && etcdctl user grant-role root root; }\n")
	b.WriteString("etcdctl auth enable\n")
	return b.String()
}

func cmdStoreRoles(fs *pflag.FlagSet) Runner {
	return func(ctx context.Context, env *Env, args []string) error {
		if len(args) == 0 {
			return fmt.Errorf("store roles: name each host's store user: the CN of its --store-cert, or the certificate file")
		}
		var users []string
		for _, a := range args {
			u := a
			if b, err := os.ReadFile(a); err == nil {
				cert, err := pki.ParseCert(b)
				if err != nil {
					return fmt.Errorf("store roles: %s: %w", a, err)
				}
				u = cert.Subject.CommonName
			}
			if !pki.ValidHostName(u) || strings.HasPrefix(u, "-") {
				return fmt.Errorf("store roles: %q is neither a certificate file nor a user name (letters, digits, '-', '.')", a)
			}
			users = append(users, u)
		}
		_, err := fmt.Fprint(env.Stdout, storeRolesScript(users))
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
		fmt.Fprintf(env.Stdout, "restored cluster %q (store revision %d, %d keys) into %s as member %s of %s\n",
			info.Cluster.Name, info.Revision, info.Keys, *to, *name, *initial)
		return nil
	}
}
