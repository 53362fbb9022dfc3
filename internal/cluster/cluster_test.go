package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

func TestRecords(t *testing.T) {
	st := storetest.Start(t).Connect(t)
	cs := New(st)
	ctx := context.Background()
	now := time.Unix(1700000000, 0).UTC()
	if err := st.RegisterNode(ctx, store.NodeRecord{Name: "n1"}); err != nil {
		t.Fatal(err)
	}

	spec := model.DefaultGuestSpec("web")
	spec.Domain = "nope"
	var fe *FieldError
	if err := cs.CreateGuest(ctx, Guest{Spec: spec}, now); !errors.As(err, &fe) || fe.Field != "domain" {
		t.Fatalf("create with an unknown domain = %v, want a field error on domain", err)
	}
	if err := cs.PutDomain(ctx, model.Domain{Name: "d", Members: []model.DomainMember{{Node: "ghost"}}}, true); !errors.As(err, &fe) || fe.Field != "members[0].node" {
		t.Fatalf("domain with an unknown member = %v", err)
	}
	if err := cs.PutDomain(ctx, model.Domain{Name: "d", Members: []model.DomainMember{{Node: "n1"}}}, true); err != nil {
		t.Fatal(err)
	}
	if err := cs.PutDomain(ctx, model.Domain{Name: "d", Members: []model.DomainMember{{Node: "n1"}}}, true); !errors.Is(err, ErrExists) {
		t.Fatalf("second create of a domain = %v, want ErrExists", err)
	}
	spec.Domain = "d"
	if err := cs.CreateGuest(ctx, Guest{Spec: spec}, now); err != nil {
		t.Fatal(err)
	}
	if err := cs.CreateGuest(ctx, Guest{Spec: spec}, now); !errors.Is(err, ErrExists) {
		t.Fatalf("second create of a guest = %v, want ErrExists", err)
	}
	g, err := cs.Guest(ctx, "web")
	if err != nil || g.Spec.Domain != "d" || g.Rev == 0 {
		t.Fatalf("read back: %+v, %v", g, err)
	}
	// Two edits from the same read: the second is a conflict.
	g.Spec.Memory = 2 * model.GiB
	if err := cs.UpdateGuest(ctx, g, now); err != nil {
		t.Fatal(err)
	}
	if err := cs.UpdateGuest(ctx, g, now); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale edit = %v, want ErrConflict", err)
	}
	if err := cs.DeleteDomain(ctx, "d"); !errors.Is(err, ErrInUse) {
		t.Fatalf("delete of a domain in use = %v, want ErrInUse", err)
	}
	bad := model.DefaultGuestSpec("x y")
	if err := cs.CreateGuest(ctx, Guest{Spec: bad}, now); !errors.As(err, &fe) || fe.Field != "name" {
		t.Fatalf("bad name = %v", err)
	}
	if err := cs.DeleteGuest(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := cs.DeleteDomain(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Guest(ctx, "web"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted guest read = %v", err)
	}
}

func TestCommandsAndEvents(t *testing.T) {
	st := storetest.Start(t).Connect(t)
	cs := New(st)
	ctx := context.Background()
	c, err := cs.QueueCommand(ctx, model.Command{Kind: model.CmdStart, Guest: "web"}, "alice", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pending, _, err := cs.PendingCommands(ctx)
	if err != nil || len(pending) != 1 || pending[0].ID != c.ID {
		t.Fatalf("pending = %v, %v", pending, err)
	}
	go func() {
		// The manager's side: mark it done (unguarded here: the guard is
		// the store package's and is tested there).
		rec := c
		rec.Done, rec.Error = true, "no such guest"
		_, _ = st.Client().Put(ctx, KeyCommand(c.ID), store.MustEncode(KeyCommand(c.ID), rec))
	}()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	done, err := cs.WaitCommand(wctx, c.ID)
	if err != nil || !done.Done || done.Error != "no such guest" {
		t.Fatalf("WaitCommand = %+v, %v", done, err)
	}

	for i := range 12 {
		if err := cs.AddEvent(ctx, Event{At: time.Unix(int64(1000+i), 0), Kind: "guest", Msg: fmt.Sprintf("e%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cs.TrimEvents(ctx, 5); err != nil {
		t.Fatal(err)
	}
	evs, _, err := cs.Events(ctx, 100)
	if err != nil || len(evs) != 5 || evs[0].Msg != "e7" || evs[4].Msg != "e11" {
		t.Fatalf("after trimming to 5: %v, %v", evs, err)
	}

	// Hosts' clocks disagree: a host whose clock is behind writes after
	// the others. The log lists events in the order the store recorded
	// them, the cluster's time, and the latest n are the latest recorded.
	for i, at := range []int64{5000, 4000, 4500} {
		if err := cs.AddEvent(ctx, Event{At: time.Unix(at, 0), Kind: "node", Msg: fmt.Sprintf("skew%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	evs, _, err = cs.Events(ctx, 3)
	if err != nil || len(evs) != 3 {
		t.Fatalf("events: %v, %v", evs, err)
	}
	for i, e := range evs {
		if e.Msg != fmt.Sprintf("skew%d", i) || (i > 0 && e.Rev <= evs[i-1].Rev) {
			t.Fatalf("events not in the store's order: %+v", evs)
		}
	}
	// One manager step's events share its time and one revision: they
	// keep the step's order.
	step := time.Unix(6000, 0)
	var batch []Event
	for i := range 8 {
		batch = append(batch, Event{At: step, Kind: "manager", Msg: fmt.Sprintf("step%d", i)})
	}
	if err := cs.AddEvents(ctx, batch); err != nil {
		t.Fatal(err)
	}
	evs, _, err = cs.Events(ctx, 8)
	if err != nil || len(evs) != 8 {
		t.Fatalf("events: %v, %v", evs, err)
	}
	for i, e := range evs {
		if e.Msg != fmt.Sprintf("step%d", i) {
			t.Fatalf("a step's events out of order: %+v", evs)
		}
	}
}

// GuestsNamed reads many guests in requests of ordersPerTxn, leaving out
// the ones not found.
func TestGuestsNamed(t *testing.T) {
	st := storetest.Start(t).Connect(t)
	cs := New(st)
	ctx := context.Background()
	var names []string
	for i := 0; i < 150; i++ {
		spec := model.DefaultGuestSpec(fmt.Sprintf("g%03d", i))
		if err := cs.CreateGuest(ctx, Guest{Spec: spec}, time.Now()); err != nil {
			t.Fatal(err)
		}
		names = append(names, spec.Name)
	}
	names = append(names, "missing")
	gs, err := cs.GuestsNamed(ctx, names)
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 150 {
		t.Fatalf("%d guests read, want 150", len(gs))
	}
	for _, n := range names[:150] {
		if g := gs[n]; g.Spec.Name != n || g.Def.Name != n || g.Rev == 0 {
			t.Errorf("%s read as %+v", n, g.Spec)
		}
	}
	if _, ok := gs["missing"]; ok {
		t.Error("a guest not in the store was read")
	}
}
