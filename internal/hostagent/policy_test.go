package hostagent

import (
	"context"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/notify"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// A host follows the policy and the notification settings as they change
// (a watch), not on a timer: with a timer of an hour it still sees each
// change at once, and costs the store no read while nothing changes.
func TestPolicyFollowedByWatch(t *testing.T) {
	srv := storetest.Start(t)
	st := srv.Connect(t)
	cs := cluster.New(st)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	grant, err := st.Client().Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	lv := &lease{id: grant.ID, sent: time.Now()}
	drv := &memDriver{running: map[string]bool{}, events: make(chan hypervisor.Event, 8)}
	h := New(Config{Node: "n1", DataDir: t.TempDir(), Cluster: cs, Live: lv, Driver: drv, LeaseTTL: 30 * time.Second, PolicyEvery: time.Hour})
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	freeze := func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.freeze
	}
	p := cluster.DefaultPolicy()
	for _, loss := range []model.QuorumLossPolicy{model.QuorumLossFreeze, model.QuorumLossStop, model.QuorumLossFreeze} {
		p.QuorumLoss = loss
		if err := cs.SetPolicy(ctx, p); err != nil {
			t.Fatal(err)
		}
		poll(t, "quorum loss policy "+string(loss)+" followed", func() bool { return freeze() == (loss == model.QuorumLossFreeze) })
	}
	if err := cs.SetNotifyConfig(ctx, notify.Config{Webhooks: []notify.Webhook{{URL: "http://127.0.0.1:9/hook"}}}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the notification configuration followed", func() bool {
		h.alarm.mu.Lock()
		defer h.alarm.mu.Unlock()
		return len(h.alarm.cache.Config.Webhooks) == 1
	})
}
