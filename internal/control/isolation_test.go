package control

import (
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store"
)

// A host whose lease ends while the heartbeat monitor finds it cut off
// from the network but alive on the storage is reported isolated, not
// dead, whichever way the lease ended: here it simply expired (the fast
// detector never judged it Gone, so nothing else said so). A host with no
// guest (found offline, not failed) too; a host not isolated is not.
func TestLeaseEndOfIsolatedHostIsReportedIsolated(t *testing.T) {
	r := newTermRig(t, true)
	more := map[string]clientv3.LeaseID{}
	for _, n := range []string{"n3", "n4"} {
		l, err := r.other.Grant(r.ctx, 60)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.st.RegisterNode(r.ctx, store.NodeRecord{Name: n}); err != nil {
			t.Fatal(err)
		}
		put(t, r.other, store.KeyNodeLive(n), model.NodeFacts{Name: n, Memory: 8 * model.GiB, CPUs: 4}, clientv3.WithLease(l.ID))
		more[n] = l.ID
	}
	isolated := map[string]bool{"n1": true, "n3": true}
	done := r.run(r.elect(), Daemon{Isolation: func(node string) (string, bool) {
		return "isolated: test evidence", isolated[node]
	}})
	cs := cluster.New(r.st)
	events := func() []cluster.Event {
		evs, _, err := cs.Events(r.ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	count := func(prefix string) int {
		n := 0
		for _, e := range events() {
			if strings.HasPrefix(e.Msg, prefix) {
				n++
			}
		}
		return n
	}
	waitEvent := func(prefix string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for count(prefix) == 0 {
			select {
			case err := <-done:
				t.Fatalf("the term ended: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("no event %q in %+v", prefix, events())
			}
			time.Sleep(20 * time.Millisecond) // polling interval
		}
	}
	waitEvent("node n4 is online")
	for _, lease := range []clientv3.LeaseID{r.leases["n1"], more["n3"], more["n4"]} {
		if _, err := r.other.Revoke(r.ctx, lease); err != nil {
			t.Fatal(err)
		}
	}
	waitEvent("node n1 failed")
	waitEvent("node n3 is offline")
	waitEvent("node n4 is offline")
	if n := count("n1 is cut off from the cluster network but alive (isolated: test evidence)"); n != 1 {
		t.Errorf("%d isolation events for n1, want 1: %+v", n, events())
	}
	if n := count("n3 is cut off from the cluster network but alive"); n != 1 {
		t.Errorf("%d isolation events for n3, want 1: %+v", n, events())
	}
	if n := count("n4 is cut off"); n != 0 {
		t.Errorf("n4, not isolated, reported isolated: %+v", events())
	}
}
