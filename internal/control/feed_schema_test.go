package control

import (
	"context"
	"errors"
	"strings"
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

// Any record of a newer schema than this build reads, found in the
// snapshot at the start of the term or seen on the watch during it, ends
// the term with a SchemaError naming it (the manager resigns, so that a
// newer agent takes the office); the record stays as it was.
func TestManagerResignsOnNewerRecord(t *testing.T) {
	st := storetest.Start(t).Connect(t)
	cli := st.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := st.RegisterNode(ctx, store.NodeRecord{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	key := cluster.KeyGuest("web9")
	newer := `{"schema":99,"spec":{"name":"web9"}}`
	l, err := st.Campaign(ctx, "n1", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	run := func() error {
		return RunManager(ctx, Daemon{Cluster: cluster.New(st), Leader: l, Timings: manager.DefaultTimings()})
	}
	check := func(when string, err error) {
		t.Helper()
		var se *manager.SchemaError
		if !errors.As(err, &se) || se.Have != 99 || !strings.Contains(err.Error(), key) {
			t.Fatalf("%s: RunManager returned %v, want a SchemaError naming %s", when, err, key)
		}
		resp, err := cli.Get(ctx, key)
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != newer {
			t.Fatalf("%s: the newer record was changed: %v %v", when, resp.Kvs, err)
		}
	}
	if _, err := cli.Put(ctx, key, newer); err != nil {
		t.Fatal(err)
	}
	check("in the snapshot", run())

	if _, err := cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- run() }()
	// Whether the term has read its snapshot yet or not, it meets the
	// record: in the snapshot or on its watch.
	if _, err := cli.Put(ctx, key, newer); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		check("during the term", err)
	case <-ctx.Done():
		t.Fatal("the term went on with a record it cannot read")
	}
}
