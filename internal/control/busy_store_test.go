package control

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/savedstate"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// busyKV is a real store's KV whose transactions that save the manager
// state go through hook first: it may fail them as a busy store does
// (before or after they commit), or do something meanwhile.
type busyKV struct {
	clientv3.KV
	mu    sync.Mutex
	saves int // save transactions committed or failed so far
	hook  func(n int) (commit bool, err error)
}

func (k *busyKV) Txn(ctx context.Context) clientv3.Txn {
	return &busyTxn{Txn: k.KV.Txn(ctx), kv: k}
}

func (k *busyKV) attempts() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.saves
}

type busyTxn struct {
	clientv3.Txn
	kv   *busyKV
	save bool
}

func (t *busyTxn) If(cs ...clientv3.Cmp) clientv3.Txn { t.Txn = t.Txn.If(cs...); return t }
func (t *busyTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Else(ops...)
	return t
}

func (t *busyTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	for _, op := range ops {
		k := string(op.KeyBytes())
		if op.IsPut() && (k == savedstate.KeyHead || strings.HasPrefix(k, savedstate.PrefixBase) || strings.HasPrefix(k, savedstate.PrefixLog)) {
			t.save = true
		}
	}
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *busyTxn) Commit() (*clientv3.TxnResponse, error) {
	if !t.save {
		return t.Txn.Commit()
	}
	t.kv.mu.Lock()
	t.kv.saves++
	n := t.kv.saves
	hook := t.kv.hook
	t.kv.mu.Unlock()
	commit, err := true, error(nil)
	if hook != nil {
		commit, err = hook(n)
	}
	var resp *clientv3.TxnResponse
	if commit {
		var cerr error
		if resp, cerr = t.Txn.Commit(); err == nil {
			return resp, cerr
		}
	}
	return nil, err
}

// termRig is a real store with hosts n1 and n2 online and a guest vm1
// (running on n1 when running is set), whose manager candidate n2's client
// goes through a busyKV.
type termRig struct {
	t      *testing.T
	ctx    context.Context
	cli    *clientv3.Client // the manager's
	other  *clientv3.Client // another agent's, unaffected
	kv     *busyKV
	leases map[string]clientv3.LeaseID
	st     *store.Store
}

func newTermRig(t *testing.T, running bool) *termRig {
	srv := storetest.Start(t)
	st := srv.Connect(t)
	other := srv.Connect(t).Client()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r := &termRig{t: t, ctx: ctx, cli: st.Client(), other: other, leases: map[string]clientv3.LeaseID{}, st: st}
	for _, n := range []string{"n1", "n2"} {
		if err := st.RegisterNode(ctx, store.NodeRecord{Name: n}); err != nil {
			t.Fatal(err)
		}
		l, err := other.Grant(ctx, 60)
		if err != nil {
			t.Fatal(err)
		}
		r.leases[n] = l.ID
		put(t, other, store.KeyNodeLive(n), model.NodeFacts{Name: n, Memory: 8 * model.GiB, CPUs: 4}, clientv3.WithLease(l.ID))
	}
	spec := model.DefaultGuestSpec("vm1")
	put(t, other, cluster.KeyGuest("vm1"), cluster.Guest{Spec: spec, Def: guestdef.Definition{Name: "vm1", VCPUs: 1, Memory: model.GiB}})
	if running {
		put(t, other, cluster.KeyReport("n1", "vm1"), hostctl.Report{Guest: "vm1", State: hostctl.Running}, clientv3.WithLease(r.leases["n1"]))
	}
	r.kv = &busyKV{KV: r.cli.KV}
	r.cli.KV = r.kv
	return r
}

// elect elects n2 manager.
func (r *termRig) elect() *store.Leadership {
	l, err := r.st.Campaign(r.ctx, "n2", 10*time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	return l
}

// run runs n2's manager term l with d (Cluster, Leader and Fencer filled
// in); the term's end comes on the channel.
func (r *termRig) run(l *store.Leadership, d Daemon) chan error {
	d.Cluster, d.Leader = cluster.New(r.st), l
	if d.Fencer == nil {
		d.Fencer = &recordingFencer{}
	}
	if d.Timings == (manager.Timings{}) {
		d.Timings = manager.DefaultTimings()
	}
	done := make(chan error, 1)
	go func() { done <- RunManager(r.ctx, d) }()
	return done
}

// orders counts the orders in the store.
func (r *termRig) orders() int64 {
	resp, err := r.other.Get(r.ctx, cluster.PrefixOrders, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		r.t.Fatal(err)
	}
	return resp.Count
}

// A new manager whose first saves time out (the store is electing its
// leader: the old manager's host, its leader too, just died) tries again
// and carries on with its term: it does not resign. One of the failed
// saves went through before its answer was lost, so the retry writes what
// is already there.
func TestNewManagerRetriesSavesWhileTheStoreIsBusy(t *testing.T) {
	r := newTermRig(t, false)
	r.kv.hook = func(n int) (bool, error) {
		switch n {
		case 1:
			return false, rpctypes.ErrTimeoutDueToLeaderFail
		case 2:
			return true, rpctypes.ErrTimeout // committed, answer lost
		case 3:
			return false, rpctypes.ErrLeaderChanged
		case 4:
			// raft's ErrProposalDropped as the client gets it.
			return false, status.Error(codes.Unknown, "raft proposal dropped")
		}
		return true, nil
	}
	l := r.elect()
	done := r.run(l, Daemon{})
	deadline := time.Now().Add(10 * time.Second)
	for r.orders() == 0 {
		select {
		case err := <-done:
			t.Fatalf("the manager's term ended on a busy store: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("vm1 never ordered to start; %d save attempts", r.kv.attempts())
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	if n := r.kv.attempts(); n < 5 {
		t.Errorf("%d save attempts, want at least 5 (4 failed, then one that went through)", n)
	}
	if l.Context().Err() != nil {
		t.Error("the term ended")
	}
	st, err := savedstate.Load(r.ctx, r.st.Client())
	if err != nil || st.Guest("vm1") == nil || st.Guest("vm1").Node == "" {
		t.Errorf("saved state after the retries: %v (vm1 %+v)", err, st.Guest("vm1"))
	}
}

// A save refused by the election guard (the office was lost while the
// store was busy) ends the term at once: no more retries.
func TestSaveEndsTheTermOnceTheOfficeIsLost(t *testing.T) {
	r := newTermRig(t, false)
	var lease clientv3.LeaseID
	var once sync.Once
	r.kv.hook = func(n int) (bool, error) {
		once.Do(func() {
			// The office is lost while the first save waits for the store.
			if _, err := r.other.Revoke(r.ctx, lease); err != nil {
				t.Error(err)
			}
		})
		return false, rpctypes.ErrTimeout
	}
	l := r.elect()
	lease = l.Lease()
	start := time.Now()
	done := r.run(l, Daemon{})
	select {
	case err := <-done:
		if !store.IsNotLeader(err) && !errors.Is(err, rpctypes.ErrTimeout) {
			t.Errorf("term ended with %v, want the lost office", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the term went on after its office was lost")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the term ended %v after its office was lost", took)
	}
	if n := r.kv.attempts(); n > 2 {
		t.Errorf("%d save attempts after the office was lost, want at most 2", n)
	}
	if l.Context().Err() == nil {
		t.Error("the leadership still holds")
	}
	if n := r.orders(); n != 0 {
		t.Errorf("%d orders written by a deposed manager", n)
	}
}

// A store that never answers ends the term after the bound (the lease
// TTL), with the store's error: the agent then resigns and campaigns
// again, as for any failed term.
func TestSaveRetriesAreBounded(t *testing.T) {
	r := newTermRig(t, false)
	r.kv.hook = func(int) (bool, error) { return false, rpctypes.ErrTimeout }
	tm := manager.DefaultTimings()
	tm.LeaseTTL = time.Second
	start := time.Now()
	done := r.run(r.elect(), Daemon{Timings: tm})
	select {
	case err := <-done:
		if !errors.Is(err, rpctypes.ErrTimeout) {
			t.Errorf("term ended with %v, want the store's timeout", err)
		}
		if took := time.Since(start); took < 900*time.Millisecond {
			t.Errorf("gave up after %v, before the bound (1s)", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the term never ended on a store that never answers")
	}
	if n := r.kv.attempts(); n < 3 {
		t.Errorf("%d save attempts, want several", n)
	}
}
