package control

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/savedstate"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// A manager that finds a saved state it cannot read (here: of a newer
// schema, as after a downgrade) resigns with the reason; it never starts
// afresh, which would forget fences in progress.
func TestManagerResignsOnUnreadableState(t *testing.T) {
	st := storetest.Start(t).Connect(t)
	cli := st.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.RegisterNode(ctx, store.NodeRecord{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	newer := []byte(`{"schema": 99, "config": {}, "nodes": [], "guests": [], "next_id": 7}`)
	if _, err := cli.Put(ctx, savedstate.KeyLegacy, string(newer)); err != nil {
		t.Fatal(err)
	}
	l, err := st.Campaign(ctx, "n1", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = RunManager(ctx, Daemon{Cluster: cluster.New(st), Leader: l, Timings: manager.DefaultTimings()})
	var se *manager.SchemaError
	if !errors.As(err, &se) || se.Have != 99 {
		t.Fatalf("RunManager over a newer state returned %v, want a SchemaError", err)
	}
	// The saved state is untouched.
	resp, err := cli.Get(ctx, savedstate.KeyLegacy)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatal(err)
	}
	if b := resp.Kvs[0].Value; string(b) != string(newer) {
		t.Fatalf("the unreadable state was overwritten: %s", b)
	}
}
