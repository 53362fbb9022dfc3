package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/pki"
)

// The cluster secret key seals the secrets the store keeps (the CA key,
// the fence configuration: in the clear while an older host needs it, see
// oldreleases.go) and is itself kept only wrapped for each current
// host (KeyringEntry, under PrefixKeyring): see pki/seal.go. Every host
// holds it, since every agent may become the manager (which fences) and
// answers joins (which sign certificates); a removed host's entry is
// deleted and the key rotated (RotateSecretKey), so what it could read
// before is not what the store holds after.

var errNotSealed = errors.New("the store's secrets are not sealed yet (an agent seals them when it starts)")

// KeyringEntry is the cluster secret key wrapped for one host.
type KeyringEntry struct {
	Node    string `json:"node"`
	KeyID   string `json:"key_id"`
	Cert    string `json:"cert"` // the host's certificate (PEM): its public key
	Wrapped string `json:"wrapped"`
}

// identity is the host credential the Store opens sealed values with.
type identity struct {
	mu      sync.Mutex
	node    string
	certPEM []byte
	keyPEM  []byte
}

// SetIdentity names the host this Store belongs to and its certificate
// and private key (PEM): the key unwraps this host's keyring entry.
func (s *Store) SetIdentity(node string, certPEM, keyPEM []byte) {
	s.id.mu.Lock()
	defer s.id.mu.Unlock()
	s.id.node, s.id.certPEM, s.id.keyPEM = node, certPEM, keyPEM
}

func (s *Store) identity() (node string, certPEM, keyPEM []byte, err error) {
	s.id.mu.Lock()
	defer s.id.mu.Unlock()
	if s.id.node == "" {
		return "", nil, nil, errors.New("the store connection has no host identity")
	}
	return s.id.node, s.id.certPEM, s.id.keyPEM, nil
}

// SecretKey unwraps this host's copy of the cluster secret key.
func (s *Store) SecretKey(ctx context.Context) (pki.SecretKey, error) {
	node, _, keyPEM, err := s.identity()
	if err != nil {
		return pki.SecretKey{}, err
	}
	var e KeyringEntry
	if _, err := s.getJSON(ctx, KeyKeyring(node), &e); err != nil {
		if errors.Is(err, ErrNotFound) {
			return pki.SecretKey{}, fmt.Errorf("host %q holds no cluster secret key (not granted yet, or removed): %w", node, ErrNotFound)
		}
		return pki.SecretKey{}, err
	}
	k, err := pki.UnwrapKey(keyPEM, e.Wrapped)
	if err != nil {
		return pki.SecretKey{}, fmt.Errorf("host %q: %w", node, err)
	}
	return k, nil
}

// entryFor wraps k for the host of certPEM.
func entryFor(node string, certPEM []byte, k pki.SecretKey) (KeyringEntry, error) {
	w, err := pki.WrapKey(certPEM, k)
	if err != nil {
		return KeyringEntry{}, fmt.Errorf("grant the cluster secret key to %q: %w", node, err)
	}
	return KeyringEntry{Node: node, KeyID: k.ID, Cert: string(certPEM), Wrapped: w}, nil
}

// sealedOps seals and writes each key of plain (store key to value) with
// k, the store key being the seal's label.
func sealedOps(k pki.SecretKey, plain map[string][]byte) ([]clientv3.Op, error) {
	var ops []clientv3.Op
	for key, v := range plain {
		sv, err := k.Seal(key, v)
		if err != nil {
			return nil, err
		}
		ops = append(ops, clientv3.OpPut(key, sv))
	}
	return ops, nil
}

// GetSealed reads a sealed value and opens it with this host's secret key.
// A value written before secrets were sealed is returned as it is.
// ErrNotFound when absent.
func (s *Store) GetSealed(ctx context.Context, key string) ([]byte, error) {
	resp, err := s.cli.Get(ctx, key, readOpts(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, ErrNotFound
	}
	v := resp.Kvs[0].Value
	if !pki.IsSealed(v) {
		return v, nil
	}
	k, err := s.SecretKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return k.Open(key, v)
}

// PutSealed seals plain with the cluster secret key and writes it, unless
// the key was rotated meanwhile (then it retries with the new one).
func (s *Store) PutSealed(ctx context.Context, key string, plain []byte) error {
	for range 10 {
		k, rev, err := s.currentKey(ctx)
		if err != nil {
			return fmt.Errorf("write %s: %w", key, err)
		}
		ops, err := sealedOps(k, map[string][]byte{key: plain})
		if err != nil {
			return err
		}
		resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(KeyCAKey), "=", rev)).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("write %s: %w", key, err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("write %s: %w", key, ErrConflict)
}

// currentKey is this host's secret key, checked to be the one the CA key
// is sealed with, and the CA key's revision: writes sealed with it are
// guarded by that revision, which every rotation changes.
func (s *Store) currentKey(ctx context.Context) (pki.SecretKey, int64, error) {
	resp, err := s.cli.Get(ctx, KeyCAKey)
	if err != nil {
		return pki.SecretKey{}, 0, err
	}
	if len(resp.Kvs) == 0 {
		return pki.SecretKey{}, 0, fmt.Errorf("cluster CA key: %w", ErrNotFound)
	}
	kv := resp.Kvs[0]
	if !pki.IsSealed(kv.Value) {
		return pki.SecretKey{}, 0, errNotSealed
	}
	k, err := s.SecretKey(ctx)
	if err != nil {
		return pki.SecretKey{}, 0, err
	}
	if id := pki.SealedWith(kv.Value); id != k.ID {
		return pki.SecretKey{}, 0, fmt.Errorf("this host's secret key %s is not the cluster's (%s): %w", k.ID, id, ErrConflict)
	}
	return k, kv.ModRevision, nil
}

// GrantKey wraps the cluster secret key for node, whose certificate is
// certPEM (a joining host, or one asking with RequestKey).
func (s *Store) GrantKey(ctx context.Context, node string, certPEM []byte) error {
	for range 10 {
		k, rev, err := s.currentKey(ctx)
		if err != nil {
			return fmt.Errorf("grant the cluster secret key to %q: %w", node, err)
		}
		e, err := entryFor(node, certPEM, k)
		if err != nil {
			return err
		}
		resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(KeyCAKey), "=", rev)).
			Then(clientv3.OpPut(KeyKeyring(node), MustEncode(KeyKeyring(node), e))).Commit()
		if err != nil {
			return fmt.Errorf("grant the cluster secret key to %q: %w", node, err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("grant the cluster secret key to %q: %w", node, ErrConflict)
}

// RotateSecretKey makes a new cluster secret key, seals the secrets with
// it and wraps it for every host of the keyring but without: a removed
// host's copy (and any copy of the store it kept) no longer opens them. It
// returns the new key's ID ("" for a store not sealed yet: nothing to do).
func (s *Store) RotateSecretKey(ctx context.Context, without string) (string, error) {
	for range 10 {
		old, _, err := s.currentKey(ctx)
		if errors.Is(err, errNotSealed) {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("rotate the cluster secret key: %w", err)
		}
		gets := []clientv3.Op{clientv3.OpGet(PrefixKeyring, clientv3.WithPrefix())}
		for _, key := range SealedKeys {
			gets = append(gets, clientv3.OpGet(key))
		}
		resp, err := s.cli.Txn(ctx).Then(gets...).Commit()
		if err != nil {
			return "", fmt.Errorf("rotate the cluster secret key: %w", err)
		}
		rev := resp.Header.Revision
		plain := map[string][]byte{}
		// Nothing sealed or granted may change between the read and the
		// write (a fence configuration written, a host joining).
		cmp := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(PrefixKeyring).WithPrefix(), "<", rev+1)}
		for i, key := range SealedKeys {
			kvs := resp.Responses[i+1].GetResponseRange().Kvs
			if len(kvs) == 0 {
				cmp = append(cmp, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
				continue
			}
			cmp = append(cmp, clientv3.Compare(clientv3.ModRevision(key), "=", kvs[0].ModRevision))
			// A value in the clear stays so: a notification configuration
			// without a secret, or the fence configuration while an older
			// host needs it (oldreleases.go, which seals it again).
			if v := kvs[0].Value; pki.IsSealed(v) {
				if plain[key], err = old.Open(key, v); err != nil {
					return "", fmt.Errorf("rotate the cluster secret key: %w", err)
				}
			}
		}
		k := pki.NewSecretKey()
		ops, err := sealedOps(k, plain)
		if err != nil {
			return "", err
		}
		ops = append(ops, clientv3.OpDelete(KeyKeyRequest(without)))
		for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
			var e KeyringEntry
			if err := Decode(string(kv.Key), kv.Value, &e); err != nil {
				return "", err
			}
			if e.Node == without {
				ops = append(ops, clientv3.OpDelete(string(kv.Key)))
				continue
			}
			ne, err := entryFor(e.Node, []byte(e.Cert), k)
			if err != nil {
				return "", err
			}
			ops = append(ops, clientv3.OpPut(string(kv.Key), MustEncode(string(kv.Key), ne)))
		}
		tr, err := s.cli.Txn(ctx).If(cmp...).Then(ops...).Commit()
		if err != nil {
			return "", fmt.Errorf("rotate the cluster secret key: %w", err)
		}
		if tr.Succeeded {
			return k.ID, nil
		}
	}
	return "", fmt.Errorf("rotate the cluster secret key: %w", ErrConflict)
}

// SealSecrets seals a store written before secrets were sealed: it makes
// the cluster secret key, grants it to this host, seals the CA key and the
// notification configuration, and keeps the old CA key's bytes as the
// heartbeat key (which was the CA key). The fence configuration is left to
// KeepFenceReadable, which seals it once no registered host runs a release
// that cannot open it (the one this store was written by, say). Hosts that
// started before ask for the key (RequestKey). A store already sealed is
// left alone.
func (s *Store) SealSecrets(ctx context.Context) (bool, error) {
	node, certPEM, _, err := s.identity()
	if err != nil {
		return false, err
	}
	gets := make([]clientv3.Op, len(SealedKeys))
	for i, key := range SealedKeys {
		gets[i] = clientv3.OpGet(key)
	}
	resp, err := s.cli.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		return false, fmt.Errorf("seal secrets: %w", err)
	}
	// SealedKeys[0] is the CA key.
	ca := resp.Responses[0].GetResponseRange().Kvs
	if len(ca) == 0 || pki.IsSealed(ca[0].Value) {
		return false, nil
	}
	k := pki.NewSecretKey()
	plain := map[string][]byte{}
	var cmp []clientv3.Cmp
	for i, key := range SealedKeys {
		kvs := resp.Responses[i].GetResponseRange().Kvs
		if key == KeyFenceConfig {
			continue
		}
		if len(kvs) == 0 {
			cmp = append(cmp, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
			continue
		}
		plain[key] = kvs[0].Value
		cmp = append(cmp, clientv3.Compare(clientv3.ModRevision(key), "=", kvs[0].ModRevision))
	}
	ops, err := sealedOps(k, plain)
	if err != nil {
		return false, err
	}
	e, err := entryFor(node, certPEM, k)
	if err != nil {
		return false, err
	}
	ops = append(ops, clientv3.OpPut(KeyKeyring(node), MustEncode(KeyKeyring(node), e)), clientv3.OpPut(KeyHeartbeat, string(ca[0].Value)))
	tr, err := s.cli.Txn(ctx).If(cmp...).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("seal secrets: %w", err)
	}
	return tr.Succeeded, nil
}

// HeartbeatKey is the key that authenticates direct heartbeats between
// hosts. A store not sealed yet has none: the CA key served then.
func (s *Store) HeartbeatKey(ctx context.Context) ([]byte, error) {
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(KeyHeartbeat), clientv3.OpGet(KeyCAKey)).Commit()
	if err != nil {
		return nil, fmt.Errorf("read heartbeat key: %w", err)
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		return kvs[0].Value, nil
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 && !pki.IsSealed(kvs[0].Value) {
		return kvs[0].Value, nil
	}
	return nil, fmt.Errorf("read heartbeat key: %w", ErrNotFound)
}

// RequestKey asks the other hosts for the cluster secret key: this host
// holds none (it started before secrets were sealed). Another agent that
// holds it checks the certificate and grants it (GrantRequests).
func (s *Store) RequestKey(ctx context.Context) error {
	node, certPEM, _, err := s.identity()
	if err != nil {
		return err
	}
	if _, err := s.cli.Put(ctx, KeyKeyRequest(node), string(certPEM)); err != nil {
		return fmt.Errorf("ask for the cluster secret key: %w", err)
	}
	return nil
}

// GrantRequests grants the cluster secret key to each host that asked for
// it and whose certificate check accepts, and drops the requests.
func (s *Store) GrantRequests(ctx context.Context, check func(node string, certPEM []byte) error) error {
	resp, err := s.cli.Get(ctx, PrefixKeyRequests, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("read key requests: %w", err)
	}
	var errs []error
	for _, kv := range resp.Kvs {
		node := NameFromKey(PrefixKeyRequests, string(kv.Key))
		if err := check(node, kv.Value); err != nil {
			errs = append(errs, fmt.Errorf("host %q asked for the cluster secret key: refused: %w", node, err))
		} else if err := s.GrantKey(ctx, node, kv.Value); err != nil {
			errs = append(errs, err)
			continue
		}
		_, _ = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)).Then(clientv3.OpDelete(string(kv.Key))).Commit()
	}
	return errors.Join(errs...)
}
