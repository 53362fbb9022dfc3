package store

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// RevokeLease ends lease, as the store's root if this host's own
// credential may not. The store's roles let a host revoke only its own
// leases (etcd checks write permission on every key attached to the
// lease), but the manager ends a dead host's liveness lease, and any agent
// the dead manager's election lease, without waiting for their TTL (the
// fast failure path). The host's own client is tried first (the roles are
// off, or the lease's keys are its own); refused, a root client is made
// for the call (the CA key read and unsealed, a credential signed: a few
// milliseconds) and closed after, so that it never holds connections to
// members that died since. Not asRoot, which goes to root first in the
// embedded store: the election lease's revoke, which the host's own
// certificate may do, must not wait for a root client (tried that way, a
// new manager took office 11.6 s after a power loss, against 1.6 s).
func (s *Store) RevokeLease(ctx context.Context, lease clientv3.LeaseID) error {
	_, err := s.cli.Revoke(ctx, lease)
	if err == nil || !IsDenied(err) {
		return err
	}
	rc, rerr := s.rootClient(ctx)
	if rerr != nil {
		return fmt.Errorf("%w (and as the store's root: %v)", err, rerr)
	}
	defer rc.Close()
	if _, err := rc.Revoke(ctx, lease); err != nil {
		return fmt.Errorf("revoke lease %x as the store's root: %w", int64(lease), err)
	}
	return nil
}
