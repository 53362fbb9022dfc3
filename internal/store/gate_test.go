package store_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// TestStopMemberUnderRequestsWithRoles: a member that enforces the store
// roles stops while another host's client keeps sending it reads and
// watches. etcd checks each against the user it reads from the backend;
// one that came after the backend closed crashed the process (a nil bbolt
// transaction), so the member refuses client requests before it stops.
func TestStopMemberUnderRequestsWithRoles(t *testing.T) {
	for i := range 5 {
		srv := storetest.Start(t)
		ctx, cancel := context.WithCancel(context.Background())
		if err := store.EnforceRoles(ctx, srv.Store.Client(), []string{"test", "a"}); err != nil {
			t.Fatal(err)
		}
		a := connectAs(t, srv, "a").Client()
		var wg sync.WaitGroup
		var done atomic.Int64
		running := make(chan struct{})
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					wctx, wcancel := context.WithTimeout(ctx, 50*time.Millisecond)
					a.Watch(wctx, store.PrefixGuests, clientv3.WithPrefix())
					if _, err := a.Get(wctx, store.KeyClusterConfig); err == nil && done.Add(1) == 40 {
						close(running)
					}
					wcancel()
				}
			}()
		}
		select { // the requests run, then the member stops
		case <-running:
		case <-time.After(20 * time.Second):
			t.Fatal("no requests answered")
		}
		srv.Store.StopMember()
		cancel()
		wg.Wait()
		t.Logf("round %d: member stopped", i)
	}
}

// TestClosedGateEndsStreams: once a member's gate closes, another host's
// watch and lease keepalive streams on it end at once, as unavailable
// (their clients open them again on another member). Left open, they held
// the member's stop for etcd's request timeout (7 s): every agent stop
// and every CA rotation restart took that long.
func TestClosedGateEndsStreams(t *testing.T) {
	srv := storetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := connectAs(t, srv, "test").Client()
	conn := a.ActiveConnection()
	watch, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte(store.KeyClusterConfig)}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || !r.Created {
		t.Fatalf("watch not created: %v %v", r, err)
	}
	keepalive, err := pb.NewLeaseClient(conn).LeaseKeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lease, err := a.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if err := keepalive.Send(&pb.LeaseKeepAliveRequest{ID: int64(lease.ID)}); err != nil {
		t.Fatal(err)
	}
	if _, err := keepalive.Recv(); err != nil {
		t.Fatal(err)
	}

	srv.Store.CloseGate()
	for name, recv := range map[string]func() error{
		"watch":           func() error { _, err := watch.Recv(); return err },
		"lease keepalive": func() error { _, err := keepalive.Recv(); return err },
	} {
		err := recv() // the test's deadline bounds it
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s stream after the gate closed: %v, want it ended as unavailable", name, err)
		}
	}
}
