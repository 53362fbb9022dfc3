package store

import (
	"context"
	"errors"
	"fmt"
	"github.com/haven-ha/haven/internal/metrics"
	"log/slog"
	"math"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/model"
)

// Liveness defaults: a dead host is seen within TTL (plus up to one store
// election timeout after a store leader change).
const (
	// DefaultLeaseTTL equals manager.DefaultTimings().LeaseTTL (the
	// simulator's value; a test in package ha keeps them equal): long enough
	// to outlive an agent restart, short enough for failover in about 10 s.
	DefaultLeaseTTL  = 8 * time.Second
	DefaultKeepAlive = 1 * time.Second
	// MinLeaseTTL is etcd's floor for lease TTLs with the embedded server's
	// timings: ceil(1.5 * election timeout) = 2 s.
	MinLeaseTTL = 2 * time.Second
)

// Liveness holds a node's lease and its live key, renewing the lease every
// keepalive interval and re-creating both if the lease was lost.
type Liveness struct {
	s        *Store
	node     string
	ttl      int64
	interval time.Duration
	log      *slog.Logger

	mu      sync.Mutex // guards the fields below
	facts   model.NodeFacts
	lease   clientv3.LeaseID
	renewed time.Time
	// sent is when the request behind the last renewal was sent: the lease
	// cannot expire in the store before sent + TTL.
	sent time.Time
	// since is the store revision at which the live key was created: the
	// start of this host's current life in the cluster (Since).
	since int64

	cancel context.CancelFunc
	done   chan struct{}
}

// TTLSeconds rounds a TTL up to etcd's whole seconds.
func TTLSeconds(d time.Duration) int64 { return int64(math.Ceil(d.Seconds())) }

// StartLiveness grants a lease, writes facts at KeyNodeLive(facts.Name)
// under it and keeps it alive until Stop. It returns once the key is
// written.
func (s *Store) StartLiveness(ctx context.Context, facts model.NodeFacts, ttl, keepalive time.Duration) (*Liveness, error) {
	return s.ResumeLiveness(ctx, facts, ttl, keepalive, 0)
}

// ResumeLiveness is StartLiveness that first tries to take over prev, the
// lease of this node's previous agent process: when the agent restarts
// within the lease TTL (an upgrade, a crash), the node never goes down and
// the keys attached to the lease (its guests' reports) stay in place. A prev
// that has expired is replaced by a new lease.
func (s *Store) ResumeLiveness(ctx context.Context, facts model.NodeFacts, ttl, keepalive time.Duration, prev clientv3.LeaseID) (*Liveness, error) {
	if ttl < MinLeaseTTL {
		return nil, fmt.Errorf("lease TTL %v is below the store's minimum of %v", ttl, MinLeaseTTL)
	}
	if keepalive <= 0 || keepalive >= ttl {
		return nil, fmt.Errorf("keepalive interval %v must be positive and shorter than the lease TTL %v", keepalive, ttl)
	}
	l := &Liveness{s: s, node: facts.Name, ttl: TTLSeconds(ttl), interval: keepalive, log: s.log.With("node", facts.Name), facts: facts, done: make(chan struct{})}
	if prev == 0 || !l.resume(ctx, prev) {
		if err := l.grant(ctx); err != nil {
			return nil, err
		}
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel = cancel
	go l.loop(lctx)
	return l, nil
}

// resume takes over lease prev if it still lives, rewriting the live key
// under it.
func (l *Liveness) resume(ctx context.Context, prev clientv3.LeaseID) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(l.ttl)*time.Second)
	defer cancel()
	sent := time.Now()
	if _, err := l.s.cli.KeepAliveOnce(ctx, prev); err != nil {
		return false
	}
	l.mu.Lock()
	facts := l.facts
	l.mu.Unlock()
	put, err := l.s.cli.Put(ctx, KeyNodeLive(l.node), MustEncode(KeyNodeLive(l.node), facts), clientv3.WithLease(prev), clientv3.WithPrevKV())
	if err != nil {
		return false
	}
	l.mu.Lock()
	l.lease, l.renewed, l.sent, l.since = prev, time.Now(), sent, createdAt(put)
	l.mu.Unlock()
	l.log.Info("resumed the previous agent's lease: the host stayed up", "op", "liveness")
	return true
}

func (l *Liveness) grant(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(l.ttl)*time.Second)
	defer cancel()
	sent := time.Now()
	g, err := l.s.cli.Grant(ctx, l.ttl)
	if err != nil {
		return fmt.Errorf("grant lease for node %q: %w", l.node, err)
	}
	l.mu.Lock()
	facts := l.facts
	l.mu.Unlock()
	put, err := l.s.cli.Put(ctx, KeyNodeLive(l.node), MustEncode(KeyNodeLive(l.node), facts), clientv3.WithLease(g.ID), clientv3.WithPrevKV())
	if err != nil {
		return fmt.Errorf("write liveness of node %q: %w", l.node, err)
	}
	l.mu.Lock()
	l.lease, l.renewed, l.sent, l.since = g.ID, time.Now(), sent, createdAt(put)
	l.mu.Unlock()
	return nil
}

// createdAt is the creation revision of the key a put (made WithPrevKV)
// wrote: the put's own revision if the key did not exist.
func createdAt(put *clientv3.PutResponse) int64 {
	if put.PrevKv != nil {
		return put.PrevKv.CreateRevision
	}
	return put.Header.Revision
}

func (l *Liveness) loop(ctx context.Context) {
	defer close(l.done)
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.renew(ctx)
	}
}

// renew renews the lease once, retrying within one keepalive interval. Each
// attempt requires the answering member to have a leader, so a member cut
// off from the store's majority fails at once instead of holding the request
// until its deadline, and the retry goes to another member (the client
// balances requests over them).
func (l *Liveness) renew(ctx context.Context) {
	l.mu.Lock()
	id := l.lease
	l.mu.Unlock()
	deadline := time.Now().Add(l.interval)
	var err error
	for attempt := 0; ; attempt++ {
		kctx, cancel := context.WithDeadline(clientv3.WithRequireLeader(ctx), deadline)
		sent := time.Now()
		_, err = l.s.cli.KeepAliveOnce(kctx, id)
		cancel()
		if err == nil {
			metrics.Keepalive.Observe(time.Since(sent).Seconds())
			l.mu.Lock()
			l.renewed, l.sent = time.Now(), sent
			l.mu.Unlock()
			return
		}
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			l.log.Warn("liveness lease expired; registering again", "op", "liveness")
			if err := l.grant(ctx); err != nil && ctx.Err() == nil {
				l.log.Warn("re-register liveness failed", "op", "liveness", "err", err)
			}
			return
		}
		wait := min(100*time.Millisecond<<min(attempt, 3), time.Until(deadline))
		if ctx.Err() != nil || wait <= 0 {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	if ctx.Err() == nil {
		l.log.Warn("lease keepalive failed", "op", "liveness", "err", err)
	}
}

// LastSent is when the request behind the last renewal (or grant) was
// sent. The lease lives in the store at least until LastSent + TTL, so a
// host that acts on its own before then (self-fencing) is safe.
func (l *Liveness) LastSent() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent
}

// LastRenewed is when the lease was last renewed (or granted).
func (l *Liveness) LastRenewed() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renewed
}

// Lease is the current lease ID; other keys that should vanish with this
// host may be attached to it.
func (l *Liveness) Lease() clientv3.LeaseID {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lease
}

// Since is the store revision at which this host's live key was created:
// its current life in the cluster began there. The key lives as long as
// the host is up for the manager (it goes with the lease: the host failed
// or stopped), so anything written for the host before Since (an order it
// never received before it went down) was written for an earlier life. An
// agent restarted within the TTL resumes the lease and the key, and so
// keeps its Since. A new lease granted while the previous one still lived
// takes the key over without recreating it: the host never went down
// then, and its Since stays that of the life that goes on.
func (l *Liveness) Since() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.since
}

// UpdateFacts rewrites the live key with new facts under the same lease.
func (l *Liveness) UpdateFacts(ctx context.Context, facts model.NodeFacts) error {
	l.mu.Lock()
	l.facts = facts
	id := l.lease
	l.mu.Unlock()
	if _, err := l.s.cli.Put(ctx, KeyNodeLive(l.node), MustEncode(KeyNodeLive(l.node), facts), clientv3.WithLease(id)); err != nil {
		return fmt.Errorf("update facts of node %q: %w", l.node, err)
	}
	return nil
}

// Stop ends the keepalives and revokes the lease, so the node shows as
// down at once (a graceful stop).
// Release stops renewing the lease without revoking it: the host stays up
// until the lease expires, so an agent restarted before then resumes it
// (ResumeLiveness) and its guests are not taken for lost.
func (l *Liveness) Release() {
	l.cancel()
	<-l.done
}

func (l *Liveness) Stop(ctx context.Context) {
	l.cancel()
	<-l.done
	if _, err := l.s.cli.Revoke(ctx, l.Lease()); err != nil {
		l.log.Warn("revoke liveness lease", "op", "liveness", "err", err)
	}
}

// LiveNodes reads the facts of every live node and the store revision of
// the read (to start a watch after it).
func (s *Store) LiveNodes(ctx context.Context) (map[string]model.NodeFacts, int64, error) {
	resp, err := s.cli.Get(ctx, PrefixNodeLive, readOpts(ctx, clientv3.WithPrefix())...)
	if err != nil {
		return nil, 0, fmt.Errorf("read live nodes: %w", err)
	}
	out := make(map[string]model.NodeFacts, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var f model.NodeFacts
		if err := Decode(string(kv.Key), kv.Value, &f); err != nil {
			return nil, 0, err
		}
		out[NameFromKey(PrefixNodeLive, string(kv.Key))] = f
	}
	return out, resp.Header.Revision, nil
}

// LiveEvent is a change of a node's liveness. Facts is nil when the node
// went down (its lease expired or was revoked).
type LiveEvent struct {
	Node  string
	Facts *model.NodeFacts
	Rev   int64
	// Resync is set on the first event after the watch had to start over
	// (for example after compaction): the receiver should re-read
	// LiveNodes. Node and Facts are empty then.
	Resync bool
}

// WatchLive sends liveness changes after revision rev (as returned by
// LiveNodes) until ctx ends; the channel is closed then.
func (s *Store) WatchLive(ctx context.Context, rev int64) <-chan LiveEvent {
	ch := make(chan LiveEvent, 16)
	go func() {
		defer close(ch)
		next := rev + 1
		for ctx.Err() == nil {
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			wch := s.cli.Watch(wctx, PrefixNodeLive, clientv3.WithPrefix(), clientv3.WithRev(next))
			for wr := range wch {
				if err := wr.Err(); err != nil {
					if wr.CompactRevision != 0 {
						next = wr.CompactRevision
					}
					select {
					case ch <- LiveEvent{Resync: true, Rev: next}:
					case <-ctx.Done():
					}
					break
				}
				for _, ev := range wr.Events {
					e := LiveEvent{Node: NameFromKey(PrefixNodeLive, string(ev.Kv.Key)), Rev: ev.Kv.ModRevision}
					if ev.Type == mvccpb.PUT {
						var f model.NodeFacts
						if err := Decode(string(ev.Kv.Key), ev.Kv.Value, &f); err != nil {
							// Not a node down: its lease lives. Said, not dropped silently.
							s.log.Error("unreadable node facts", "node", e.Node, "err", err)
							continue
						}
						e.Facts = &f
					}
					next = ev.Kv.ModRevision + 1
					select {
					case ch <- e:
					case <-ctx.Done():
					}
				}
			}
			cancel()
			if ctx.Err() == nil {
				select {
				case <-time.After(200 * time.Millisecond):
				case <-ctx.Done():
				}
			}
		}
	}()
	return ch
}
