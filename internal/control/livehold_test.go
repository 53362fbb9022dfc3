package control

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store"
)

// TestLiveKeyDeletionHeldWhileBeating: the deletion of a live key is a
// failure at once for a host that does not beat; for one that beats it is
// held: nothing if the host registers again with the same boot within the
// hold, a failure when the hold ends, a failure and a new host when it
// comes back with another boot.
func TestLiveKeyDeletionHeldWhileBeating(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	beats := map[string]bool{"h1": true}
	f := &feed{
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		reports: map[string]map[string]hostctl.Report{},
		live:    map[string]model.NodeFacts{"h1": {BootID: "b1"}, "h2": {BootID: "c1"}},
		beating: func(n string) bool { return beats[n] },
		grace:   time.Second,
		now:     func() time.Time { return now },
	}
	del := func(n string) *clientv3.Event {
		return &clientv3.Event{Type: clientv3.EventTypeDelete, Kv: &mvccpb.KeyValue{Key: []byte(store.KeyNodeLive(n))}}
	}
	put := func(n, boot string) *clientv3.Event {
		key := store.KeyNodeLive(n)
		return &clientv3.Event{Type: clientv3.EventTypePut, Kv: &mvccpb.KeyValue{Key: []byte(key), Value: []byte(store.MustEncode(key, model.NodeFacts{BootID: boot})), CreateRevision: 7, ModRevision: 7, Version: 1}}
	}
	kinds := func(ins []Input) (out []string) {
		for _, in := range ins {
			switch {
			case in.NodeGone != "":
				out = append(out, "gone "+in.NodeGone)
			case in.NodeUp != nil:
				out = append(out, "up "+in.NodeUp.Name)
			default:
				out = append(out, "other")
			}
		}
		return out
	}
	check := func(what string, ins []Input, want ...string) {
		t.Helper()
		got := kinds(ins)
		if len(got) != len(want) {
			t.Fatalf("%s: inputs %v, want %v", what, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: inputs %v, want %v", what, got, want)
			}
		}
	}

	check("h2, silent, deleted", f.translate(del("h2")), "gone h2")
	check("h1, beating, deleted", f.translate(del("h1")))
	if until, held := f.vanishedUntil(); !held || !until.Equal(now.Add(time.Second)) {
		t.Fatalf("hold of h1 until %v (%v); want %v", until, held, now.Add(time.Second))
	}
	if _, live := f.live["h1"]; !live {
		t.Fatal("h1 left the live hosts while held")
	}
	check("h1 registers again, same boot", f.translate(put("h1", "b1")))
	if _, held := f.vanishedUntil(); held {
		t.Fatal("h1 still held after it registered again")
	}

	check("h1 deleted again", f.translate(del("h1")))
	now = now.Add(999 * time.Millisecond)
	check("hold not over", f.expireVanished(now))
	now = now.Add(time.Millisecond)
	check("hold over", f.expireVanished(now), "gone h1")
	if _, live := f.live["h1"]; live {
		t.Fatal("h1 still live after its hold ended")
	}

	f.live["h1"] = model.NodeFacts{BootID: "b1"}
	check("h1 deleted, third time", f.translate(del("h1")))
	check("h1 back with another boot", f.translate(put("h1", "b2")), "gone h1", "up h1")

	beats["h1"] = false
	check("h1 deleted while silent", f.translate(del("h1")), "gone h1")
}
