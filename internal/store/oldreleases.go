package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/pki"
)

// The fence configuration for older releases.
//
// Releases below model.SealedSecretsLevel (the previous release, 235b719,
// reports level 0) cannot open sealed values, and one of them elected
// manager must still fence: failover must happen whoever manages. So while
// a registered host may run such a release, the fence configuration is
// stored in the clear, as that release wrote it (its reader ignores the
// "schema" member), and it is sealed again once every registered host
// reads sealed values. Registered, not only online: an old host that was
// offline when the configuration was sealed could come back and be elected
// before anyone unseals it again. A host's level is the one its live facts
// report, or, while it is offline, the one it last reported (NodeLevel,
// written at its registration and whenever its facts show another); a
// registered host with neither is taken for an old one (it was never seen
// by this release). The other sealed values stay sealed: the previous
// release reads the CA key only to answer joins (send joins to a current
// host), and has no notifications.
//
// Every current agent keeps this (KeepFenceReadable) on every change of
// the registrations, the live facts, the levels or the configuration, and
// writes of the configuration (PutFenceConfig) take the same form; each
// write is guarded by the revision of what it was decided on.

// NodeLevel is the feature level a host's agent last reported, kept while
// the host is offline.
type NodeLevel struct {
	Level int `json:"level"`
}

// OpNodeLevel writes node's level (with its registration).
func OpNodeLevel(node string, level int) clientv3.Op {
	return clientv3.OpPut(KeyNodeLevel(node), MustEncode(KeyNodeLevel(node), NodeLevel{Level: level}))
}

// FenceForm says in which form the fence configuration is kept, and why.
type FenceForm struct {
	// Clear: the fence configuration is stored unsealed, readable by
	// whoever reads the store.
	Clear bool `json:"clear"`
	// OldHosts are the registered hosts that may run a release which
	// cannot open sealed values (feature level below
	// model.SealedSecretsLevel, or never seen by this release): while
	// there is one, the configuration is kept in the clear. Upgrade them
	// or remove them.
	OldHosts []string `json:"old_hosts,omitempty"`
}

// fenceView is what the fence configuration's form is decided on, read in
// one transaction.
type fenceView struct {
	rev   int64
	old   []string      // registered hosts below SealedSecretsLevel or unknown
	fix   []clientv3.Op // level records to bring up to date
	fence *mvccpb.KeyValue
	ca    *mvccpb.KeyValue
}

func (s *Store) readFenceView(ctx context.Context) (fenceView, error) {
	// Serializable when the caller reads so (status without quorum): a
	// transaction of serializable reads only is served by this member.
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(PrefixNodeReg, readOpts(ctx, clientv3.WithPrefix(), clientv3.WithKeysOnly())...),
		clientv3.OpGet(PrefixNodeLive, readOpts(ctx, clientv3.WithPrefix())...),
		clientv3.OpGet(PrefixNodeLevel, readOpts(ctx, clientv3.WithPrefix())...),
		clientv3.OpGet(KeyFenceConfig, readOpts(ctx)...),
		clientv3.OpGet(KeyCAKey, readOpts(ctx)...),
	).Commit()
	if err != nil {
		return fenceView{}, fmt.Errorf("read the hosts' feature levels: %w", err)
	}
	kvs := func(i int) []*mvccpb.KeyValue { return resp.Responses[i].GetResponseRange().Kvs }
	v := fenceView{rev: resp.Header.Revision}
	live := map[string]int{}
	for _, kv := range kvs(1) {
		// Only the level: facts of any release and version will do.
		var f struct {
			FeatureLevel int `json:"feature_level"`
		}
		if err := json.Unmarshal(kv.Value, &f); err != nil {
			return fenceView{}, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		live[NameFromKey(PrefixNodeLive, string(kv.Key))] = f.FeatureLevel
	}
	recorded := map[string]int{}
	for _, kv := range kvs(2) {
		var l NodeLevel
		if err := Decode(string(kv.Key), kv.Value, &l); err != nil {
			return fenceView{}, err
		}
		recorded[NameFromKey(PrefixNodeLevel, string(kv.Key))] = l.Level
	}
	registered := map[string]bool{}
	for _, kv := range kvs(0) {
		node := NameFromKey(PrefixNodeReg, string(kv.Key))
		registered[node] = true
		level, known := recorded[node]
		if l, ok := live[node]; ok {
			if !known || l != level {
				v.fix = append(v.fix, OpNodeLevel(node, l))
			}
			level, known = l, true
		}
		if !known || level < model.SealedSecretsLevel {
			v.old = append(v.old, node)
		}
	}
	for node := range recorded {
		if !registered[node] {
			v.fix = append(v.fix, clientv3.OpDelete(KeyNodeLevel(node))) // removed by a release that left it
		}
	}
	slices.Sort(v.old)
	if f := kvs(3); len(f) > 0 {
		v.fence = f[0]
	}
	if ca := kvs(4); len(ca) > 0 {
		v.ca = ca[0]
	}
	return v, nil
}

// guard holds a write to what the view was read from: no registration,
// facts, level, fence configuration or CA key (the secret key's rotation)
// changed since.
func (v fenceView) guard() []clientv3.Cmp {
	cmp := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(PrefixNodeReg).WithPrefix(), "<", v.rev+1),
		clientv3.Compare(clientv3.ModRevision(PrefixNodeLive).WithPrefix(), "<", v.rev+1),
		clientv3.Compare(clientv3.ModRevision(PrefixNodeLevel).WithPrefix(), "<", v.rev+1),
	}
	for key, kv := range map[string]*mvccpb.KeyValue{KeyFenceConfig: v.fence, KeyCAKey: v.ca} {
		if kv == nil {
			cmp = append(cmp, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		} else {
			cmp = append(cmp, clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision))
		}
	}
	return cmp
}

// put is the fence configuration plain in the form the view asks for:
// in the clear while an old host is registered (or the store's secrets are
// not sealed yet), else sealed with this host's secret key, which must be
// the one the CA key is sealed with.
func (s *Store) fencePut(ctx context.Context, v fenceView, plain []byte) (clientv3.Op, error) {
	if len(v.old) > 0 || v.ca == nil || !pki.IsSealed(v.ca.Value) {
		return clientv3.OpPut(KeyFenceConfig, string(plain)), nil
	}
	k, err := s.SecretKey(ctx)
	if err != nil {
		return clientv3.Op{}, err
	}
	if id := pki.SealedWith(v.ca.Value); id != k.ID {
		return clientv3.Op{}, fmt.Errorf("this host's secret key %s is not the cluster's (%s): %w", k.ID, id, ErrConflict)
	}
	sv, err := k.Seal(KeyFenceConfig, plain)
	if err != nil {
		return clientv3.Op{}, err
	}
	return clientv3.OpPut(KeyFenceConfig, sv), nil
}

// PutFenceConfig writes the fence configuration (plain: its JSON), sealed
// unless a registered host may run a release that cannot open it.
func (s *Store) PutFenceConfig(ctx context.Context, plain []byte) error {
	for range 10 {
		v, err := s.readFenceView(ctx)
		if err != nil {
			return fmt.Errorf("write %s: %w", KeyFenceConfig, err)
		}
		op, err := s.fencePut(ctx, v, plain)
		if err != nil {
			return fmt.Errorf("write %s: %w", KeyFenceConfig, err)
		}
		resp, err := s.cli.Txn(ctx).If(v.guard()...).Then(append(v.fix, op)...).Commit()
		if err != nil {
			return fmt.Errorf("write %s: %w", KeyFenceConfig, err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("write %s: %w", KeyFenceConfig, ErrConflict)
}

// KeepFenceReadable brings the hosts' level records up to date and keeps
// the fence configuration in the form they need: it unseals it while a
// registered host may run a release that cannot open it, and seals it
// again once none does. changed reports that this call changed the form
// (the caller says so in the event log); form is the form it leaves.
func (s *Store) KeepFenceReadable(ctx context.Context) (form FenceForm, changed bool, err error) {
	for range 10 {
		v, err := s.readFenceView(ctx)
		if err != nil {
			return FenceForm{}, false, err
		}
		ops := v.fix
		form = FenceForm{OldHosts: v.old}
		if v.fence != nil {
			sealed := pki.IsSealed(v.fence.Value)
			plain := v.fence.Value
			if sealed {
				if plain, err = s.openFence(ctx, v.fence.Value); err != nil {
					return FenceForm{}, false, err
				}
			}
			op, err := s.fencePut(ctx, v, plain)
			if err != nil {
				return FenceForm{}, false, fmt.Errorf("keep the fence configuration readable: %w", err)
			}
			form.Clear = !pki.IsSealed(op.ValueBytes())
			if changed = sealed == form.Clear; changed {
				ops = append(ops, op)
			}
		}
		if len(ops) == 0 {
			return form, false, nil
		}
		resp, err := s.cli.Txn(ctx).If(v.guard()...).Then(ops...).Commit()
		if err != nil {
			return FenceForm{}, false, fmt.Errorf("keep the fence configuration readable: %w", err)
		}
		if resp.Succeeded {
			return form, changed, nil
		}
	}
	return FenceForm{}, false, fmt.Errorf("keep the fence configuration readable: %w", ErrConflict)
}

func (s *Store) openFence(ctx context.Context, sealed []byte) ([]byte, error) {
	k, err := s.SecretKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("unseal the fence configuration for older hosts: %w", err)
	}
	return k.Open(KeyFenceConfig, sealed)
}

// FenceForm reads in which form the fence configuration is kept, for
// status: Clear when it is stored unsealed, and the registered hosts that
// may run a release which cannot open it.
func (s *Store) FenceForm(ctx context.Context) (FenceForm, error) {
	v, err := s.readFenceView(ctx)
	if err != nil {
		return FenceForm{}, err
	}
	return FenceForm{Clear: v.fence != nil && !pki.IsSealed(v.fence.Value), OldHosts: v.old}, nil
}

// FenceFormChanges signals each change of what the fence configuration's
// form is decided on (registrations, facts, levels, the configuration),
// until ctx ends or a watch fails: then it is closed (watch again).
func (s *Store) FenceFormChanges(ctx context.Context) <-chan struct{} {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	out := make(chan struct{}, 1)
	var wg sync.WaitGroup
	for _, w := range []clientv3.WatchChan{
		s.cli.Watch(ctx, PrefixNodeReg, clientv3.WithPrefix()),
		s.cli.Watch(ctx, PrefixNodeLive, clientv3.WithPrefix()),
		s.cli.Watch(ctx, PrefixNodeLevel, clientv3.WithPrefix()),
		s.cli.Watch(ctx, KeyFenceConfig),
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel() // one watch ending ends them all
			for range w {
				select {
				case out <- struct{}{}:
				default: // one signal pending is enough
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		cancel()
		close(out)
	}()
	return out
}
