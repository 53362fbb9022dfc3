package security

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/fence"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

// The fence passwords are in the clear exactly while a registered host may
// run a release that cannot open sealed secrets, and the agent says so:
// a host registered the way the previous release's join handler does it
// (no feature level) unseals the configuration, status warns and names it,
// the event log says it; a write meanwhile stays in the clear; removing
// the host seals the configuration again, which the event log says too.
func TestFencePasswordsInTheClearOnlyForAnOlderHost(t *testing.T) {
	ag := startAgent(t)
	ctx := ctxT(t)
	st, admin := ag.A.Store(), ag.Clients["admin"]
	set := func(device string) {
		t.Helper()
		c := fence.Config{Devices: []fence.Device{{Name: device, Agent: "fence_ipmilan", Params: map[string]string{"ip": "192.0.2.1", "password": "pdu-s3cret"}, Plugs: map[string]string{"n1": "1"}}},
			Levels: map[string][]fence.Level{"n1": {{Devices: []string{device}}}}}
		if _, err := admin.SetFenceConfig(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	stored := func() string {
		t.Helper()
		r, err := st.Client().Get(ctx, store.KeyFenceConfig)
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("read the fence configuration: %v", err)
		}
		return string(r.Kvs[0].Value)
	}
	poll := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !cond(); {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 20 s", what)
			}
			time.Sleep(50 * time.Millisecond) // polling a condition, with a deadline
		}
	}
	form := func() *store.FenceForm {
		s, err := admin.Status(ctx)
		if err != nil {
			return nil
		}
		return s.FenceForm
	}
	event := func(prefix string, since time.Time) bool {
		evs, err := admin.Events(ctx, client.EventFilter{N: 200})
		return err == nil && slices.ContainsFunc(evs, func(e cluster.Event) bool { return !e.At.Before(since) && strings.HasPrefix(e.Msg, prefix) })
	}

	set("pdu1")
	if v := stored(); !pki.IsSealed([]byte(v)) || strings.Contains(v, "pdu-s3cret") {
		t.Fatalf("every host current: fence configuration stored %.40q, want it sealed", v)
	}
	if f := form(); f == nil || f.Clear || len(f.OldHosts) != 0 {
		t.Fatalf("every host current: status fence form %+v", f)
	}

	t0 := time.Now()
	if err := st.RegisterNode(ctx, store.NodeRecord{Name: "old1", Registered: t0}); err != nil {
		t.Fatal(err)
	}
	poll("the fence configuration in the clear for old1", func() bool { return strings.Contains(stored(), "pdu-s3cret") })
	if f := form(); f == nil || !f.Clear || !slices.Equal(f.OldHosts, []string{"old1"}) {
		t.Fatalf("old1 registered: status fence form %+v, want clear for [old1]", f)
	}
	poll("the event of the unsealing", func() bool {
		return event("fence configuration stored unsealed, readable by whoever reads the store: old1 may run a release", t0)
	})
	set("pdu2")
	if v := stored(); pki.IsSealed([]byte(v)) || !strings.Contains(v, `"pdu2"`) {
		t.Fatalf("written while old1 is registered: stored %.60q, want pdu2 in the clear", v)
	}

	t1 := time.Now()
	if err := st.DeleteNode(ctx, "old1"); err != nil {
		t.Fatal(err)
	}
	poll("the fence configuration sealed again", func() bool { return pki.IsSealed([]byte(stored())) })
	if f := form(); f == nil || f.Clear || len(f.OldHosts) != 0 {
		t.Fatalf("old1 removed: status fence form %+v", f)
	}
	poll("the event of the sealing", func() bool { return event("fence configuration sealed again", t1) })
	c, err := admin.FenceConfig(ctx)
	if err != nil || len(c.Devices) != 1 || c.Devices[0].Name != "pdu2" {
		t.Fatalf("fence configuration after sealing: %+v %v", c, err)
	}
}
