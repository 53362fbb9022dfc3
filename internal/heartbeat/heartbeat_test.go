package heartbeat

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// pair starts monitors a and b on loopback, each the other's peer; b's host
// answers probes while answer holds.
func pair(t *testing.T, answer *atomic.Bool) (a, b *Monitor, stopB context.CancelFunc) {
	t.Helper()
	key := Key([]byte("secret"))
	mk := func(node string, probe func(context.Context, string) error) *Monitor {
		m, err := New(Config{Node: node, Listen: "127.0.0.1:0", Key: key, Interval: 20 * time.Millisecond,
			DeadAfter: 300 * time.Millisecond, ProbeInterval: 30 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond, ProbeFunc: probe})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	a = mk("a", func(ctx context.Context, addr string) error {
		if addr != "b-host:1" {
			return errors.New("wrong address " + addr)
		}
		if answer.Load() {
			return nil
		}
		<-ctx.Done()
		return ctx.Err()
	})
	b = mk("b", func(context.Context, string) error { return nil })
	a.SetPeers([]Peer{{Name: "a", Heartbeat: a.Addr()}, {Name: "b", Heartbeat: b.Addr(), Probe: "b-host:1"}})
	b.SetPeers([]Peer{{Name: "a", Heartbeat: a.Addr(), Probe: "a-host:1"}})
	ctx, cancel := context.WithCancel(context.Background())
	bctx, cancelB := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	go func() { a.Run(ctx); done <- struct{}{} }()
	go func() { b.Run(bctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return a, b, cancelB
}

func waitState(t *testing.T, m *Monitor, peer string, want State, within time.Duration) Verdict {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		v := m.Verdict(peer)
		if v.State == want {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: state %s (%v), want %s within %v", peer, v.State, v, want, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDeadHostIsGoneAfterBothSignals(t *testing.T) {
	var answer atomic.Bool
	a, _, stopB := pair(t, &answer)
	if v := a.Verdict("nobody"); v.State != Unknown {
		t.Fatalf("unknown peer: %v", v.State)
	}
	waitState(t, a, "b", Alive, 2*time.Second)
	start := time.Now()
	stopB()
	v := waitState(t, a, "b", Gone, 3*time.Second)
	// Its last heartbeat came at most one interval (20 ms) before it stopped.
	if took := time.Since(start); took < 280*time.Millisecond {
		t.Fatalf("gone after %v, before DeadAfter", took)
	}
	if v.Failed < MinFailedProbes || v.Silence < 300*time.Millisecond || v.Unanswered < 300*time.Millisecond {
		t.Fatalf("gone on too little evidence: %+v", v)
	}
}

func TestSilentAgentOnLiveHostIsNotGone(t *testing.T) {
	var answer atomic.Bool
	answer.Store(true)
	a, _, stopB := pair(t, &answer)
	waitState(t, a, "b", Alive, 2*time.Second)
	stopB()
	waitState(t, a, "b", Silent, time.Second)
	// Well past DeadAfter, the host still answers: never Gone.
	deadline := time.Now().Add(700 * time.Millisecond)
	for time.Now().Before(deadline) {
		if v := a.Verdict("b"); v.State != Silent {
			t.Fatalf("silent agent on a live host judged %v", v)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The host stops answering: now it is gone.
	answer.Store(false)
	waitState(t, a, "b", Gone, 2*time.Second)
}

func TestAnnouncedStopIsLeaving(t *testing.T) {
	var answer atomic.Bool
	a, b, stopB := pair(t, &answer)
	waitState(t, a, "b", Alive, 2*time.Second)
	if b.Stopping() {
		t.Fatal("Stopping before Announce")
	}
	b.Announce()
	if !b.Stopping() {
		t.Fatal("not Stopping after Announce")
	}
	waitState(t, a, "b", Leaving, time.Second)
	stopB()
	deadline := time.Now().Add(600 * time.Millisecond)
	for time.Now().Before(deadline) {
		if v := a.Verdict("b"); v.State != Leaving {
			t.Fatalf("announced stop judged %v", v)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestForgedHeartbeatsAreDropped(t *testing.T) {
	good := Key([]byte("secret"))
	m := &Monitor{cfg: Config{Node: "x", Key: good}}
	msg := m.encode(7, true)
	got, err := decode(good, msg)
	if err != nil || got.node != "x" || got.seq != 7 || !got.stop {
		t.Fatalf("decode: %+v %v", got, err)
	}
	if _, err := decode(Key([]byte("other")), msg); err == nil {
		t.Fatal("a heartbeat with another cluster's key was accepted")
	}
	msg[len(magic)+3] ^= 1
	if _, err := decode(good, msg); err == nil {
		t.Fatal("a tampered heartbeat was accepted")
	}
	if _, err := decode(good, []byte("short")); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestProbeTCP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// A closed port on a live host is refused: the host answered.
	if err := ProbeTCP(ctx, "127.0.0.1:1"); err != nil {
		t.Fatalf("refused connection counted as no answer: %v", err)
	}
}

func TestIsolatedHostStillWritesItsStorageHeartbeat(t *testing.T) {
	a, b, stopB := storagePair(t, 20*time.Millisecond, unanswered)
	waitState(t, a, "b", Alive, 2*time.Second)
	// b is cut off from the network (its heartbeats no longer reach a, its
	// address does not answer) but alive: it still writes the storage.
	b.SetPeers(nil)
	v := waitState(t, a, "b", Gone, 3*time.Second)
	if !v.Isolated() {
		t.Fatalf("cut-off host writing its storage heartbeat judged %v, want isolated", v)
	}
	// b dies: its storage heartbeat stops too.
	stopB()
	deadline := time.Now().Add(2 * time.Second)
	for a.Verdict("b").Isolated() {
		if time.Now().After(deadline) {
			t.Fatal("a dead host still reported isolated")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if v := a.Verdict("b"); v.State != Gone {
		t.Fatalf("dead host judged %v", v)
	}
}

// storagePair starts monitors a and b on loopback sharing a storage
// heartbeat directory, each the other's peer; probes of b's host go
// through probe.
func storagePair(t *testing.T, storageInterval time.Duration, probe func(context.Context, string) error) (a, b *Monitor, stopB context.CancelFunc) {
	t.Helper()
	key := Key([]byte("secret"))
	dir := t.TempDir()
	mk := func(node string) *Monitor {
		m, err := New(Config{Node: node, Listen: "127.0.0.1:0", Key: key, Interval: 20 * time.Millisecond,
			DeadAfter: 300 * time.Millisecond, ProbeInterval: 30 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond,
			ProbeFunc: probe, StorageDir: dir, StorageInterval: storageInterval})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	a, b = mk("a"), mk("b")
	a.SetPeers([]Peer{{Name: "b", Heartbeat: b.Addr(), Probe: "b-host:1"}})
	b.SetPeers([]Peer{{Name: "a", Heartbeat: a.Addr(), Probe: "a-host:1"}})
	ctx, cancel := context.WithCancel(context.Background())
	bctx, stopB := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	go func() { a.Run(ctx); done <- struct{}{} }()
	go func() { b.Run(bctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return a, b, stopB
}

func unanswered(ctx context.Context, _ string) error { <-ctx.Done(); return ctx.Err() }

// A host that loses its power stops its network and its storage heartbeats
// at once. Its storage counter moved a moment before: recently, but not
// after its network heartbeats stopped. It is dead, never isolated, even
// while its last storage write still looks fresh (here for 4 × 200 ms,
// longer than it takes to be Gone).
func TestPoweredOffHostIsNeverIsolated(t *testing.T) {
	a, _, stopB := storagePair(t, 200*time.Millisecond, unanswered)
	waitState(t, a, "b", Alive, 2*time.Second)
	// Let a see b's storage counter move a few times first.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		a.mu.Lock()
		moved := !a.peers["b"].storageAt.IsZero()
		a.mu.Unlock()
		if moved {
			break
		}
	}
	stopB()
	gone := time.Time{}
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		v := a.Verdict("b")
		if v.Isolated() {
			t.Fatalf("powered-off host judged %v, want dead", v)
		}
		if v.State == Gone && gone.IsZero() {
			gone = time.Now()
		}
		if !gone.IsZero() && time.Since(gone) > time.Second {
			return
		}
	}
	t.Fatalf("powered-off host never Gone: %v", a.Verdict("b"))
}

// A host cut off from the network that still writes its storage heartbeat
// is isolated even when this monitor cannot judge it Gone (its probes take
// too long to count: this process is starved of CPU), so that a host whose
// lease ends first is still reported isolated, not dead.
func TestIsolatedBeforeGone(t *testing.T) {
	starved := func(ctx context.Context, _ string) error {
		time.Sleep(150 * time.Millisecond) // 3 × the probe timeout: inconclusive
		return context.DeadlineExceeded
	}
	a, b, _ := storagePair(t, 20*time.Millisecond, starved)
	waitState(t, a, "b", Alive, 2*time.Second)
	b.SetPeers(nil) // cut off: its heartbeats no longer reach a
	deadline := time.Now().Add(3 * time.Second)
	for {
		v := a.Verdict("b")
		if v.State == Gone {
			t.Fatalf("judged Gone on inconclusive probes: %v", v)
		}
		if v.Isolated() {
			if v.State != Silent || v.Silence < 300*time.Millisecond || !strings.HasPrefix(v.String(), "isolated: ") {
				t.Fatalf("isolated verdict %+v (%v)", v, v)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cut-off host writing its storage heartbeat judged %+v, want isolated", v)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
