package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/pki"
)

// InitCluster writes the cluster's identity, CA and first tokens in one
// transaction; ErrExists if the store already holds a cluster. It makes the
// cluster secret key, seals the CA key with it and grants it to this
// Store's host (SetIdentity first).
func (s *Store) InitCluster(ctx context.Context, cfg ClusterConfig, caCert, caKey []byte, tokens ...TokenRecord) error {
	node, certPEM, _, err := s.identity()
	if err != nil {
		return fmt.Errorf("create cluster %q: %w", cfg.Name, err)
	}
	k := pki.NewSecretKey()
	e, err := entryFor(node, certPEM, k)
	if err != nil {
		return err
	}
	sealed, err := k.Seal(KeyCAKey, caKey)
	if err != nil {
		return err
	}
	ops := []clientv3.Op{
		clientv3.OpPut(KeyClusterConfig, MustEncode(KeyClusterConfig, cfg)),
		clientv3.OpPut(KeyCACert, string(caCert)),
		clientv3.OpPut(KeyCAKey, sealed),
		clientv3.OpPut(KeyKeyring(node), MustEncode(KeyKeyring(node), e)),
		clientv3.OpPut(KeyHeartbeat, hex.EncodeToString(pki.NewSecretKey().Key)),
	}
	for _, t := range tokens {
		ops = append(ops, clientv3.OpPut(KeyToken(t.ID), MustEncode(KeyToken(t.ID), t)))
	}
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(KeyClusterConfig), "=", 0)).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("create cluster %q in store: %w", cfg.Name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("create cluster %q: store already holds a cluster: %w", cfg.Name, ErrExists)
	}
	return nil
}

// ClusterConfig reads the cluster's identity.
func (s *Store) ClusterConfig(ctx context.Context) (ClusterConfig, error) {
	var c ClusterConfig
	_, err := s.getJSON(ctx, KeyClusterConfig, &c)
	return c, err
}

// CACert reads the cluster CA certificate (PEM).
func (s *Store) CACert(ctx context.Context) ([]byte, error) {
	resp, err := s.cli.Get(ctx, KeyCACert)
	if err != nil {
		return nil, fmt.Errorf("read cluster CA: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("read cluster CA: %w", ErrNotFound)
	}
	return resp.Kvs[0].Value, nil
}

// CA reads the cluster CA certificate and key (PEM), opening the key with
// this host's cluster secret key.
func (s *Store) CA(ctx context.Context) (cert, key []byte, err error) {
	if cert, err = s.CACert(ctx); err != nil {
		return nil, nil, err
	}
	if key, err = s.GetSealed(ctx, KeyCAKey); err != nil {
		return nil, nil, fmt.Errorf("read cluster CA key: %w", err)
	}
	return cert, key, nil
}

// RegisterNode creates a node's registration; ErrExists if the name is
// taken. extra ops run in the same transaction.
func (s *Store) RegisterNode(ctx context.Context, rec NodeRecord, extra ...clientv3.Op) error {
	key := KeyNodeReg(rec.Name)
	ops := append([]clientv3.Op{clientv3.OpPut(key, MustEncode(key, rec))}, extra...)
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("register node %q: %w", rec.Name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("register node %q: %w", rec.Name, ErrExists)
	}
	return nil
}

// UpdateNode overwrites an existing registration.
func (s *Store) UpdateNode(ctx context.Context, rec NodeRecord) error {
	key := KeyNodeReg(rec.Name)
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).Then(clientv3.OpPut(key, MustEncode(key, rec))).Commit()
	if err != nil {
		return fmt.Errorf("update node %q: %w", rec.Name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("update node %q: %w", rec.Name, ErrNotFound)
	}
	return nil
}

// DeleteNode removes a node's registration and state keys; it fails while
// the node is live. Its liveness key is the node's own (roles.go): no other
// host writes it, it goes with the node's lease.
func (s *Store) DeleteNode(ctx context.Context, name string) error {
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(KeyNodeLive(name)), "=", 0)).Then(
		clientv3.OpDelete(KeyNodeReg(name)),
		clientv3.OpDelete(KeyNodeState(name)),
		clientv3.OpDelete(KeyNodeLevel(name)),
	).Commit()
	if err != nil {
		return fmt.Errorf("delete node %q: %w", name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("delete node %q: it is live (its agent runs): %w", name, ErrConflict)
	}
	return nil
}

// Node reads one registration.
func (s *Store) Node(ctx context.Context, name string) (NodeRecord, error) {
	var r NodeRecord
	_, err := s.getJSON(ctx, KeyNodeReg(name), &r)
	if err != nil {
		return r, fmt.Errorf("node %q: %w", name, err)
	}
	return r, nil
}

// Nodes lists registrations sorted by name.
func (s *Store) Nodes(ctx context.Context) ([]NodeRecord, error) {
	return listJSON[NodeRecord](ctx, s, PrefixNodeReg)
}

// PutToken stores a token record.
func (s *Store) PutToken(ctx context.Context, t TokenRecord) error {
	if _, err := s.cli.Put(ctx, KeyToken(t.ID), MustEncode(KeyToken(t.ID), t)); err != nil {
		return fmt.Errorf("store token %q: %w", t.ID, err)
	}
	return nil
}

// Token reads a token record; ErrNotFound if unknown.
func (s *Store) Token(ctx context.Context, id string) (TokenRecord, error) {
	var t TokenRecord
	_, err := s.getJSON(ctx, KeyToken(id), &t)
	return t, err
}

// Tokens lists token records (hashes included).
func (s *Store) Tokens(ctx context.Context) ([]TokenRecord, error) {
	return listJSON[TokenRecord](ctx, s, PrefixTokens)
}

// DeleteToken revokes a token.
func (s *Store) DeleteToken(ctx context.Context, id string) error {
	resp, err := s.cli.Delete(ctx, KeyToken(id))
	if err != nil {
		return fmt.Errorf("delete token %q: %w", id, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("delete token %q: %w", id, ErrNotFound)
	}
	return nil
}

// UseToken spends one use of a join token: the last use deletes it. It
// fails with ErrNotFound when the token is gone (used up or revoked), and
// retries on a concurrent change, so two joins never share the last use.
func (s *Store) UseToken(ctx context.Context, id string) error {
	for range 10 {
		var t TokenRecord
		rev, err := s.getJSON(ctx, KeyToken(id), &t)
		if err != nil {
			return fmt.Errorf("use token %q: %w", id, err)
		}
		if t.Uses == 0 {
			return nil
		}
		op := clientv3.OpDelete(KeyToken(id))
		if t.Uses > 1 {
			t.Uses--
			op = clientv3.OpPut(KeyToken(id), MustEncode(KeyToken(id), t))
		}
		resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(KeyToken(id)), "=", rev)).Then(op).Commit()
		if err != nil {
			return fmt.Errorf("use token %q: %w", id, err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("use token %q: %w", id, ErrConflict)
}

// DeleteNodeTokens deletes the tokens that belong to node.
func (s *Store) DeleteNodeTokens(ctx context.Context, node string) error {
	toks, err := s.Tokens(ctx)
	if err != nil {
		return err
	}
	for _, t := range toks {
		if t.Node == node {
			if err := s.DeleteToken(ctx, t.ID); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
		}
	}
	return nil
}

// KeyRevoked is the key of a revoked certificate serial.
func KeyRevoked(serial string) string { return PrefixRevoked + serial }

// Revoke records a host certificate as revoked.
func (s *Store) Revoke(ctx context.Context, r Revocation) error {
	if _, err := s.cli.Put(ctx, KeyRevoked(r.Serial), MustEncode(KeyRevoked(r.Serial), r)); err != nil {
		return fmt.Errorf("revoke certificate %s of node %q: %w", r.Serial, r.Node, err)
	}
	return nil
}

// Revocations lists the revoked host certificates.
func (s *Store) Revocations(ctx context.Context) ([]Revocation, error) {
	return listJSON[Revocation](ctx, s, PrefixRevoked)
}

// NodeStates reads the manager's online/offline records by node name.
func (s *Store) NodeStates(ctx context.Context) (map[string]NodeState, error) {
	resp, err := s.cli.Get(ctx, PrefixNodeState, readOpts(ctx, clientv3.WithPrefix())...)
	if err != nil {
		return nil, fmt.Errorf("read node states: %w", err)
	}
	out := map[string]NodeState{}
	for _, kv := range resp.Kvs {
		var st NodeState
		if err := Decode(string(kv.Key), kv.Value, &st); err != nil {
			return nil, err
		}
		out[NameFromKey(PrefixNodeState, string(kv.Key))] = st
	}
	return out, nil
}

// ManagerInfo reads what the current (or last) manager wrote on taking
// office.
func (s *Store) ManagerInfo(ctx context.Context) (ManagerInfo, error) {
	var m ManagerInfo
	_, err := s.getJSON(ctx, KeyManagerInfo, &m)
	return m, err
}

func listJSON[T any](ctx context.Context, s *Store, prefix string) ([]T, error) {
	resp, err := s.cli.Get(ctx, prefix, readOpts(ctx, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))...)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	out := make([]T, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var v T
		if err := Decode(string(kv.Key), kv.Value, &v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
