package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Leadership is this node's term as manager. It is valid while Context()
// is not done; every write made through it is one etcd transaction that
// also checks that the election key it won with still exists with the same
// create revision, so writes of a deposed manager fail with ErrNotLeader.
type Leadership struct {
	node    string
	key     string // election key this node won with
	rev     int64  // its create revision
	since   time.Time
	session *concurrency.Session
	cli     *clientv3.Client

	ctx    context.Context
	cancel context.CancelFunc
}

// Campaign blocks until node is elected manager (or ctx ends) and returns
// the confirmed Leadership. The election runs on a session of its own
// whose lease has the given TTL: if this node dies, another takes over
// within about ttl.
func (s *Store) Campaign(ctx context.Context, node string, ttl time.Duration) (*Leadership, error) {
	for {
		sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(int(TTLSeconds(ttl))), concurrency.WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("open election session for node %q: %w", node, err)
		}
		e := concurrency.NewElection(sess, KeyElection)
		// etcd's Campaign, when ctx ends while it waits, resigns with the
		// client's own context: on a store without quorum that blocks
		// until the client is closed, and an agent told to stop would
		// wait for it forever. Return when ctx ends; the campaign ends
		// with the client.
		campaigned := make(chan error, 1)
		go func() { campaigned <- e.Campaign(ctx, node) }()
		key, rev, err := s.awaitCampaign(ctx, node, sess, campaigned)
		if err != nil {
			if ctx.Err() != nil {
				go func() {
					<-campaigned
					sess.Close()
				}()
			} else {
				sess.Close()
			}
			return nil, fmt.Errorf("campaign for manager as node %q: %w", node, err)
		}
		if key == "" {
			key, rev = e.Key(), e.Rev()
		}
		l := &Leadership{node: node, key: key, rev: rev, since: time.Now(), session: sess, cli: s.cli}
		l.ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
		// Never trust a win that may be stale: confirm it with a guarded read.
		resp, err := s.confirmWin(ctx, l)
		if err == nil && resp.Succeeded {
			kvs := resp.Responses[0].GetResponseRange().Kvs
			if len(kvs) == 1 && string(kvs[0].Key) == l.key {
				go l.watch()
				return l, nil
			}
		}
		l.cancel()
		sess.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("campaign for manager as node %q: %w", node, ctx.Err())
		}
		s.log.Warn("election win was stale; campaigning again", "node", node, "op", "election", "err", err)
	}
}

// confirmTry bounds one try of a win's confirmation (confirmWin).
const confirmTry = time.Second

// confirmWin reads the election guarded by l's key. Each try is bounded by
// confirmTry and a failed one is tried again while l's session lives: a
// request on a connection to a store member whose host just died hangs
// until gRPC's keepalive gives it up, about 10 s, and a new manager waited
// that long before it acted (its session's lease expired meanwhile, and the
// office went to the next candidate). A try again goes to a member that
// answers once the agent's failure detector has cut that connection.
func (s *Store) confirmWin(ctx context.Context, l *Leadership) (*clientv3.TxnResponse, error) {
	for {
		tctx, cancel := context.WithTimeout(ctx, confirmTry)
		resp, err := s.cli.Txn(tctx).If(l.Guard()).Then(clientv3.OpGet(KeyElection+"/", LeadingCandidate()...)).Commit()
		cancel()
		if err == nil || ctx.Err() != nil {
			return resp, err
		}
		select {
		case <-l.session.Done():
			return nil, fmt.Errorf("confirm the win: %w (and the session ended)", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		s.log.Warn("could not confirm the election win yet; trying again", "node", l.node, "op", "election", "err", err)
	}
}

// LeadingCandidate are the options that read, under KeyElection+"/", the
// election key that leads: the oldest, whose holder is the manager.
func LeadingCandidate() []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1)}
}

// campaignPoll is how often a waiting candidate reads the election
// itself (awaitCampaign), unless woken sooner (WakeCampaign).
const campaignPoll = 500 * time.Millisecond

// WakeCampaign makes this store's waiting candidate, if any, read the
// election now instead of at its next poll: the caller saw this host's key
// lead (the fast path ended the dead manager's term). Its next campaign
// reads once at its start if nobody waited.
func (s *Store) WakeCampaign() {
	select {
	case s.campaignWake <- struct{}{}:
	default:
	}
}

// awaitCampaign waits for etcd's Campaign (its result on campaigned). That
// Campaign waits for the keys ahead of this candidate's to go with a
// watch, and a watch whose stream went to a store member that died (its
// host lost power: no reset, the connection hangs until gRPC gives it up)
// sees nothing: a new manager took office 9 s after the old one's term had
// been ended, and 1.1 s after in a round where the watch recovered sooner.
// So the election is also read every campaignPoll, and at once when
// WakeCampaign is called: when this candidate's key (its session's lease)
// leads, every older key is gone and the office is its own, so it takes
// office on that read, returning the key and its creation revision
// (Campaign confirms every win with a guarded read). etcd's Campaign is
// left to return by itself: cancelled, it would resign. It returns an
// empty key when Campaign won first.
func (s *Store) awaitCampaign(ctx context.Context, node string, sess *concurrency.Session, campaigned <-chan error) (string, int64, error) {
	mine := fmt.Sprintf("%s/%x", KeyElection, sess.Lease())
	poll := s.campaignPoll
	if poll == 0 {
		poll = campaignPoll
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	// What the reads saw last (the leading key, or the error), logged when
	// it changes: a candidate that takes office late says why.
	var seen string
	note := func(what string, args ...any) {
		if what != seen {
			seen = what
			s.log.Info("manager election: waiting candidate's read", append([]any{"node", node, "op", "election", "saw", what}, args...)...)
		}
	}
	for {
		select {
		case err := <-campaigned:
			return "", 0, err
		case <-ctx.Done():
			return "", 0, ctx.Err()
		case <-t.C:
		case <-s.campaignWake:
		}
		rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		resp, err := s.cli.Get(rctx, KeyElection+"/", LeadingCandidate()...)
		cancel()
		switch {
		case err != nil:
			note("error", "err", err)
			continue
		case len(resp.Kvs) != 1:
			note("no candidate")
			continue
		case string(resp.Kvs[0].Key) != mine && string(resp.Kvs[0].Value) == node:
			// A key of this node's name that is not this session's: a
			// previous process's (its host powered off and back before
			// its session's lease expired, or a session Close that
			// failed). Nobody ends it, since this host is alive, and it
			// would hold the office until its lease expired (a new
			// manager acted 9 s late in benchmark rounds). Its holder is
			// gone: end it, and read again.
			stale := clientv3.LeaseID(resp.Kvs[0].Lease)
			rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			_, err := s.cli.Revoke(rctx, stale)
			cancel()
			note("leading: this node's previous session", "key", string(resp.Kvs[0].Key), "revoked", err == nil, "err", err)
			if err == nil {
				s.WakeCampaign()
			}
			continue
		case string(resp.Kvs[0].Key) != mine:
			note("leading "+string(resp.Kvs[0].Value), "key", string(resp.Kvs[0].Key))
			continue
		}
		s.log.Info("this agent leads the manager election before its campaign saw it (its watch may hang on a store member that does not answer): taking office", "node", node, "op", "election")
		go func() { <-campaigned }()
		return mine, resp.Kvs[0].CreateRevision, nil
	}
}

// watch ends the term when the session's lease is lost or the election key
// disappears or changes hands.
func (l *Leadership) watch() {
	defer l.cancel()
	wch := l.cli.Watch(clientv3.WithRequireLeader(l.ctx), l.key, clientv3.WithRev(l.rev))
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-l.session.Done():
			return
		case wr, ok := <-wch:
			if !ok {
				return
			}
			if wr.Err() != nil {
				// Lost the store leader or compacted: confirm directly.
				cctx, cancel := context.WithTimeout(l.ctx, 2*time.Second)
				ok := l.Check(cctx) == nil
				cancel()
				if !ok {
					return
				}
				wch = l.cli.Watch(clientv3.WithRequireLeader(l.ctx), l.key, clientv3.WithRev(l.rev))
				continue
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE || ev.Kv.CreateRevision != l.rev {
					return
				}
			}
		}
	}
}

// Node is the manager's node name.
func (l *Leadership) Node() string { return l.node }

// Lease is the lease of the term's election session: revoking it ends the
// term (the agent does so for its own previous process's term after a
// crash, so the office does not wait out the TTL).
func (l *Leadership) Lease() clientv3.LeaseID { return l.session.Lease() }

// Key is the election key this term was won with.
func (l *Leadership) Key() string { return l.key }

// Rev is the create revision of the election key: a term number that
// grows with every new term.
func (l *Leadership) Rev() int64 { return l.rev }

// Since is when the term began.
func (l *Leadership) Since() time.Time { return l.since }

// Context is cancelled when the term ends.
func (l *Leadership) Context() context.Context { return l.ctx }

// Done is closed when the term ends.
func (l *Leadership) Done() <-chan struct{} { return l.ctx.Done() }

// Guard is the comparison every manager write carries.
func (l *Leadership) Guard() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)
}

// Do applies ops in one transaction if this node is still the manager;
// ErrNotLeader otherwise.
func (l *Leadership) Do(ctx context.Context, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	return l.DoIf(ctx, nil, ops...)
}

// DoIf applies ops in one transaction if this node is still the manager
// and every cmp holds. ErrNotLeader if the term is over, ErrConflict if a
// cmp failed.
func (l *Leadership) DoIf(ctx context.Context, cmps []clientv3.Cmp, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	if l.ctx.Err() != nil {
		return nil, ErrNotLeader
	}
	all := append([]clientv3.Cmp{l.Guard()}, cmps...)
	resp, err := l.cli.Txn(ctx).If(all...).Then(ops...).Else(clientv3.OpGet(l.key)).Commit()
	if err != nil {
		return nil, fmt.Errorf("manager write: %w", err)
	}
	if resp.Succeeded {
		return resp, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 1 && kvs[0].CreateRevision == l.rev {
		return resp, ErrConflict
	}
	l.cancel()
	return resp, ErrNotLeader
}

// Check confirms with the store that the term is still valid.
func (l *Leadership) Check(ctx context.Context) error {
	_, err := l.Do(ctx)
	return err
}

// Resign ends the term and hands the office to the next candidate.
func (l *Leadership) Resign(ctx context.Context) error {
	_, err := l.cli.Txn(ctx).If(l.Guard()).Then(clientv3.OpDelete(l.key)).Commit()
	l.cancel()
	l.session.Close()
	if err != nil {
		return fmt.Errorf("resign as manager: %w", err)
	}
	return nil
}

// Close ends the term without waiting: the session is closed, which
// revokes its lease and so the election key.
func (l *Leadership) Close() {
	l.cancel()
	l.session.Close()
}

// Manager returns the current manager's node name and election key
// revision, or ErrNotFound when there is none.
func (s *Store) Manager(ctx context.Context) (string, int64, error) {
	resp, err := s.cli.Get(ctx, KeyElection+"/", readOpts(ctx, LeadingCandidate()...)...)
	if err != nil {
		return "", 0, fmt.Errorf("read manager: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, ErrNotFound
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].CreateRevision, nil
}

// IsNotLeader reports whether err means the manager term ended.
func IsNotLeader(err error) bool { return errors.Is(err, ErrNotLeader) }
