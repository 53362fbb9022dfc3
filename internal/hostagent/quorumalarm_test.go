package hostagent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/notify"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// receiver is a webhook receiver on loopback that keeps what it got.
type receiver struct {
	mu  sync.Mutex
	got []notify.Notification
}

func (r *receiver) start(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		var n notify.Notification
		if err := json.Unmarshal(b, &n); err != nil {
			t.Errorf("receiver: %v in %q", err, b)
		}
		r.mu.Lock()
		r.got = append(r.got, n)
		r.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return srv
}

func (r *receiver) notes() []notify.Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]notify.Notification(nil), r.got...)
}

// TestQuorumAlarmOncePerIncident: one notification per incident, none
// again after a restart during the incident (the cache on disk says it
// was sent), and one again for the next incident; it needs only the cache.
func TestQuorumAlarmOncePerIncident(t *testing.T) {
	var rc receiver
	srv := rc.start(t)
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	a := newQuorumAlarm("n1", dir, log)
	a.remember("prod", notify.Config{Webhooks: []notify.Webhook{{URL: srv.URL, Classes: []string{notify.ClassQuorum}}}})
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if a.observe(t0, t0, false) {
		t.Fatal("notified while the lease is confirmed")
	}
	if !a.observe(t0.Add(3*time.Second), t0, true) {
		t.Fatal("no notification at the start of the incident")
	}
	for i := range 20 {
		if a.observe(t0.Add(time.Duration(4+i)*time.Second), t0, true) {
			t.Fatalf("notified again %d s into the same incident", 4+i)
		}
	}
	a.sender.Wait()
	// The agent restarts during the incident: the cache alone (no store)
	// says it was notified.
	b := newQuorumAlarm("n1", dir, log)
	if b.observe(t0.Add(30*time.Second), t0, true) {
		t.Fatal("a restarted agent notified the same incident again")
	}
	// Quorum is back, then lost again: a new incident, a new notification.
	b.observe(t0.Add(40*time.Second), t0.Add(40*time.Second), false)
	if !b.observe(t0.Add(50*time.Second), t0.Add(45*time.Second), true) {
		t.Fatal("the second incident was not notified")
	}
	b.sender.Wait()
	got := rc.notes()
	if len(got) != 2 {
		t.Fatalf("receiver got %d notifications, want 2: %+v", len(got), got)
	}
	for _, n := range got {
		if n.Class != notify.ClassQuorum || n.Cluster != "prod" || n.Event.Node != "n1" || n.Event.Kind != "quorum" {
			t.Fatalf("notification = %+v", n)
		}
	}
	if want := "[haven prod] host n1 lost the store's quorum: its lease is not confirmed since 2026-01-02T03:04:05Z"; got[0].Text[:len(want)] != want {
		t.Fatalf("text = %q", got[0].Text)
	}
}

// TestQuorumLossNotifiedByAgent: a running host side caches the
// notification configuration from the store and, once its lease goes
// unconfirmed, posts the quorum-loss notification to a loopback receiver.
func TestQuorumLossNotifiedByAgent(t *testing.T) {
	var rc receiver
	hook := rc.start(t)
	srv := storetest.Start(t)
	st := srv.Connect(t)
	cs := cluster.New(st)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := cs.SetNotifyConfig(ctx, notify.Config{Webhooks: []notify.Webhook{{URL: hook.URL}}}); err != nil {
		t.Fatal(err)
	}
	grant, err := st.Client().Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	lv := &lease{id: grant.ID, sent: time.Now()}
	drv := &memDriver{running: map[string]bool{}, events: make(chan hypervisor.Event, 8)}
	h := New(Config{Node: "n1", DataDir: t.TempDir(), Cluster: cs, Live: lv, Driver: drv, LeaseTTL: 30 * time.Second, PolicyEvery: 50 * time.Millisecond})
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	stopRenew := make(chan struct{})
	go func() {
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stopRenew:
				return
			case <-tk.C:
				lv.renew()
			}
		}
	}()
	poll(t, "the notification configuration cached", func() bool {
		h.alarm.mu.Lock()
		defer h.alarm.mu.Unlock()
		return len(h.alarm.cache.Config.Webhooks) == 1
	})
	if n := len(rc.notes()); n != 0 {
		t.Fatalf("%d notifications while the lease is confirmed", n)
	}
	close(stopRenew)
	poll(t, "the quorum-loss notification", func() bool { return len(rc.notes()) > 0 })
	if got := rc.notes(); len(got) != 1 || got[0].Class != notify.ClassQuorum || got[0].Event.Node != "n1" {
		t.Fatalf("receiver got %+v", got)
	}
}

// messages keeps every message logged.
type messages struct {
	mu  sync.Mutex
	got []string
}

func (m *messages) Enabled(context.Context, slog.Level) bool { return true }
func (m *messages) WithAttrs([]slog.Attr) slog.Handler       { return m }
func (m *messages) WithGroup(string) slog.Handler            { return m }
func (m *messages) Handle(_ context.Context, r slog.Record) error {
	m.mu.Lock()
	m.got = append(m.got, r.Message)
	m.mu.Unlock()
	return nil
}

func (m *messages) count(sub string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, s := range m.got {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

// TestQuorumAlarmWithLongKeepalive: a host renewing its lease every 4 s
// (--keepalive 4s, as large clusters run) is not cut off between two
// renewals, and rings the quorum alarm once they stop. With the overdue
// threshold at a flat 2 s, every host rang it every 4 s.
func TestQuorumAlarmWithLongKeepalive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		msgs := &messages{}
		log := slog.New(msgs)
		lv := &lease{id: 1, sent: time.Now()}
		h := &Host{cfg: Config{Node: "n1", Live: lv, LeaseTTL: 32 * time.Second, Keepalive: 4 * time.Second, SelfFenceMargin: time.Second, Now: time.Now},
			log: log, alarm: newQuorumAlarm("n1", "", log)}
		h.ctl = hostctl.New(hostctl.Config{Driver: &memDriver{running: map[string]bool{}, events: make(chan hypervisor.Event, 8)}, Logger: log, Now: time.Now})
		ctx, cancel := context.WithCancel(t.Context())
		go h.selfFenceLoop(ctx)
		for range 10 { // 40 s of renewals every 4 s
			time.Sleep(4 * time.Second)
			lv.renew()
		}
		if n := msgs.count("quorum lost"); n != 0 {
			t.Fatalf("the quorum alarm rang %d times while the lease was renewed every 4 s", n)
		}
		time.Sleep(6 * time.Second) // no renewal for 6 s: one was due 2 s ago
		synctest.Wait()
		if n := msgs.count("quorum lost"); n != 1 {
			t.Fatalf("the quorum alarm rang %d times after renewals stopped for 6 s, want 1", n)
		}
		cancel()
		synctest.Wait()
	})
}
