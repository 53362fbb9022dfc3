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
		if c.External == external {
			return nil
		}
		c.External = external
		tr, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(KeyClusterConfig), "=", kv.ModRevision)).
			Then(clientv3.OpPut(KeyClusterConfig, MustEncode(KeyClusterConfig, c))).Commit()
		if err != nil {
			return fmt.Errorf("record the store's kind: %w", err)
		}
		if tr.Succeeded {
			return nil
		}
	}
}
