package store

// Store roles: what each host's store user (the CN of its certificate) may
// write when the store checks access (etcd authentication; with client
// certificates etcd takes the certificate's CN as the user, no password).
// This is the one definition of those roles: EnforceRoles and GrantHost
// apply it to a store, RolesScript prints it as etcdctl commands.
//
// Every host reads all of Haven's keys: any voting host may become the
// manager, and every agent serves the whole API. Every host writes the
// shared families (guests, users, tokens, orders, events, the manager's
// keys...): the API's own authorization decides which of those writes a
// caller may ask for. A host writes the families in HostOwned only under
// its own name. Keys outside Prefix: nothing.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// RootUser is etcd's administrator: membership changes, snapshots, users
// and roles, turning authentication on. No host may be named so.
const RootUser = "root"

// Role names: every host has RoleHosts and its own RoleHost(node).
const (
	RoleHosts      = "haven-hosts"
	roleHostPrefix = "haven-host-"
)

// RoleHost is the role that lets node write its own keys.
func RoleHost(node string) string { return roleHostPrefix + node }

// OwnedFamily is a key family each host writes only under its own name:
// Family+node is its key, or with Sub the prefix Family+node+"/" of its
// keys.
type OwnedFamily struct {
	Family string
	Sub    bool
	// Why says who writes it, for the docs.
	Why string
}

// Key is node's key, or its prefix, in the family.
func (f OwnedFamily) Key(node string) string {
	if f.Sub {
		return f.Family + node + "/"
	}
	return f.Family + node
}

// HostOwned are the per-host key families. Everything else under Prefix is
// written by every host. A host's registration (KeyNodeReg) is not among
// them: the host that signs a join writes it and `haven node remove`
// deletes it, and neither holds root.
var HostOwned = []OwnedFamily{
	{PrefixNodeLive, false, "the host's liveness and facts, under its lease"},
	{PrefixReports, true, "the host's reports of its guests (and order results), under its lease"},
	{PrefixPoolHealth, true, "the host's checks of its pools, under its lease"},
}

// ownedPrefixes are HostOwned's family prefixes, sorted.
func ownedPrefixes() []string {
	var ps []string
	for _, f := range HostOwned {
		ps = append(ps, f.Family)
	}
	slices.Sort(ps)
	return ps
}

// KeyRange is a range of keys [Key, End) (End empty: Key alone).
type KeyRange struct{ Key, End string }

// prefixEnd is the end of the range of keys starting with p.
func prefixEnd(p string) string { return clientv3.GetPrefixRangeEnd(p) }

// SharedWrites are the ranges every host may write: Prefix without the
// host-owned families.
func SharedWrites() []KeyRange {
	var rs []KeyRange
	from := Prefix
	for _, p := range ownedPrefixes() {
		if from < p {
			rs = append(rs, KeyRange{from, p})
		}
		from = prefixEnd(p)
	}
	return append(rs, KeyRange{from, prefixEnd(Prefix)})
}

// OwnWrites are the keys and ranges node may write besides SharedWrites.
func OwnWrites(node string) []KeyRange {
	var rs []KeyRange
	for _, f := range HostOwned {
		k := f.Key(node)
		if f.Sub {
			rs = append(rs, KeyRange{k, prefixEnd(k)})
		} else {
			rs = append(rs, KeyRange{k, ""})
		}
	}
	return rs
}

// checkHostUser refuses a name that cannot be a host's store user.
func checkHostUser(node string) error {
	switch {
	case node == "" || strings.ContainsAny(node, "/ \t\n\x00"):
		return fmt.Errorf("store user %q: not a host name", node)
	case node == RootUser:
		return fmt.Errorf("store user %q: reserved for the store's administrator; no host may be named so", node)
	}
	return nil
}

// ensure runs an etcd auth call that fails when its object already exists.
func ensure(err error, exists error) error {
	if err == nil || errors.Is(err, exists) {
		return nil
	}
	return err
}

// ensureSharedRole makes RoleHosts with its permissions (again): read
// and write the shared ranges, read the host-owned families. The ranges
// start at distinct keys, so granting again replaces rather than adds.
func ensureSharedRole(ctx context.Context, cli *clientv3.Client) error {
	if _, err := cli.RoleAdd(ctx, RoleHosts); ensure(err, rpctypes.ErrRoleAlreadyExist) != nil {
		return fmt.Errorf("store role %s: %w", RoleHosts, err)
	}
	for _, r := range SharedWrites() {
		if _, err := cli.RoleGrantPermission(ctx, RoleHosts, r.Key, r.End, clientv3.PermissionType(authpb.READWRITE)); err != nil {
			return fmt.Errorf("store role %s: read and write [%s, %s): %w", RoleHosts, r.Key, r.End, err)
		}
	}
	for _, p := range ownedPrefixes() {
		if _, err := cli.RoleGrantPermission(ctx, RoleHosts, p, prefixEnd(p), clientv3.PermissionType(authpb.READ)); err != nil {
			return fmt.Errorf("store role %s: read %s: %w", RoleHosts, p, err)
		}
	}
	return nil
}

// GrantHost makes node's store user (no password: its certificate's CN
// authenticates it) with RoleHosts and its own role. It is idempotent and
// needs the root user's credentials.
func GrantHost(ctx context.Context, cli *clientv3.Client, node string) error {
	if err := checkHostUser(node); err != nil {
		return err
	}
	if err := ensureSharedRole(ctx, cli); err != nil {
		return err
	}
	role := RoleHost(node)
	if _, err := cli.RoleAdd(ctx, role); ensure(err, rpctypes.ErrRoleAlreadyExist) != nil {
		return fmt.Errorf("store role %s: %w", role, err)
	}
	for _, r := range OwnWrites(node) {
		if _, err := cli.RoleGrantPermission(ctx, role, r.Key, r.End, clientv3.PermissionType(authpb.WRITE)); err != nil {
			return fmt.Errorf("store role %s: write %s: %w", role, r.Key, err)
		}
	}
	if _, err := cli.UserAddWithOptions(ctx, node, "", &clientv3.UserAddOptions{NoPassword: true}); ensure(err, rpctypes.ErrUserAlreadyExist) != nil {
		return fmt.Errorf("store user %s: %w", node, err)
	}
	for _, r := range []string{RoleHosts, role} {
		if _, err := cli.UserGrantRole(ctx, node, r); err != nil {
			return fmt.Errorf("store user %s: grant %s: %w", node, r, err)
		}
	}
	return nil
}

// RevokeHost deletes node's store user and role: its certificates then
// read nothing, even where the store does not check revocations. Needs
// root.
func RevokeHost(ctx context.Context, cli *clientv3.Client, node string) error {
	if err := checkHostUser(node); err != nil {
		return err
	}
	if _, err := cli.UserDelete(ctx, node); ensure(err, rpctypes.ErrUserNotFound) != nil {
		return fmt.Errorf("store user %s: delete: %w", node, err)
	}
	if _, err := cli.RoleDelete(ctx, RoleHost(node)); ensure(err, rpctypes.ErrRoleNotFound) != nil {
		return fmt.Errorf("store role %s: delete: %w", RoleHost(node), err)
	}
	return nil
}

// EnforceRoles gives every host in hosts its store user, makes the root
// user (no password: a certificate with CN root) and turns etcd's
// authentication on. cli must authenticate as root once it is on (a
// client certificate with CN root); before, any client may set it up.
func EnforceRoles(ctx context.Context, cli *clientv3.Client, hosts []string) error {
	for _, h := range hosts {
		if err := GrantHost(ctx, cli, h); err != nil {
			return err
		}
	}
	if _, err := cli.UserAddWithOptions(ctx, RootUser, "", &clientv3.UserAddOptions{NoPassword: true}); ensure(err, rpctypes.ErrUserAlreadyExist) != nil {
		return fmt.Errorf("store user %s: %w", RootUser, err)
	}
	if _, err := cli.UserGrantRole(ctx, RootUser, RootUser); err != nil {
		return fmt.Errorf("store user %s: grant role %s: %w", RootUser, RootUser, err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("store: turn authentication on: %w", err)
	}
	return nil
}

// HostUser is a host's store user: the CN of the certificate it presents
// to the store (its node name, unless an external etcd issued another).
type HostUser struct{ Node, User string }

// RolesScript is the etcdctl script that sets the same roles up in an
// external etcd for the given hosts and turns authentication on. The names
// must have been checked (ValidHostName, not RootUser).
func RolesScript(hosts []HostUser) string {
	var b strings.Builder
	perm := func(role, typ string, r KeyRange) {
		fmt.Fprintf(&b, "etcdctl role grant-permission %s %s %s", role, typ, r.Key)
		if r.End != "" {
			fmt.Fprintf(&b, " %s", r.End)
		}
		b.WriteString("\n")
	}
	b.WriteString("# Haven's hosts read " + Prefix + " and write it but for other hosts' own keys;\n")
	b.WriteString("# nothing else. etcd must check client certificates (--client-cert-auth)\n")
	b.WriteString("# and refuse removed hosts (--client-crl-file: any agent's DATA/pki/revoked.crl).\n")
	b.WriteString("set -e\n")
	fmt.Fprintf(&b, "etcdctl role add %s\n", RoleHosts)
	for _, r := range SharedWrites() {
		perm(RoleHosts, "readwrite", r)
	}
	for _, p := range ownedPrefixes() {
		fmt.Fprintf(&b, "etcdctl role grant-permission %s --prefix=true read %s\n", RoleHosts, p)
	}
	for _, h := range hosts {
		fmt.Fprintf(&b, "etcdctl role add %s\n", RoleHost(h.Node))
		for _, r := range OwnWrites(h.Node) {
			perm(RoleHost(h.Node), "write", r)
		}
		fmt.Fprintf(&b, "etcdctl user add %s --no-password\n", h.User)
		fmt.Fprintf(&b, "etcdctl user grant-role %s %s\netcdctl user grant-role %s %s\n", h.User, RoleHosts, h.User, RoleHost(h.Node))
	}
	b.WriteString("# etcd needs a root user before authentication is on (asks for its password).\n")
	b.WriteString("etcdctl user get root >/dev/null 2>&1 || { etcdctl user add root && etcdctl user grant-role root root; }\n")
	b.WriteString("etcdctl auth enable\n")
	return b.String()
}
