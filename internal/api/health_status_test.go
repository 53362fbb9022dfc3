package api_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
)

// Issue 14: GET guest carries the live status of the guest's health checks
// from the report of the host that runs it, and none for a stopped guest.
func TestGuestRuntimeHealth(t *testing.T) {
	ctx := ctxT(t)
	op := ag.Clients["operator"]
	if _, err := op.CreateGuest(ctx, map[string]any{"boot": kboot, "name": "hl1", "state": "stopped"}); err != nil {
		t.Fatal(err)
	}
	withState(t, func(s *manager.State) {
		spec := model.DefaultGuestSpec("hl1")
		spec.Node = "n1"
		if err := s.AddGuest(spec, true); err != nil {
			t.Fatal(err)
		}
	})
	at := time.Now().UTC().Truncate(time.Second)
	rep := hostctl.Report{Guest: "hl1", State: hostctl.Running, At: at, Health: []health.Result{
		{Check: "web", Kind: "http", OK: false, Failures: 2, Output: "GET http://10.0.0.5/: status 503, want 200", At: at},
		{Check: "heartbeat", Kind: "agent", OK: true, At: at}}}
	b, _ := json.Marshal(rep)
	if _, err := ag.Cluster.Raw().Client().Put(ctx, cluster.KeyReport("n1", "hl1"), string(b)); err != nil {
		t.Fatal(err)
	}
	g, err := ag.Clients["viewer"].Guest(ctx, "hl1")
	if err != nil {
		t.Fatal(err)
	}
	if !g.Runtime.Running || g.Runtime.Node != "n1" {
		t.Fatalf("runtime = %+v, want running on n1", g.Runtime)
	}
	h := g.Runtime.Health
	if len(h) != 2 || h[0].Check != "web" || h[0].OK || h[0].Failures != 2 || h[0].Output != rep.Health[0].Output || !h[0].At.Equal(at) || !h[1].OK {
		t.Fatalf("runtime health = %+v, want the report's", h)
	}
	// Stopped: no health, even with a stale report left behind.
	withState(t, func(s *manager.State) { s.Guest("hl1").Running = false })
	g, err = op.Guest(ctx, "hl1")
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Runtime.Health) != 0 {
		t.Fatalf("stopped guest has health %+v", g.Runtime.Health)
	}
}
