package store

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// SetExternal records in the cluster's identity whether its store is an
// external etcd (a host moved it: docs/operations.md, "Moving the store").
// Status counts the quorum from it: hosts that are store members, or the
// external members.
func (s *Store) SetExternal(ctx context.Context, external bool) error {
	return s.updateClusterConfig(ctx, "record the store's kind", func(c *ClusterConfig) bool {
		if c.External == external {
			return false
		}
		c.External = external
		return true
	})
}

// SetStoreRoles records in the cluster's identity whether the embedded
// store enforces its roles (status shows it).
func (s *Store) SetStoreRoles(ctx context.Context, on bool) error {
	return s.updateClusterConfig(ctx, "record whether the store's roles are enforced", func(c *ClusterConfig) bool {
		if c.StoreRoles == on {
			return false
		}
		c.StoreRoles = on
		return true
	})
}

// updateClusterConfig changes the cluster's identity with change, which
// reports whether it changed anything, in a transaction retried until no
// other write came between.
func (s *Store) updateClusterConfig(ctx context.Context, what string, change func(*ClusterConfig) bool) error {
	for {
		resp, err := s.cli.Get(ctx, KeyClusterConfig)
		if err != nil {
			return fmt.Errorf("read the cluster's identity: %w", err)
		}
		if len(resp.Kvs) != 1 {
			return fmt.Errorf("read the cluster's identity: %w", ErrNotFound)
		}
		kv := resp.Kvs[0]
		var c ClusterConfig
		if err := Decode(string(kv.Key), kv.Value, &c); err != nil {
			return fmt.Errorf("read the cluster's identity: %w", err)
		}
		if !change(&c) {
			return nil
		}
		tr, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(KeyClusterConfig), "=", kv.ModRevision)).
			Then(clientv3.OpPut(KeyClusterConfig, MustEncode(KeyClusterConfig, c))).Commit()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if tr.Succeeded {
			return nil
		}
	}
}
