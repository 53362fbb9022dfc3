package ha

import (
	"context"
	"errors"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/heartbeat"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

func TestUnanswering(t *testing.T) {
	vs := map[string]heartbeat.Verdict{
		"alive":         {State: heartbeat.Alive},
		"unknown":       {State: heartbeat.Unknown},
		"leaving":       {State: heartbeat.Leaving, Silence: 5 * time.Second},
		"silent-short":  {State: heartbeat.Silent, Silence: avoidSilentAfter - time.Millisecond},
		"silent-frozen": {State: heartbeat.Silent, Silence: avoidSilentAfter},
		"gone":          {State: heartbeat.Gone, Silence: 2 * time.Second, Unanswered: 2 * time.Second, Failed: heartbeat.MinFailedProbes},
	}
	got := unanswering(vs)
	slices.Sort(got)
	if want := []string{"gone", "silent-frozen"}; !slices.Equal(got, want) {
		t.Fatalf("unanswering = %v, want %v", got, want)
	}
}

// freezer is a TCP proxy in front of a store member that can freeze: it
// then keeps its connections open and passes nothing, as a member whose
// process is stopped (SIGSTOP) does, the kernel still holding its sockets.
type freezer struct {
	l      net.Listener
	mu     sync.Mutex
	frozen bool
	thawed chan struct{} // closed when the proxy thaws
	passed atomic.Int64  // bytes passed towards the member
}

func newFreezer(t *testing.T, target string) *freezer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{l: l, thawed: make(chan struct{})}
	close(f.thawed)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			m, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); m.Close() })
			go f.pass(m, c, true)
			go f.pass(c, m, false)
		}
	}()
	return f
}

func (f *freezer) url() string { return "https://" + f.l.Addr().String() }

func (f *freezer) freeze(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on && !f.frozen {
		f.thawed = make(chan struct{})
	} else if !on && f.frozen {
		close(f.thawed)
	}
	f.frozen = on
}

func (f *freezer) pass(dst, src net.Conn, toMember bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.mu.Lock()
			thawed := f.thawed
			f.mu.Unlock()
			<-thawed
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if toMember {
				f.passed.Add(int64(n))
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// TestAvoidMembersOfFrozenHost: a store client with two endpoints, one of
// them a member that froze with its connection established (its agent
// process stopped: it beats no more, its host still answers). Requests
// sent to it hang until their deadline; once its host is Silent for
// avoidSilentAfter the client avoids that member and every request
// answers, and it uses both again once the host beats again. An
// endpoint change made meanwhile by someone else (the client's member
// sync) is undone.
func TestAvoidMembersOfFrozenHost(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, live, fz, st := frozenSetup(t, ctx, true)
	f := newFastFail(st, &fakeVerdicts{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	reads := 0
	f.members = func(context.Context) ([]store.Member, error) {
		reads++
		return []store.Member{{Name: "h1", ClientURLs: []string{live}}, {Name: "h2", ClientURLs: []string{fz.url()}}}, nil
	}
	get := func() error {
		rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err := f.cli.Get(rctx, "k")
		return err
	}
	// Both connections in use: requests went through the second member
	// (bytes through it during a request, three times: one alone could be
	// the connection's own traffic, with the requests all on the first).
	deadline := time.Now().Add(10 * time.Second)
	for went := 0; went < 3; {
		if time.Now().After(deadline) {
			t.Fatal("no request went through the second member")
		}
		before := fz.passed.Load()
		if err := get(); err != nil {
			t.Fatal(err)
		}
		if fz.passed.Load() > before {
			went++
		}
	}

	fz.freeze(true)
	hung := 0
	for range 10 {
		// A deadline as the context's error or as gRPC's status (which
		// one depends on where the deadline caught the request).
		if err := get(); errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded {
			hung++
		}
	}
	if hung == 0 {
		t.Fatal("no request hung on the frozen member: the test does not reproduce a frozen member")
	}

	verdict := func(silence time.Duration) map[string]heartbeat.Verdict {
		return map[string]heartbeat.Verdict{"h2": {State: heartbeat.Silent, Silence: silence}}
	}
	f.avoidMembers(ctx, unanswering(verdict(avoidSilentAfter/2)))
	if eps := sortedEndpoints(f.cli); len(eps) != 2 {
		t.Fatalf("endpoints %v after a short silence; want both kept", eps)
	}
	f.avoidMembers(ctx, unanswering(verdict(avoidSilentAfter)))
	if eps := f.cli.Endpoints(); !slices.Equal(eps, []string{live}) {
		t.Fatalf("endpoints %v with h2 frozen; want only %s", eps, live)
	}
	for i := range 10 {
		if err := get(); err != nil {
			t.Fatalf("request %d with the frozen member avoided: %v", i, err)
		}
	}

	// The member sync puts the frozen member back: undone at the next tick.
	f.cli.SetEndpoints(live, fz.url())
	f.avoidMembers(ctx, unanswering(verdict(2*avoidSilentAfter)))
	if eps := f.cli.Endpoints(); !slices.Equal(eps, []string{live}) {
		t.Fatalf("endpoints %v after the member sync; want only %s", eps, live)
	}

	// Every member avoided (this host is the one cut off): the endpoints
	// stay, and the member list is read once.
	both := map[string]heartbeat.Verdict{"h1": {State: heartbeat.Gone}, "h2": {State: heartbeat.Gone}}
	before := reads
	for range 3 {
		f.avoidMembers(ctx, unanswering(both))
	}
	if eps := f.cli.Endpoints(); !slices.Equal(eps, []string{live}) || reads != before+1 {
		t.Fatalf("every member avoided: endpoints %v, %d member reads; want %s kept, 1 read", eps, reads-before, live)
	}

	fz.freeze(false)
	f.avoidMembers(ctx, unanswering(map[string]heartbeat.Verdict{"h2": {State: heartbeat.Alive}}))
	if eps := sortedEndpoints(f.cli); !slices.Equal(eps, sortedStrings(live, fz.url())) {
		t.Fatalf("endpoints %v with h2 beating again; want both", eps)
	}
	for i := range 6 {
		if err := get(); err != nil {
			t.Fatalf("request %d with h2 back: %v", i, err)
		}
	}
}

// frozenSetup starts a store member, a freezer in front of it, and a
// client connected through the freezer (and to the member directly too,
// withLive).
func frozenSetup(t *testing.T, ctx context.Context, withLive bool) (*storetest.Server, string, *freezer, *store.Store) {
	srv := storetest.Start(t)
	live := srv.Endpoints[0]
	fz := newFreezer(t, mustHost(t, live))
	eps := []string{fz.url()}
	if withLive {
		eps = []string{live, fz.url()}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := store.Connect(cctx, store.ClientConfig{Endpoints: eps, TLS: srv.TLS}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return srv, live, fz, st
}

func mustHost(t *testing.T, endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		t.Fatalf("endpoint %q: %v", endpoint, err)
	}
	return u.Host
}

func sortedStrings(s ...string) []string {
	slices.Sort(s)
	return s
}

// TestAvoidedMemberStreamsMove: a watch opened on a member that then
// freezes sees nothing more over that connection (gRPC keeps a removed
// address's streams until they end). Once the client avoids that member,
// its connections are cut and the watch, opened again on the member kept,
// delivers what is written after the freeze.
func TestAvoidedMemberStreamsMove(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, live, fz, st := frozenSetup(t, ctx, false)
	f := newFastFail(st, &fakeVerdicts{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.members = func(context.Context) ([]store.Member, error) {
		return []store.Member{{Name: "h1", ClientURLs: []string{live}}, {Name: "h2", ClientURLs: []string{fz.url()}}}, nil
	}
	w := st.Client().Watch(ctx, "k")
	put := func(v string) {
		if _, err := srv.Store.Client().Put(ctx, "k", v); err != nil {
			t.Fatal(err)
		}
	}
	next := func(within time.Duration) (string, bool) {
		select {
		case wr := <-w:
			for _, ev := range wr.Events {
				return string(ev.Kv.Value), true
			}
			return "", false
		case <-time.After(within):
			return "", false
		}
	}
	// The watch runs through the member that will freeze.
	put("before")
	if v, ok := next(10 * time.Second); !ok || v != "before" {
		t.Fatalf("watch before the freeze: %q, %v", v, ok)
	}
	fz.freeze(true)
	put("frozen")
	f.avoidMembers(ctx, unanswering(map[string]heartbeat.Verdict{"h2": {State: heartbeat.Silent, Silence: avoidSilentAfter}}))
	if eps := f.cli.Endpoints(); !slices.Equal(eps, []string{live}) {
		t.Fatalf("endpoints %v with h2 frozen; want only %s", eps, live)
	}
	// gRPC's own keepalive would drop the frozen connection after 10 s at
	// the least; the watch must be back well before.
	if v, ok := next(5 * time.Second); !ok || v != "frozen" {
		t.Fatalf("watch after its member froze and was avoided: %q, %v; want the value written meanwhile", v, ok)
	}
}
