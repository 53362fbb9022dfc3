package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/apitest"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/ha"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/savedstate"
)

// TestWithRealManager runs the command endpoints against an agent with
// the real manager (package ha, without a hypervisor driver): the manager
// takes the queued commands, applies them to its state and marks them
// done, and the API's synchronous checks then see that state.
func TestWithRealManager(t *testing.T) {
	a, err := apitest.Start("m1", "", ha.New(ha.Options{}))
	if err != nil {
		t.Fatalf("start agent: %v", err)
	}
	defer a.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := testPools(ctx, a); err != nil {
		t.Fatal(err)
	}
	op := a.Clients["operator"]
	if _, err := op.CreateGuest(ctx, map[string]any{"name": "rm1", "state": "stopped", "boot": kboot}); err != nil {
		t.Fatal(err)
	}
	// The manager takes the new guest in.
	poll(t, "the manager takes guest rm1 in", func() bool {
		g, err := op.Guest(ctx, "rm1")
		return err == nil && g.Runtime.State == "stopped"
	})
	res, err := op.GuestCommand(ctx, "rm1", "start", "")
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	follow(t, ctx, op, res)
	poll(t, "rm1 to be placed on m1", func() bool {
		g, err := op.Guest(ctx, "rm1")
		return err == nil && g.Runtime.Node == "m1" && g.Spec.State == model.DesiredStarted
	})
	_, err = op.GuestCommand(ctx, "rm1", "migrate", "ghost")
	wantErr(t, err, 400, "node")

	// What if: the one host fails, or goes into maintenance: rm1 (being
	// started: this agent has no hypervisor) has nowhere to go.
	w, err := op.WhatIf(ctx, []string{"m1"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if w.Waiting != 1 || len(w.Guests) != 1 || w.Guests[0].Guest != "rm1" || w.Guests[0].Wait == "" || w.Guests[0].To != "" {
		t.Fatalf("what if m1 fails: %+v", w)
	}
	w, err = op.WhatIf(ctx, []string{"m1"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if w.Evacuated || len(w.Guests) != 1 || w.Guests[0].To != "m1" {
		t.Fatalf("what if m1 goes into maintenance: %+v", w)
	}
	_, err = op.WhatIf(ctx, []string{"ghost"}, false)
	wantErr(t, err, 404, "down")
	_, err = op.WhatIf(ctx, nil, false)
	wantErr(t, err, 400, "down")

	res, err = op.Maintenance(ctx, "m1", true)
	if err != nil {
		t.Fatalf("maintenance on: %v", err)
	}
	follow(t, ctx, op, res)
	poll(t, "the manager to record m1 in maintenance", func() bool {
		st, err := savedstate.Load(ctx, a.Cluster.Raw().Client())
		return err == nil && st.Node("m1") != nil && st.Node("m1").Maintenance
	})
	_, err = op.Maintenance(ctx, "m1", true)
	wantErr(t, err, 409, "name")
	res, err = op.Maintenance(ctx, "m1", false)
	if err != nil {
		t.Fatalf("maintenance off: %v", err)
	}
	follow(t, ctx, op, res)
	evs, err := op.Events(ctx, client.EventFilter{N: 200})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, e := range evs {
		kinds[e.Kind] = true
	}
	if !kinds["operator"] || !kinds["manager"] {
		t.Fatalf("event kinds %v, want operator and manager entries", kinds)
	}
}

// follow waits for a command answered 202 to be done without error.
func follow(t *testing.T, ctx context.Context, c *client.Client, res *api.CommandResult) {
	t.Helper()
	poll(t, "command "+res.Command+" to be done", func() bool {
		if res.Done {
			return true
		}
		r, err := c.Command(ctx, res.ID)
		if err == nil {
			res = r
		}
		return res.Done
	})
	if res.Error != "" {
		t.Fatalf("%s: %s", res.Command, res.Error)
	}
}

// poll waits for cond with a deadline.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
	}
}
