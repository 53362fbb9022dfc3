package control

import (
	"encoding/json"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
)

// A policy written while a manager runs applies to it: the fencing mode
// set through the API must not wait for the next manager term.
func TestFeedAppliesPolicyChanges(t *testing.T) {
	watchdog, _ := json.Marshal(cluster.Policy{Fencing: model.FencingWatchdog, ShutdownPolicy: model.ShutdownStop})
	tests := []struct {
		name   string
		ev     *clientv3.Event
		fence  model.FencingMode
		shutdn model.ShutdownPolicy
	}{
		{"set watchdog", &clientv3.Event{Type: clientv3.EventTypePut, Kv: &mvccpb.KeyValue{Key: []byte(cluster.KeyPolicy), Value: watchdog}}, model.FencingWatchdog, model.ShutdownStop},
		{"deleted: default", &clientv3.Event{Type: clientv3.EventTypeDelete, Kv: &mvccpb.KeyValue{Key: []byte(cluster.KeyPolicy)}}, model.FencingAgent, model.ShutdownMigrate},
	}
	freeze, _ := json.Marshal(cluster.Policy{Fencing: model.FencingAgent, ShutdownPolicy: model.ShutdownMigrate, QuorumLoss: model.QuorumLossFreeze, Preemption: true})
	tests = append(tests, struct {
		name   string
		ev     *clientv3.Event
		fence  model.FencingMode
		shutdn model.ShutdownPolicy
	}{"set freeze and preemption", &clientv3.Event{Type: clientv3.EventTypePut, Kv: &mvccpb.KeyValue{Key: []byte(cluster.KeyPolicy), Value: freeze}}, model.FencingAgent, model.ShutdownMigrate})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := manager.New(manager.Config{Fencing: model.FencingAgent, ShutdownPolicy: model.ShutdownFreeze, Preemption: true, Timings: manager.DefaultTimings()})
			ins := (&feed{}).translate(tc.ev)
			if len(ins) != 1 || ins[0].Config == nil {
				t.Fatalf("translate(policy) = %+v, want one Config input", ins)
			}
			if err := ins[0].Config.Apply(st); err != nil {
				t.Fatal(err)
			}
			if st.Config.Fencing != tc.fence || st.Config.ShutdownPolicy != tc.shutdn {
				t.Errorf("after the policy change: fencing %q shutdown %q, want %q %q", st.Config.Fencing, st.Config.ShutdownPolicy, tc.fence, tc.shutdn)
			}
			// quorum_loss and preemption follow the record; an absent or
			// deleted one means stop and off.
			wantFreeze := tc.name == "set freeze and preemption"
			if (st.Config.QuorumLoss == model.QuorumLossFreeze) != wantFreeze || st.Config.Preemption != wantFreeze {
				t.Errorf("after the policy change: quorum_loss %q preemption %v, want freeze=%v", st.Config.QuorumLoss, st.Config.Preemption, wantFreeze)
			}
			if st.Config.QuorumLoss == "" {
				t.Errorf("quorum_loss left empty; want the default stop")
			}
			if st.Config.SelfFences() == wantFreeze {
				t.Errorf("SelfFences() = %v under quorum_loss %q", st.Config.SelfFences(), st.Config.QuorumLoss)
			}
		})
	}
}
