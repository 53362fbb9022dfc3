package control

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/savedstate"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

func js(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The snapshot is sorted whatever order the keys came in, commands by the
// order the store took them; broken records are skipped and named.
func TestDecodeSnapshotSortsAndSkips(t *testing.T) {
	g := func(name string) cluster.Guest { return cluster.Guest{Spec: model.DefaultGuestSpec(name)} }
	cmd := func(id string) cluster.Command {
		return cluster.Command{ID: id, Command: model.Command{Kind: model.CmdStart, Guest: "a"}}
	}
	ranges := map[string][]KV{
		"registered": {{Key: store.PrefixNodeReg + "n2"}, {Key: store.PrefixNodeReg + "n1"}},
		"live": {
			{Key: store.PrefixNodeLive + "n2", Value: js(t, model.NodeFacts{CPUs: 2})},
			{Key: store.PrefixNodeLive + "n1", Value: js(t, model.NodeFacts{CPUs: 1})},
			{Key: store.PrefixNodeLive + "n3", Value: []byte("{")},
		},
		"guests": {
			{Key: cluster.KeyGuest("b"), Value: js(t, g("b"))},
			{Key: cluster.KeyGuest("a"), Value: js(t, g("a"))},
			{Key: cluster.KeyGuest("c"), Value: js(t, g("not-c"))},
		},
		"reports": {
			{Key: cluster.KeyReport("n2", "a"), Value: js(t, hostctl.Report{Guest: "a", State: hostctl.Running})},
			{Key: cluster.KeyReport("n1", "b"), Value: js(t, hostctl.Report{Guest: "b", State: hostctl.Running})},
			{Key: cluster.KeyReport("n1", "a"), Value: js(t, hostctl.Report{Guest: "a", State: hostctl.Stopped})},
		},
		"commands": {
			{Key: cluster.KeyCommand("zz"), Value: js(t, cmd("zz")), CreateRev: 5},
			{Key: cluster.KeyCommand("aa"), Value: js(t, cmd("aa")), CreateRev: 9},
			{Key: cluster.KeyCommand("done"), Value: js(t, cluster.Command{ID: "done", Done: true}), CreateRev: 1},
		},
		"domains": {{Key: cluster.KeyDomain("d"), Value: []byte("[]")}},
	}
	s, err := DecodeSnapshot(42, ranges)
	if err != nil {
		t.Fatal(err)
	}
	if s.Rev != 42 || s.State != nil || !reflect.DeepEqual(s.Policy, cluster.DefaultPolicy()) {
		t.Fatalf("rev %d state %v policy %+v", s.Rev, s.State, s.Policy)
	}
	if got := strings.Join(s.Registered, ","); got != "n1,n2" {
		t.Errorf("registered %s", got)
	}
	if len(s.Live) != 2 || s.Live[0].Name != "n1" || s.Live[1].Facts.CPUs != 2 {
		t.Errorf("live %+v", s.Live)
	}
	if len(s.Guests) != 2 || s.Guests[0].Spec.Name != "a" || s.Guests[1].Spec.Name != "b" {
		t.Errorf("guests %+v", s.Guests)
	}
	var reps []string
	for _, r := range s.Reports {
		reps = append(reps, r.Node+"/"+r.Report.Guest)
	}
	if got := strings.Join(reps, ","); got != "n1/a,n1/b,n2/a" {
		t.Errorf("reports %s", got)
	}
	if len(s.Commands) != 2 || s.Commands[0].ID != "zz" || s.Commands[1].ID != "aa" {
		t.Errorf("commands %+v", s.Commands)
	}
	var skipped []string
	for _, e := range s.Skipped {
		skipped = append(skipped, e.Error())
	}
	all := strings.Join(skipped, "\n")
	for _, want := range []string{store.PrefixNodeLive + "n3", cluster.KeyGuest("c") + `: record names guest "not-c"`, cluster.KeyDomain("d")} {
		if !strings.Contains(all, want) {
			t.Errorf("skipped records do not name %s:\n%s", want, all)
		}
	}
	if len(s.Skipped) != 3 {
		t.Errorf("%d skipped, want 3:\n%s", len(s.Skipped), all)
	}
}

// A broken policy or saved state stops the term with an error that names
// it, rather than managing without them.
func TestDecodeSnapshotRefusesBrokenStateOrPolicy(t *testing.T) {
	if _, err := DecodeSnapshot(1, map[string][]KV{"policy": {{Key: cluster.KeyPolicy, Value: []byte("x")}}}); err == nil || !strings.Contains(err.Error(), "policy") {
		t.Errorf("broken policy: %v", err)
	}
	if _, err := DecodeSnapshot(1, map[string][]KV{"state": {{Key: savedstate.KeyLegacy, Value: []byte("{")}}}); err == nil || !strings.Contains(err.Error(), "unreadable") {
		t.Errorf("broken state: %v", err)
	}
}

// LoadSnapshot reads a real store, saved state included (of its two
// formats, the one written last).
func TestLoadSnapshot(t *testing.T) {
	srv := storetest.Start(t)
	st := srv.Connect(t)
	cli := st.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs := cluster.New(st)
	if err := cs.SetPolicy(ctx, cluster.Policy{Fencing: model.FencingWatchdog, ShutdownPolicy: model.ShutdownStop}); err != nil {
		t.Fatal(err)
	}
	// Format 2 saved first, then format 1 (a host of the previous release
	// managed after it): the state is the one written last.
	stale := manager.New(manager.Config{})
	if err := stale.AddNode("n0", model.GiB, 1); err != nil {
		t.Fatal(err)
	}
	write := func(ctx context.Context, ops ...clientv3.Op) error {
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		return err
	}
	noKeys := func(context.Context, string) ([]string, error) { return nil, nil }
	if err := savedstate.NewSaver(write, noKeys, 1).Save(ctx, stale); err != nil {
		t.Fatal(err)
	}
	ms := manager.New(manager.Config{})
	if err := ms.AddNode("n1", model.GiB, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, savedstate.KeyLegacy, string(js(t, ms))); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, cluster.KeyGuest("vm1"), string(js(t, cluster.Guest{Spec: model.DefaultGuestSpec("vm1")}))); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.QueueCommand(ctx, model.Command{Kind: model.CmdStop, Guest: "vm1"}, "t", time.Now()); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSnapshot(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	if s.Policy.Fencing != model.FencingWatchdog || s.State == nil || !s.State.HasNode("n1") || s.State.HasNode("n0") || len(s.Guests) != 1 || len(s.Commands) != 1 || s.Rev == 0 {
		t.Fatalf("snapshot %+v", s)
	}
}
