package store_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/fence"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// fenceBed is a store with a sealed cluster and helpers that play hosts
// registering, coming online with an agent of some feature level, and
// going offline.
type fenceBed struct {
	t   *testing.T
	st  *store.Store
	ctx context.Context
}

func newFenceBed(t *testing.T) *fenceBed {
	srv := storetest.Start(t)
	b := &fenceBed{t: t, st: srv.Store, ctx: context.Background()}
	if err := b.st.InitCluster(b.ctx, store.ClusterConfig{Name: "c", ID: "1"}, srv.CA.CertPEM, srv.CA.KeyPEM); err != nil {
		t.Fatal(err)
	}
	return b
}

// register registers node; level < 0: without a level record, as the
// previous release's join handler registers a host.
func (b *fenceBed) register(node string, level int) {
	b.t.Helper()
	var extra []clientv3.Op
	if level >= 0 {
		extra = append(extra, store.OpNodeLevel(node, level))
	}
	if err := b.st.RegisterNode(b.ctx, store.NodeRecord{Name: node}, extra...); err != nil {
		b.t.Fatal(err)
	}
}

// online writes node's live facts as an agent of level reports them; level
// 0 as the previous release writes them (no version, no level).
func (b *fenceBed) online(node string, level int) {
	b.t.Helper()
	v := `{"name":"` + node + `","agent_version":"235b719"}`
	if level > 0 {
		v = store.MustEncode(store.KeyNodeLive(node), model.NodeFacts{Name: node, FeatureLevel: level})
	}
	if _, err := b.st.Client().Put(b.ctx, store.KeyNodeLive(node), v); err != nil {
		b.t.Fatal(err)
	}
}

func (b *fenceBed) offline(node string) {
	b.t.Helper()
	if _, err := b.st.Client().Delete(b.ctx, store.KeyNodeLive(node)); err != nil {
		b.t.Fatal(err)
	}
}

// keep runs KeepFenceReadable and checks what it did.
func (b *fenceBed) keep(when string, wantClear, wantChanged bool, wantOld ...string) {
	b.t.Helper()
	form, changed, err := b.st.KeepFenceReadable(b.ctx)
	if err != nil {
		b.t.Fatalf("%s: %v", when, err)
	}
	if form.Clear != wantClear || changed != wantChanged || !slices.Equal(form.OldHosts, wantOld) {
		b.t.Fatalf("%s: form %+v changed %v, want clear %v changed %v old hosts %v", when, form, changed, wantClear, wantChanged, wantOld)
	}
	if got, err := b.st.FenceForm(b.ctx); err != nil || got.Clear != wantClear || !slices.Equal(got.OldHosts, wantOld) {
		b.t.Fatalf("%s: FenceForm %+v %v, want clear %v old hosts %v", when, got, err, wantClear, wantOld)
	}
}

// stored checks the fence configuration as stored: sealed or in the clear,
// and naming device when opened by a current host. In the clear, it must
// read as the previous release reads it (encoding/json into its type,
// which knows no "schema" member).
func (b *fenceBed) stored(when string, sealed bool, device string) {
	b.t.Helper()
	r, err := b.st.Client().Get(b.ctx, store.KeyFenceConfig)
	if err != nil || len(r.Kvs) != 1 {
		b.t.Fatalf("%s: read the fence configuration: %v", when, err)
	}
	raw := r.Kvs[0].Value
	if pki.IsSealed(raw) != sealed {
		b.t.Fatalf("%s: fence configuration sealed %v, want %v: %.60s", when, pki.IsSealed(raw), sealed, raw)
	}
	if !sealed {
		var old fence.Config
		if err := json.Unmarshal(raw, &old); err != nil || len(old.Devices) != 1 || old.Devices[0].Name != device {
			b.t.Fatalf("%s: the previous release reads %+v, %v; want device %s", when, old, err, device)
		}
	}
	plain, err := b.st.GetSealed(b.ctx, store.KeyFenceConfig)
	if err != nil {
		b.t.Fatalf("%s: a current host reads the fence configuration: %v", when, err)
	}
	var c fence.Config
	if err := store.Decode(store.KeyFenceConfig, plain, &c); err != nil || len(c.Devices) != 1 || c.Devices[0].Name != device {
		b.t.Fatalf("%s: a current host reads %+v, %v; want device %s", when, c, err, device)
	}
}

func (b *fenceBed) put(device string) {
	b.t.Helper()
	c := fence.Config{Devices: []fence.Device{{Name: device, Agent: "fence_ipmilan", Params: map[string]string{"password": "s3cret"}}}}
	if err := b.st.PutFenceConfig(b.ctx, []byte(store.MustEncode(store.KeyFenceConfig, c))); err != nil {
		b.t.Fatal(err)
	}
}

func (b *fenceBed) level(node string) (int, bool) {
	b.t.Helper()
	r, err := b.st.Client().Get(b.ctx, store.KeyNodeLevel(node))
	if err != nil {
		b.t.Fatal(err)
	}
	if len(r.Kvs) == 0 {
		return 0, false
	}
	var l store.NodeLevel
	if err := store.Decode(store.KeyNodeLevel(node), r.Kvs[0].Value, &l); err != nil {
		b.t.Fatal(err)
	}
	return l.Level, true
}

// A host downgraded to a release that cannot open sealed values gets the
// fence configuration in the clear while it is registered, online or not,
// writes in the meantime stay readable by both releases, a key rotation
// keeps the form, and the configuration is sealed again once the host is
// upgraded.
func TestFenceConfigFollowsDowngradeAndUpgrade(t *testing.T) {
	b := newFenceBed(t)
	for _, h := range []string{"h1", "h2", "h3"} {
		b.register(h, model.FeatureLevel)
		b.online(h, model.FeatureLevel)
	}
	b.put("ipmi1")
	b.stored("every host current", true, "ipmi1")
	b.keep("every host current", false, false)

	// h2 restarts on the previous release: its facts show level 0.
	b.offline("h2")
	b.keep("h2 stopped for its downgrade", false, false)
	b.online("h2", 0)
	b.keep("h2 back on the previous release", true, true, "h2")
	b.stored("h2 back on the previous release", false, "ipmi1")
	if l, ok := b.level("h2"); !ok || l != 0 {
		t.Fatalf("h2's recorded level %d (%v), want 0", l, ok)
	}
	b.keep("nothing changed", true, false, "h2")

	// A write meanwhile, by a current host, stays readable by h2.
	b.put("ipmi2")
	b.stored("written while h2 is old", false, "ipmi2")

	// Offline, h2 could come back and be elected before anyone saw it:
	// the configuration stays in the clear.
	b.offline("h2")
	b.keep("h2 offline", true, false, "h2")
	b.stored("h2 offline", false, "ipmi2")

	// Removing another host rotates the secret key: the form stays.
	if _, err := b.st.RotateSecretKey(b.ctx, "h3"); err != nil {
		t.Fatal(err)
	}
	b.stored("after a rotation", false, "ipmi2")

	// h2 upgraded again: sealed again, with the rotated key, on what the
	// mixed period wrote.
	b.online("h2", model.FeatureLevel)
	b.keep("h2 upgraded", false, true)
	b.stored("h2 upgraded", true, "ipmi2")
	if l, ok := b.level("h2"); !ok || l != model.FeatureLevel {
		t.Fatalf("h2's recorded level %d (%v), want %d", l, ok, model.FeatureLevel)
	}
	b.put("ipmi3")
	b.stored("written once every host is current", true, "ipmi3")
}

// A registered host no agent of this release has seen (registered by the
// previous release, and offline since) may run that release: the fence
// configuration stays in the clear until it shows a level or is removed.
// The previous release's own write (plain JSON without a schema member)
// is sealed as it is once no old host is left.
func TestFenceConfigForHostsNeverSeen(t *testing.T) {
	b := newFenceBed(t)
	b.register("h1", model.FeatureLevel)
	b.online("h1", model.FeatureLevel)
	b.register("h2", -1)
	b.put("ipmi1")
	b.stored("h2 never seen", false, "ipmi1")
	b.keep("h2 never seen", true, false, "h2")

	// The previous release on h2 writes the configuration its way.
	if _, err := b.st.Client().Put(b.ctx, store.KeyFenceConfig, `{"devices":[{"name":"ipmi9","agent":"fence_ipmilan"}],"levels":null}`); err != nil {
		t.Fatal(err)
	}
	b.keep("the previous release wrote", true, false, "h2")
	b.stored("the previous release wrote", false, "ipmi9")

	if err := b.st.DeleteNode(b.ctx, "h2"); err != nil {
		t.Fatal(err)
	}
	b.keep("h2 removed", false, true)
	b.stored("h2 removed", true, "ipmi9")

	// A level record left by a release that removed a host without it
	// goes; the registration of a host joining with its level does not
	// unseal anything.
	if _, err := b.st.Client().Put(b.ctx, store.KeyNodeLevel("gone"), store.MustEncode(store.KeyNodeLevel("gone"), store.NodeLevel{})); err != nil {
		t.Fatal(err)
	}
	b.register("h4", model.FeatureLevel)
	b.keep("h4 joined", false, false)
	if _, ok := b.level("gone"); ok {
		t.Error("the level record of a host not registered was kept")
	}
	b.stored("h4 joined", true, "ipmi9")
}

// FenceFormChanges signals a change of each input of the form, and closes
// when its context ends.
func TestFenceFormChanges(t *testing.T) {
	b := newFenceBed(t)
	ctx, cancel := context.WithCancel(b.ctx)
	ch := b.st.FenceFormChanges(ctx)
	// The watches start asynchronously: write until a signal comes.
	for i, change := range []func(){
		func() { b.register("h1", model.FeatureLevel) },
		func() { b.online("h1", model.FeatureLevel) },
		func() { b.put("ipmi1") },
	} {
		change()
		deadline := time.After(10 * time.Second)
	wait:
		for {
			select {
			case <-ch:
				break wait
			case <-time.After(100 * time.Millisecond):
				if i == 0 {
					// Before the watches run, touch the level record again.
					if _, err := b.st.Client().Put(b.ctx, store.KeyNodeLevel("h1"), store.MustEncode(store.KeyNodeLevel("h1"), store.NodeLevel{Level: model.FeatureLevel})); err != nil {
						t.Fatal(err)
					}
				}
			case <-deadline:
				t.Fatalf("change %d: no signal", i)
			}
		}
		// Drain a signal of the retouch, if any.
		select {
		case <-ch:
		default:
		}
	}
	cancel()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("not closed after its context ended")
		}
	}
}
