package store_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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
