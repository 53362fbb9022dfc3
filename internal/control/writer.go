package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/raft/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/savedstate"
	"github.com/haven-ha/haven/internal/store"
)

// ManagerWriter is the manager's guarded writes to the store (Writer,
// OrderBatcher).
//
// A guarded write that the store did not answer in time (it is electing a
// leader, say just after the old manager's host, which was also its leader,
// died) is tried again with a short backoff while the term lasts, for up to
// RetryFor, instead of ending the term: each try carries the election
// guard, so a retry can never write as a deposed manager, and every write
// is idempotent (the same keys, the same values). A write refused by the
// guard (the office is lost) ends the term at once, as before.
type ManagerWriter struct {
	L   *store.Leadership
	Cli *clientv3.Client
	// CommandTTL keeps handled commands this long for their callers.
	CommandTTL time.Duration
	// RetryFor bounds how long a guarded write is retried while the store
	// does not answer (default store.DefaultLeaseTTL: by then the term's
	// own lease would have expired in a store that answers).
	RetryFor time.Duration
	// Logger, when set, hears of the retries.
	Logger *slog.Logger
	// Resume, when set, is the saved state's log the term read (Snapshot):
	// the saves carry it on, the first one writing only what the term's
	// start changed rather than the whole state.
	Resume *savedstate.Resume

	saver  *savedstate.Saver
	legacy bool // KeepLegacyState
}

// do applies ops in one guarded transaction, trying again while the store
// does not answer in time and the term lasts, for up to RetryFor.
func (w *ManagerWriter) do(ctx context.Context, ops ...clientv3.Op) error {
	bound := w.RetryFor
	if bound <= 0 {
		bound = store.DefaultLeaseTTL
	}
	deadline := time.Now().Add(bound)
	wait := firstRetry
	for {
		_, err := w.L.Do(ctx, ops...)
		left := time.Until(deadline)
		if err == nil || !storeBusy(ctx, err) || w.L.Context().Err() != nil || left <= 0 {
			return err
		}
		if w.Logger != nil && wait == firstRetry {
			w.Logger.Warn("the store did not answer a manager write; trying again while this term lasts", "op", "manager", "err", err, "for", bound)
		}
		t := time.NewTimer(min(wait, left))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		case <-w.L.Done():
			t.Stop()
			return err
		}
		wait = min(2*wait, 400*time.Millisecond)
	}
}

const firstRetry = 25 * time.Millisecond

// storeBusy reports whether err says the store did not answer in time or
// could not be reached (etcd's "request timed out", "leader changed", "no
// leader", a lost connection: all Unavailable; raft's "proposal dropped"),
// as opposed to an answer (the guard failed, a request refused) or the end
// of ctx.
func storeBusy(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, store.ErrNotLeader) || errors.Is(err, store.ErrConflict) {
		return false
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable
	}
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		s := gs.GRPCStatus()
		// raft's ErrProposalDropped (a leader transfer or election in
		// progress) reaches the client as code Unknown: nothing was written.
		return s.Code() == codes.Unavailable || s.Code() == codes.DeadlineExceeded || (s.Code() == codes.Unknown && s.Message() == raft.ErrProposalDropped.Error())
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// PutOrder writes an order for node.
func (w *ManagerWriter) PutOrder(ctx context.Context, node string, o hostctl.Order) error {
	return w.do(ctx, clientv3.OpPut(cluster.KeyOrder(node, o.Guest), store.MustEncode(cluster.KeyOrder(node, o.Guest), o)))
}

// PutOrders writes many orders in as few guarded transactions as etcd's
// limits allow (cluster.OpsPerTxn each).
func (w *ManagerWriter) PutOrders(ctx context.Context, orders []NodeOrder) error {
	for len(orders) > 0 {
		n := min(len(orders), cluster.OpsPerTxn)
		ops := make([]clientv3.Op, n)
		for i, o := range orders[:n] {
			ops[i] = clientv3.OpPut(cluster.KeyOrder(o.Node, o.Order.Guest), store.MustEncode(cluster.KeyOrder(o.Node, o.Order.Guest), o.Order))
		}
		if err := w.do(ctx, ops...); err != nil {
			return err
		}
		orders = orders[n:]
	}
	return nil
}

// SaveState saves the manager core's state: what changed since the state
// the term read (Resume) or, without one, whole first (package
// savedstate).
func (w *ManagerWriter) SaveState(ctx context.Context, s *manager.State) error {
	if w.saver == nil {
		write := w.do
		keys := func(ctx context.Context, prefix string) ([]string, error) {
			resp, err := w.Cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
			if err != nil {
				return nil, err
			}
			out := make([]string, len(resp.Kvs))
			for i, kv := range resp.Kvs {
				out[i] = string(kv.Key)
			}
			return out, nil
		}
		w.saver = savedstate.NewSaver(write, keys, uint64(w.L.Rev()))
		if w.Resume != nil {
			w.saver.Resume(w.Resume)
			w.Resume = nil
		}
	}
	w.saver.Legacy = w.legacy
	return w.saver.Save(ctx, s)
}

// KeepLegacyState makes the following saves also write (on) or no longer
// write (off) the state in the previous release's format
// (savedstate.Saver.Legacy; control.LegacyStateWriter).
func (w *ManagerWriter) KeepLegacyState(on bool) { w.legacy = on }

// ShutdownReady tells node its graceful shutdown may proceed.
func (w *ManagerWriter) ShutdownReady(ctx context.Context, node string) error {
	return w.do(ctx, clientv3.OpPut(cluster.PrefixShutdownReady+node, time.Now().UTC().Format(time.RFC3339Nano)))
}

// CommandDone records a command's outcome; the record expires later.
func (w *ManagerWriter) CommandDone(ctx context.Context, id string, cmdErr error) error {
	resp, err := w.Cli.Get(ctx, cluster.KeyCommand(id))
	if err != nil {
		return fmt.Errorf("read command %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	var c cluster.Command
	if err := store.Decode(cluster.KeyCommand(id), resp.Kvs[0].Value, &c); err != nil {
		return err
	}
	c.Done = true
	if cmdErr != nil {
		c.Error = cmdErr.Error()
	}
	ttl := w.CommandTTL
	if ttl == 0 {
		ttl = 10 * time.Minute
	}
	lease, err := w.Cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return fmt.Errorf("grant lease for command %s: %w", id, err)
	}
	return w.do(ctx, clientv3.OpPut(cluster.KeyCommand(id), store.MustEncode(cluster.KeyCommand(id), c), clientv3.WithLease(lease.ID)))
}

// applyPolicy sets the manager configuration's policy fields from p
// (empty fields: the defaults).
func applyPolicy(c *manager.Config, p cluster.Policy) {
	d := cluster.DefaultPolicy()
	c.Fencing, c.ShutdownPolicy, c.QuorumLoss, c.Preemption = p.Fencing, p.ShutdownPolicy, p.QuorumLoss, p.Preemption
	c.Reserve, c.Balance = p.Reserve, p.Balance
	c.Capacity = p.EffectiveCapacity()
	if c.Fencing == "" {
		c.Fencing = d.Fencing
	}
	if c.ShutdownPolicy == "" {
		c.ShutdownPolicy = d.ShutdownPolicy
	}
	if c.QuorumLoss == "" {
		c.QuorumLoss = d.QuorumLoss
	}
}
