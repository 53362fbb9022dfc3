package hostagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// hookKV counts the transactions committed through it and runs hook
// before each; an error from hook fails the commit.
type hookKV struct {
	clientv3.KV
	mu   sync.Mutex
	txns int
	ops  []int
	hook func(txn int) error
}

func (k *hookKV) Txn(ctx context.Context) clientv3.Txn {
	return &hookTxn{Txn: k.KV.Txn(ctx), kv: k}
}

func (k *hookKV) stats() (int, []int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.txns, append([]int(nil), k.ops...)
}

type hookTxn struct {
	clientv3.Txn
	kv  *hookKV
	ops int
}

func (t *hookTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.ops += len(ops)
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *hookTxn) Commit() (*clientv3.TxnResponse, error) {
	t.kv.mu.Lock()
	t.kv.txns++
	n, hook := t.kv.txns, t.kv.hook
	t.kv.mu.Unlock()
	if hook != nil {
		if err := hook(n); err != nil {
			return nil, err
		}
	}
	t.kv.mu.Lock()
	t.kv.ops = append(t.kv.ops, t.ops)
	t.kv.mu.Unlock()
	return t.Txn.Commit()
}

// storedReports reads node n1's reports: guest -> report, and the lease
// each is stored under.
func storedReports(t *testing.T, cli *clientv3.Client) (map[string]hostctl.Report, map[string]clientv3.LeaseID) {
	t.Helper()
	resp, err := cli.Get(context.Background(), cluster.KeyReport("n1", ""), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	reps, leases := map[string]hostctl.Report{}, map[string]clientv3.LeaseID{}
	for _, kv := range resp.Kvs {
		var r hostctl.Report
		if err := store.Decode(string(kv.Key), kv.Value, &r); err != nil {
			t.Fatal(err)
		}
		reps[r.Guest] = r
		leases[r.Guest] = clientv3.LeaseID(kv.Lease)
	}
	return reps, leases
}

func startPublisher(t *testing.T, kv clientv3.KV, lv *lease) (*publisher, func()) {
	p := newPublisher(kv, "n1", lv, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	return p, func() {
		go func() { p.run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
}

// A host adopting many guests publishes their reports in a few
// transactions, not one etcd request (and revision) per guest; the latest
// report per guest wins and removals go in the same transactions.
func TestPublisherBatchesReports(t *testing.T) {
	srv := storetest.Start(t)
	cli := srv.Connect(t).Client()
	ctx := context.Background()
	grant, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	// Reports to be removed, stored beforehand.
	for i := 0; i < 10; i++ {
		key := cluster.KeyReport("n1", fmt.Sprintf("old%d", i))
		if _, err := cli.Put(ctx, key, store.MustEncode(key, hostctl.Report{Guest: fmt.Sprintf("old%d", i)})); err != nil {
			t.Fatal(err)
		}
	}
	kv := &hookKV{KV: cli.KV}
	p, run := startPublisher(t, kv, &lease{id: grant.ID})
	for i := 0; i < 200; i++ {
		p.Publish(hostctl.Report{Guest: fmt.Sprintf("g%03d", i), State: hostctl.Stopped})
	}
	for i := 0; i < 200; i += 2 {
		p.Publish(hostctl.Report{Guest: fmt.Sprintf("g%03d", i), State: hostctl.Running})
	}
	for i := 0; i < 10; i++ {
		p.Remove(fmt.Sprintf("old%d", i))
	}
	before, err := cli.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	run()
	poll(t, "200 reports stored and 10 removed", func() bool {
		reps, _ := storedReports(t, cli)
		return len(reps) == 200 && reps["old0"].Guest == ""
	})
	reps, leases := storedReports(t, cli)
	for i := 0; i < 200; i++ {
		g := fmt.Sprintf("g%03d", i)
		want := hostctl.Stopped
		if i%2 == 0 {
			want = hostctl.Running
		}
		if reps[g].State != want || leases[g] != grant.ID {
			t.Errorf("%s: stored state %q under lease %x, want %q under %x", g, reps[g].State, leases[g], want, grant.ID)
		}
	}
	after, err := cli.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	txns, ops := kv.stats()
	// 210 operations: 4 transactions of at most 64.
	if revs := after.Header.Revision - before.Header.Revision; txns != 4 || revs != 4 {
		t.Errorf("210 reports and removals took %d transactions (%v operations) and %d revisions, want 4", txns, ops, revs)
	}
	for _, n := range ops {
		if n > reportsPerTxn {
			t.Errorf("a transaction of %d operations, more than %d", n, reportsPerTxn)
		}
	}
}

// A report that changes while its batch is written is written again, and
// a failed write is retried, in order per guest.
func TestPublisherRewritesChangedAndRetries(t *testing.T) {
	srv := storetest.Start(t)
	cli := srv.Connect(t).Client()
	grant, err := cli.Grant(context.Background(), 30)
	if err != nil {
		t.Fatal(err)
	}
	var p *publisher
	kv := &hookKV{KV: cli.KV}
	kv.hook = func(txn int) error {
		switch txn {
		case 1:
			return errors.New("store unavailable")
		case 2:
			// While the batch is on its way: vm1 runs now, vm2 goes.
			p.Publish(hostctl.Report{Guest: "vm1", State: hostctl.Running})
			p.Remove("vm2")
		}
		return nil
	}
	p, run := startPublisher(t, kv, &lease{id: grant.ID})
	p.Publish(hostctl.Report{Guest: "vm1", State: hostctl.Stopped})
	p.Publish(hostctl.Report{Guest: "vm2", State: hostctl.Stopped})
	p.Publish(hostctl.Report{Guest: "vm3", State: hostctl.Stopped})
	run()
	poll(t, "vm1 running, vm2 removed, vm3 stopped", func() bool {
		reps, _ := storedReports(t, cli)
		_, has2 := reps["vm2"]
		return reps["vm1"].State == hostctl.Running && !has2 && reps["vm3"].State == hostctl.Stopped
	})
	poll(t, "the publisher idle", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.order) == 0 && len(p.pending) == 0
	})
	// The failed batch, the batch of three, the two that changed.
	if txns, ops := kv.stats(); txns != 3 || len(ops) != 2 || ops[0] != 3 || ops[1] != 2 {
		t.Errorf("%d transactions committed (%v operations), want 3: a failed one, then 3 operations, then 2", txns, ops)
	}
}
