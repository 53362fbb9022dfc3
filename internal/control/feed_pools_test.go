package control

import (
	"encoding/json"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/storage"
)

// A shared pool declared after its guests exist frees them to fail over at
// once (and taking it away pins them again), without an edit of each guest.
func TestFeedRepinsGuestsWhenPoolsChange(t *testing.T) {
	st := manager.New(manager.Config{Timings: manager.DefaultTimings()})
	if err := st.AddNode("n1", 8*model.GiB, 4); err != nil {
		t.Fatal(err)
	}
	f := &feed{}
	apply := func(ins []Input) {
		t.Helper()
		for _, in := range ins {
			if in.Config == nil {
				t.Fatalf("input %+v: want a Config", in)
			}
			if err := in.Config.Apply(st); err != nil {
				t.Fatal(err)
			}
		}
	}
	put := func(key string, v any) *clientv3.Event {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return &clientv3.Event{Type: clientv3.EventTypePut, Kv: &mvccpb.KeyValue{Key: []byte(key), Value: b}}
	}
	g := cluster.Guest{
		Spec: model.GuestSpec{Name: "web1", Memory: model.GiB, State: model.DesiredStopped},
		Def:  guestdef.Definition{Name: "web1", Memory: model.GiB, Disks: []guestdef.Disk{{Path: "/srv/nfs/web1.img"}}},
	}
	apply(f.translate(put(cluster.PrefixGuests+"web1", g)))
	if !st.Guest("web1").Spec.Pinned {
		t.Fatal("a guest whose disk is on no pool is not pinned")
	}
	pool := storage.Pool{Name: "nfs", Kind: storage.KindDir, Path: "/srv/nfs", Shared: true}
	apply(f.translate(put(cluster.PrefixPools+"nfs", pool)))
	if st.Guest("web1").Spec.Pinned {
		t.Error("web1 still pinned after its disk's directory was declared a shared pool")
	}
	pool.Shared = false
	apply(f.translate(put(cluster.PrefixPools+"nfs", pool)))
	if !st.Guest("web1").Spec.Pinned {
		t.Error("web1 not pinned after its pool stopped being shared")
	}
	pool.Shared = true
	apply(f.translate(put(cluster.PrefixPools+"nfs", pool)))
	apply(f.translate(&clientv3.Event{Type: clientv3.EventTypeDelete, Kv: &mvccpb.KeyValue{Key: []byte(cluster.PrefixPools + "nfs")}}))
	if !st.Guest("web1").Spec.Pinned {
		t.Error("web1 not pinned after its pool was deleted")
	}
	// A deleted guest is forgotten: the next pool change does not touch it.
	apply(f.translate(&clientv3.Event{Type: clientv3.EventTypeDelete, Kv: &mvccpb.KeyValue{Key: []byte(cluster.PrefixGuests + "web1")}}))
	if _, ok := f.defs["web1"]; ok {
		t.Error("the feed still holds a deleted guest's definition")
	}
}
