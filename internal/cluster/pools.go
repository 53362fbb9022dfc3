package cluster

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/storage"
	"github.com/haven-ha/haven/internal/store"
)

// PrefixPoolHealth holds each host's check of each pool, under the host's
// lease: poolhealth/<node>/<pool>.
const PrefixPoolHealth = store.PrefixPoolHealth

// PoolHealth is one host's latest check of one pool.
type PoolHealth struct {
	storage.Health
	// Token is the marker this host last wrote into the pool; the other
	// hosts look for it to prove the pool is really shared.
	Token string `json:"token,omitempty"`
	// NotSharedWith lists the hosts whose markers this host does not see in
	// the pool (empty: shared with every host that checked it).
	NotSharedWith []string  `json:"not_shared_with,omitempty"`
	Checked       time.Time `json:"checked"`
}

// Usable reports whether guests may use the pool on this host: present,
// writable, and (for a pool declared shared) seen by the other hosts.
func (h PoolHealth) Usable() bool { return h.OK() && len(h.NotSharedWith) == 0 }

// KeyPoolHealth is node's check of pool.
func KeyPoolHealth(node, pool string) string { return PrefixPoolHealth + node + "/" + pool }

// Pools lists the storage pools.
func (s *Store) Pools(ctx context.Context) ([]storage.Pool, error) {
	rs, _, err := List[storage.Pool](ctx, s, PrefixPools)
	return values(rs), err
}

// PoolHealths returns every host's checks, by pool then node.
func (s *Store) PoolHealths(ctx context.Context) (map[string]map[string]PoolHealth, error) {
	resp, err := s.cli.Get(ctx, PrefixPoolHealth, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read pool checks: %w", err)
	}
	out := map[string]map[string]PoolHealth{}
	for _, kv := range resp.Kvs {
		node, pool, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), PrefixPoolHealth), "/")
		if !ok {
			continue
		}
		var h PoolHealth
		if err := store.Decode(string(kv.Key), kv.Value, &h); err != nil {
			return nil, err
		}
		if out[pool] == nil {
			out[pool] = map[string]PoolHealth{}
		}
		out[pool][node] = h
	}
	return out, nil
}

// PutPoolHealth stores node's check of a pool under lease.
func (s *Store) PutPoolHealth(ctx context.Context, node string, h PoolHealth, lease clientv3.LeaseID) error {
	key := KeyPoolHealth(node, h.Pool)
	_, err := s.cli.Put(ctx, key, store.MustEncode(key, h), clientv3.WithLease(lease))
	return err
}
