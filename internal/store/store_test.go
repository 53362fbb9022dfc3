package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

// TestLeadershipGuardsWrites: the winner writes; once its term ends (its
// session lease is revoked, as when it dies) the other candidate wins and
// the deposed leader's writes fail.
func TestLeadershipGuardsWrites(t *testing.T) {
	srv := storetest.Start(t)
	a, b := srv.Store, srv.Connect(t)
	ctx := context.Background()

	la, err := a.Campaign(ctx, "a", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := la.Do(ctx, clientv3.OpPut("/haven/test/x", "a")); err != nil {
		t.Fatalf("leader write: %v", err)
	}
	if mgr, rev, err := a.Manager(ctx); err != nil || mgr != "a" || rev != la.Rev() {
		t.Fatalf("Manager() = %q %d %v; want a %d", mgr, rev, err, la.Rev())
	}
	// A failed extra condition is a conflict, not a lost term.
	_, err = la.DoIf(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.Value("/haven/test/x"), "=", "zzz")}, clientv3.OpPut("/haven/test/x", "no"))
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("DoIf with a false condition: %v, want ErrConflict", err)
	}

	won := make(chan *store.Leadership, 1)
	go func() {
		lb, err := b.Campaign(ctx, "b", 2*time.Second)
		if err != nil {
			t.Error(err)
			close(won)
			return
		}
		won <- lb
	}()
	select {
	case <-won:
		t.Fatal("b won while a holds the office")
	case <-time.After(300 * time.Millisecond): // b must still be waiting
	}

	// a "dies": its election lease goes away without a resign.
	old := la.Key()
	if _, err := a.Client().Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	var lb *store.Leadership
	select {
	case lb = <-won:
	case <-time.After(10 * time.Second):
		t.Fatal("b did not take over")
	}
	if lb == nil {
		t.Fatal("b's campaign failed")
	}
	select {
	case <-la.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a's term did not end when its key went away")
	}
	if _, err := la.Do(ctx, clientv3.OpPut("/haven/test/x", "stale")); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("deposed leader write: %v, want ErrNotLeader", err)
	}
	if _, err := lb.Do(ctx, clientv3.OpPut("/haven/test/x", "b")); err != nil {
		t.Fatalf("new leader write: %v", err)
	}
	resp, _ := a.Client().Get(ctx, "/haven/test/x")
	if got := string(resp.Kvs[0].Value); got != "b" {
		t.Fatalf("value %q, want b", got)
	}
	if lb.Rev() <= la.Rev() {
		t.Fatalf("term did not grow: %d then %d", la.Rev(), lb.Rev())
	}
	if err := lb.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := lb.Do(ctx, clientv3.OpPut("/haven/test/x", "after")); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("write after resign: %v", err)
	}
}

// TestLeadershipEndsWithSession: closing the session (lease revoked) ends
// the term and lets the next candidate in.
func TestLeadershipEndsWithSession(t *testing.T) {
	srv := storetest.Start(t)
	ctx := context.Background()
	la, err := srv.Store.Campaign(ctx, "a", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	la.Close()
	select {
	case <-la.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("term did not end")
	}
	if err := la.Check(ctx); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("Check after close: %v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	lb, err := srv.Connect(t).Campaign(cctx, "b", 2*time.Second)
	if err != nil {
		t.Fatalf("next candidate: %v", err)
	}
	if err := lb.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// electionKey puts an election key for node under a lease of its own (30 s)
// and returns that lease, as a candidate's session would.
func electionKey(ctx context.Context, t *testing.T, cli *clientv3.Client, node string) *clientv3.LeaseGrantResponse {
	t.Helper()
	old, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, fmt.Sprintf("%s/%x", store.KeyElection, old.ID), node, clientv3.WithLease(old.ID)); err != nil {
		t.Fatal(err)
	}
	return old
}

// TestWakeCampaign: a candidate whose etcd Campaign never sees its win
// (its watch hangs on a dead store member) takes office as soon as it is
// woken once its key leads, without waiting for its own poll of the
// election.
func TestWakeCampaign(t *testing.T) {
	srv := storetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := srv.Connect(t)
	s.SetCampaignPoll(time.Hour)
	cli := s.Client()
	old := electionKey(ctx, t, cli, "a")
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(30))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	mine := fmt.Sprintf("%s/%x", store.KeyElection, sess.Lease())
	put, err := cli.Put(ctx, mine, "b", clientv3.WithLease(sess.Lease()))
	if err != nil {
		t.Fatal(err)
	}
	type won struct {
		key string
		rev int64
		err error
	}
	done := make(chan won, 1)
	go func() {
		key, rev, err := s.AwaitCampaign(ctx, "b", sess)
		done <- won{key, rev, err}
	}()
	s.WakeCampaign() // a's key still leads, or already not: either way b's read is right
	if _, err := cli.Revoke(ctx, old.ID); err != nil {
		t.Fatal(err)
	}
	s.WakeCampaign()
	select {
	case w := <-done:
		if w.err != nil || w.key != mine || w.rev != put.Header.Revision {
			t.Fatalf("took office with key %q rev %d (%v), want %q rev %d", w.key, w.rev, w.err, mine, put.Header.Revision)
		}
	case <-ctx.Done():
		t.Fatal("the woken candidate did not take office once its key led")
	}
}

// TestLivenessExpiresAndWatch: a node's live key exists while its lease is
// kept alive, and vanishes within the TTL when keepalives stop.
func TestLivenessExpiresAndWatch(t *testing.T) {
	srv := storetest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, rev, err := srv.Store.LiveNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	events := srv.Store.WatchLive(ctx, rev)

	other := srv.Connect(t)
	facts := model.NodeFacts{Name: "n1", CPUs: 2}
	l, err := other.StartLiveness(ctx, facts, 2*time.Second, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ev := <-events
	if ev.Node != "n1" || ev.Facts == nil || ev.Facts.CPUs != 2 {
		t.Fatalf("first event %+v", ev)
	}
	live, _, _ := srv.Store.LiveNodes(ctx)
	if _, ok := live["n1"]; !ok {
		t.Fatal("n1 not live")
	}
	// Keepalives continue beyond the TTL.
	start := l.LastRenewed()
	waitFor(t, "renewals", 3*time.Second, func() bool { return l.LastRenewed().Sub(start) > 2*time.Second })
	if live, _, _ := srv.Store.LiveNodes(ctx); len(live) != 1 {
		t.Fatal("n1 expired although kept alive")
	}
	// The host "dies": its client goes away without revoking.
	other.Close()
	died := time.Now()
	select {
	case ev := <-events:
		if ev.Node != "n1" || ev.Facts != nil {
			t.Fatalf("event %+v, want n1 down", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("n1 not down")
	}
	if d := time.Since(died); d > 5*time.Second {
		t.Errorf("down after %v with a 2s TTL", d)
	}
}

func TestRecords(t *testing.T) {
	srv := storetest.Start(t)
	st, ctx := srv.Store, context.Background()
	cc := store.ClusterConfig{Name: "c", ID: "1", StoreMembers: 3}
	if err := st.InitCluster(ctx, cc, []byte("cert"), []byte("key"), store.TokenRecord{ID: "t1", Role: store.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	if err := st.InitCluster(ctx, cc, nil, nil); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second init: %v", err)
	}
	got, err := st.ClusterConfig(ctx)
	if err != nil || got.Name != "c" {
		t.Fatalf("config %+v %v", got, err)
	}
	if err := st.RegisterNode(ctx, store.NodeRecord{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	if err := st.RegisterNode(ctx, store.NodeRecord{Name: "n1"}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := st.Token(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Token(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown token: %v", err)
	}
	if err := st.DeleteNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Node(ctx, "n1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted node: %v", err)
	}
}

func TestRoles(t *testing.T) {
	for _, tt := range []struct {
		r     store.Role
		rank  int
		valid bool
	}{
		{store.RoleViewer, 1, true}, {store.RoleOperator, 2, true}, {store.RoleAdmin, 3, true},
		{store.RoleJoin, 0, true}, {"root", 0, false}, {"", 0, false},
	} {
		if tt.r.Rank() != tt.rank || tt.r.Valid() != tt.valid {
			t.Errorf("%q: rank %d valid %v", tt.r, tt.r.Rank(), tt.r.Valid())
		}
	}
}

// TestCampaignEndsWithItsContextWithoutQuorum: a candidate waiting for the
// office returns as soon as its context ends, even when the store no
// longer answers (etcd's own Campaign then resigns with the client's
// context and blocks until the client closes: an agent told to stop on a
// host cut off from the store's quorum hung in it).
func TestCampaignEndsWithItsContextWithoutQuorum(t *testing.T) {
	srv := storetest.Start(t)
	a, b := srv.Store, srv.Connect(t)
	if _, err := a.Campaign(context.Background(), "a", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := b.Campaign(ctx, "b", 2*time.Second)
		done <- err
	}()
	// b waits behind a; then the store goes away.
	waitFor(t, "b's candidacy in the store", 10*time.Second, func() bool {
		resp, err := a.Client().Get(context.Background(), store.KeyElection+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 2
	})
	a.StopMember()
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("campaign ended with %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the campaign did not return within 5 s of its context's end on a store that does not answer")
	}
	t.Logf("returned %v after its context ended", time.Since(start).Round(time.Millisecond))
}

// TestLivenessSince: a host's life in the cluster begins where its live
// key was created. An agent that resumes its lease (a restart within the
// TTL) keeps that start; a host whose lease ended starts a new life after
// everything written meanwhile.
func TestLivenessSince(t *testing.T) {
	srv := storetest.Start(t)
	ctx := t.Context()
	facts := model.NodeFacts{Name: "n1"}
	l1, err := srv.Store.StartLiveness(ctx, facts, 2*time.Second, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	since := l1.Since()
	put, err := srv.Store.Client().Put(ctx, "/test/written-during-life-1", "x")
	if err != nil {
		t.Fatal(err)
	}
	if since == 0 || since >= put.Header.Revision {
		t.Fatalf("Since = %d, a later write at %d", since, put.Header.Revision)
	}
	// A restart within the TTL: the same life.
	l1.Release()
	l2, err := srv.Store.ResumeLiveness(ctx, facts, 2*time.Second, 500*time.Millisecond, l1.Lease())
	if err != nil {
		t.Fatal(err)
	}
	if l2.Lease() != l1.Lease() || l2.Since() != since {
		t.Fatalf("resumed: lease %x since %d, want %x since %d", l2.Lease(), l2.Since(), l1.Lease(), since)
	}
	// The lease ends (the host went down): the next registration is a new
	// life, after the write of the earlier one.
	l2.Stop(ctx)
	l3, err := srv.Store.ResumeLiveness(ctx, facts, 2*time.Second, 500*time.Millisecond, l1.Lease())
	if err != nil {
		t.Fatal(err)
	}
	defer l3.Stop(ctx)
	if l3.Lease() == l1.Lease() || l3.Since() <= put.Header.Revision {
		t.Fatalf("after the lease ended: lease %x since %d, want a new lease and since > %d", l3.Lease(), l3.Since(), put.Header.Revision)
	}
}

// TestCampaignEndsOwnStaleKey: a key of the candidate's own node name from
// an earlier session (its previous process's, still within its lease)
// leads the election; the candidate ends it and takes office at its next
// read, instead of waiting out that lease (30 s here).
func TestCampaignEndsOwnStaleKey(t *testing.T) {
	srv := storetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := srv.Connect(t)
	s.SetCampaignPoll(50 * time.Millisecond)
	cli := s.Client()
	old := electionKey(ctx, t, cli, "b")
	l, err := s.Campaign(ctx, "b", 30*time.Second)
	if err != nil {
		t.Fatalf("campaign behind its own stale key: %v", err)
	}
	defer l.Close()
	if l.Lease() == old.ID {
		t.Fatal("took office with the stale key")
	}
	if ttl, err := cli.TimeToLive(ctx, old.ID); err != nil || ttl.TTL > 0 {
		t.Errorf("stale lease still alive: ttl %v, %v", ttl, err)
	}
}
