package hostagent

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// Guests' health checks never connect to a cluster host: the addresses
// they may not reach are this host's, every registered host's (API, peer
// and store client addresses; a host name resolved) and the store's
// endpoints, and a host registered later is among them within 30 s.
func TestHealthChecksKeepOffClusterHosts(t *testing.T) {
	srv := storetest.Start(t)
	st := srv.Connect(t)
	ctx := context.Background()
	if err := st.RegisterNode(ctx, store.NodeRecord{Name: "n1", APIAddr: "10.9.9.1:7400", PeerAddr: "https://10.9.9.1:2380", ClientAddr: "https://[2001:db8::1]:2379"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	h := &hostAddrs{st: st, now: func() time.Time { return now }}
	got := h.get(ctx)
	want := []netip.Addr{netip.MustParseAddr("10.9.9.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("127.0.0.1")}
	for _, ep := range st.Client().Endpoints() {
		if a := appendHost(ctx, nil, ep); len(a) > 0 {
			want = append(want, a...)
		}
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("addresses %v lack %s", got, w)
		}
	}
	n2 := netip.MustParseAddr("10.9.9.3")
	if err := st.RegisterNode(ctx, store.NodeRecord{Name: "n2", APIAddr: "10.9.9.3:7400"}); err != nil {
		t.Fatal(err)
	}
	if got := h.get(ctx); slices.Contains(got, n2) {
		t.Errorf("n2 counted before 30 s: %v", got)
	}
	now = now.Add(31 * time.Second)
	if got := h.get(ctx); !slices.Contains(got, n2) {
		t.Errorf("after 31 s: addresses %v, want n2's %s", got, n2)
	}
	if got := appendHost(ctx, nil, "localhost:7400"); !slices.Contains(got, netip.MustParseAddr("127.0.0.1")) {
		t.Errorf("localhost:7400 gives %v, want 127.0.0.1 among them", got)
	}
}
