package ha

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/heartbeat"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// fakeVerdicts is a heartbeat monitor whose hosts are Gone from a chosen
// moment: the start of their silence.
type fakeVerdicts struct {
	mu     sync.Mutex
	silent map[string]time.Time
}

func (f *fakeVerdicts) silentSince(name string, t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.silent == nil {
		f.silent = map[string]time.Time{}
	}
	f.silent[name] = t
}

func (f *fakeVerdicts) Verdict(name string) heartbeat.Verdict {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.silent[name]
	if !ok {
		return heartbeat.Verdict{State: heartbeat.Alive}
	}
	s := time.Since(t)
	return heartbeat.Verdict{State: heartbeat.Gone, Silence: s, Unanswered: s, Failed: heartbeat.MinFailedProbes}
}

// leaseRig is a test store, a host h1 that registers leases in it, and
// two other agents' fast detectors sharing one heartbeat view.
type leaseRig struct {
	t      *testing.T
	ctx    context.Context
	host   *clientv3.Client
	hb     *fakeVerdicts
	agents []*fastFail
}

func newLeaseRig(t *testing.T) *leaseRig {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv := storetest.Start(t)
	r := &leaseRig{t: t, ctx: ctx, host: srv.Connect(t).Client(), hb: &fakeVerdicts{}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for range 2 {
		f := newFastFail(srv.Connect(t), r.hb, log)
		f.leases.followAll(ctx, f.cli)
		r.agents = append(r.agents, f)
	}
	return r
}

// register puts key under a new lease of the host's, as its agent does
// when it starts.
func (r *leaseRig) register(key, val string) clientv3.LeaseID {
	r.t.Helper()
	g, err := r.host.Grant(r.ctx, 30)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.host.Put(r.ctx, key, val, clientv3.WithLease(g.ID)); err != nil {
		r.t.Fatal(err)
	}
	return g.ID
}

func (r *leaseRig) waitSeen(lease clientv3.LeaseID) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, f := range r.agents {
		for {
			if _, ok := f.leases.seen(lease); ok {
				break
			}
			if time.Now().After(deadline) {
				r.t.Fatalf("lease %x never seen by the watch", lease)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func (r *leaseRig) alive(lease clientv3.LeaseID) bool {
	r.t.Helper()
	ttl, err := r.host.TimeToLive(r.ctx, lease)
	if err != nil {
		r.t.Fatal(err)
	}
	return ttl.TTL > 0
}

// TestFastFailSparesLeaseNewerThanSilence: a host lost power (silent since
// then) and its liveness lease was ended; it booted again and registered a
// new lease before its heartbeats resumed. No agent ends that new lease,
// neither the one that ended the old lease nor another (a new manager's)
// that never acted on this silence, whether or not its watch already
// reported the lease. A later silence ends it as usual.
func TestFastFailSparesLeaseNewerThanSilence(t *testing.T) {
	r := newLeaseRig(t)
	key := store.KeyNodeLive("h1")
	old := r.register(key, "{}")
	r.waitSeen(old)
	r.hb.silentSince("h1", time.Now())
	first, other := r.agents[0], r.agents[1]
	first.endLiveness(r.ctx, "h1")
	if r.alive(old) {
		t.Fatal("the lease of a host gone since after it was granted was not ended")
	}
	// Booted again, registered before its heartbeats resumed: still Gone.
	renewed := r.register(key, "{}")
	other.endLiveness(r.ctx, "h1") // its watch may not have reported the lease yet
	if !r.alive(renewed) {
		t.Fatal("an agent that did not end the old lease ended the one the host took after its silence began: it would be fenced again")
	}
	r.waitSeen(renewed)
	for i, f := range r.agents {
		f.endLiveness(r.ctx, "h1")
		if !r.alive(renewed) {
			t.Fatalf("agent %d ended the lease the host took after its silence began: it would be fenced again", i)
		}
	}
	// Heard again, then silent again: that silence ends the lease.
	r.hb.silentSince("h1", time.Now())
	other.endLiveness(r.ctx, "h1")
	if r.alive(renewed) {
		t.Fatal("a new silence did not end the host's lease")
	}
}

// TestFastFailSparesTermNewerThanSilence: the same for a manager's
// election lease: a term won after the host's silence began is not ended.
func TestFastFailSparesTermNewerThanSilence(t *testing.T) {
	r := newLeaseRig(t)
	old := r.register(store.KeyElection+"/1", "h1")
	r.waitSeen(old)
	r.hb.silentSince("h1", time.Now())
	r.agents[0].endTerm(r.ctx, "h1", old)
	if r.alive(old) {
		t.Fatal("the term of a manager gone since after it began was not ended")
	}
	renewed := r.register(store.KeyElection+"/2", "h1")
	r.agents[1].endTerm(r.ctx, "h1", renewed)
	if !r.alive(renewed) {
		t.Fatal("an agent ended a term won after the manager's silence began")
	}
	r.waitSeen(renewed)
	for i, f := range r.agents {
		f.endTerm(r.ctx, "h1", renewed)
		if !r.alive(renewed) {
			t.Fatalf("agent %d ended a term won after the manager's silence began", i)
		}
	}
}

// TestFastFailWakesNextManager: an agent that ends a dead manager's term
// and finds its own election key leading then wakes its campaign, which
// would otherwise see its win only at its next poll of the election (or
// when etcd's watch, hanging on the dead host's store member, recovers).
func TestFastFailWakesNextManager(t *testing.T) {
	r := newLeaseRig(t)
	old := r.register(store.KeyElection+"/1", "h1")
	r.register(store.KeyElection+"/2", "h2")
	r.waitSeen(old)
	r.hb.silentSince("h1", time.Now())
	f := r.agents[0]
	f.self = "h2"
	woken := 0
	f.wake = func() { woken++ }
	f.replaceManager(r.ctx, []string{"h1"}, false)
	if r.alive(old) {
		t.Fatal("the dead manager's term was not ended")
	}
	if woken != 1 {
		t.Fatalf("the next candidate's campaign was woken %d times, want once", woken)
	}
	other := r.agents[1]
	other.self = "h3"
	other.wake = func() { t.Error("an agent whose key does not lead woke its campaign") }
	other.replaceManager(r.ctx, []string{"h1"}, false)
}
