package control

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/savedstate"
	"github.com/haven-ha/haven/internal/store"
)

// takeoverRanges is what a new manager reads at hosts x guests: every
// record, every report, and the state its predecessor saved.
func takeoverRanges(b *testing.B, hosts, guests int) map[string][]KV {
	r := map[string][]KV{}
	st := manager.New(manager.Config{})
	var sync manager.Sync
	for i := 0; i < hosts; i++ {
		n := fmt.Sprintf("h%04d", i)
		r["registered"] = append(r["registered"], KV{Key: store.KeyNodeReg(n), Value: []byte(`{}`)})
		facts, _ := json.Marshal(model.NodeFacts{Name: n, Memory: 1 << 40, CPUs: 64, BootID: "b"})
		r["live"] = append(r["live"], KV{Key: store.KeyNodeLive(n), Value: facts})
		if err := st.AddNode(n, 1<<40, 64); err != nil {
			b.Fatal(err)
		}
		sync.Nodes = append(sync.Nodes, manager.NodeReport{Name: n, BootID: "b"})
	}
	for i := 0; i < guests; i++ {
		spec := model.DefaultGuestSpec(fmt.Sprintf("g%06d", i))
		spec.Node = fmt.Sprintf("h%04d", i%hosts)
		// Written as the daemon writes them (store.Encode: the schema
		// first, which Decode reads without parsing the record twice).
		g, _ := store.Encode(cluster.KeyGuest(spec.Name), cluster.Guest{Spec: spec, Def: guestdef.Definition{Name: spec.Name, VCPUs: 1, Memory: model.GiB}})
		r["guests"] = append(r["guests"], KV{Key: cluster.KeyGuest(spec.Name), Value: g})
		rep, _ := store.Encode(cluster.KeyReport(spec.Node, spec.Name), hostctl.Report{Guest: spec.Name, State: hostctl.Running, OrderID: "1", Op: hostctl.OpStart, Result: hostctl.ResultOK})
		r["reports"] = append(r["reports"], KV{Key: cluster.KeyReport(spec.Node, spec.Name), Value: rep})
		if err := st.AddGuest(spec, true); err != nil {
			b.Fatal(err)
		}
		sync.Nodes[i%hosts].Running = append(sync.Nodes[i%hosts].Running, spec.Name)
	}
	st.Step(time.Now(), sync)
	mem := map[string]string{}
	sv := savedstate.NewSaver(func(_ context.Context, ops ...clientv3.Op) error {
		for _, op := range ops {
			if op.IsPut() {
				mem[string(op.KeyBytes())] = string(op.ValueBytes())
			}
		}
		return nil
	}, func(context.Context, string) ([]string, error) { return nil, nil }, 1)
	if err := sv.Save(context.Background(), st); err != nil {
		b.Fatal(err)
	}
	for k, v := range mem {
		r["state"] = append(r["state"], KV{Key: k, Value: []byte(v)})
	}
	return r
}

// BenchmarkTakeover is a new manager's work from the store's answer to its
// first step saved: decode the snapshot, restore and update the state,
// step Sync, save the whole state as the term's base.
func BenchmarkTakeover(b *testing.B) {
	for _, size := range []struct{ hosts, guests int }{{64, 8000}, {1000, 50000}} {
		b.Run(fmt.Sprintf("%dx%d", size.hosts, size.guests), func(b *testing.B) {
			ranges := takeoverRanges(b, size.hosts, size.guests)
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				snap, err := DecodeSnapshot(1, ranges)
				if err != nil {
					b.Fatal(err)
				}
				st, _, sync, err := prepare(snap, manager.DefaultTimings(), log)
				if err != nil {
					b.Fatal(err)
				}
				st.Step(time.Now(), sync)
				sv := savedstate.NewSaver(func(context.Context, ...clientv3.Op) error { return nil },
					func(context.Context, string) ([]string, error) { return nil, nil }, 2)
				if err := sv.Save(context.Background(), st); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
