package savedstate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store/storetest"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// memKV applies the Saver's transactions to a map, as etcd would.
type memKV struct {
	kv     map[string]string
	writes int
	bytes  int
}

func (m *memKV) write(_ context.Context, ops ...clientv3.Op) error {
	m.writes++
	for _, op := range ops {
		k := string(op.KeyBytes())
		switch {
		case op.IsPut():
			m.kv[k] = string(op.ValueBytes())
			m.bytes += len(op.ValueBytes())
		case op.IsDelete():
			end := string(op.RangeBytes())
			for x := range m.kv {
				if x == k || (end != "" && x >= k && x < end) {
					delete(m.kv, x)
				}
			}
		}
	}
	return nil
}

func (m *memKV) keys(_ context.Context, prefix string) ([]string, error) {
	var out []string
	for k := range m.kv {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out, nil
}

func (m *memKV) decode(t *testing.T) *manager.State {
	t.Helper()
	var kvs []KV
	for k, v := range m.kv {
		kvs = append(kvs, KV{Key: k, Value: []byte(v)})
	}
	st, err := Decode(kvs)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func bigState(t testing.TB, hosts, perHost int) *manager.State {
	s := manager.New(manager.Config{})
	var up []manager.NodeReport
	for i := 0; i < hosts; i++ {
		name := fmt.Sprintf("n%04d", i)
		if err := s.AddNode(name, int64(perHost*2)*model.GiB, 64); err != nil {
			t.Fatal(err)
		}
		up = append(up, manager.NodeReport{Name: name, BootID: "1"})
	}
	for i := 0; i < hosts*perHost; i++ {
		spec := model.DefaultGuestSpec(fmt.Sprintf("g%06d", i))
		spec.Node = fmt.Sprintf("n%04d", i%hosts)
		if err := s.AddGuest(spec, true); err != nil {
			t.Fatal(err)
		}
		up[i%hosts].Running = append(up[i%hosts].Running, spec.Name)
	}
	s.Step(t0, manager.Sync{Nodes: up})
	return s
}

func sameState(t *testing.T, want, got *manager.State) {
	t.Helper()
	a, _ := json.Marshal(want)
	b, _ := json.Marshal(got)
	if !bytes.Equal(a, b) {
		t.Fatalf("restored state differs:\nwant %s\n got %s", a, b)
	}
}

// A host failure (125 guests a host) saves only the lost host's guests,
// and every save restores to the state saved.
func TestSaveIncremental(t *testing.T) {
	s := bigState(t, 16, 125)
	m := &memKV{kv: map[string]string{}}
	sv := NewSaver(m.write, m.keys, 100)
	if err := sv.Save(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if !sv.Last.Compacted {
		t.Fatalf("first save of a term is not a base: %+v", sv.Last)
	}
	sameState(t, s, m.decode(t))

	now := t0.Add(time.Second)
	steps := []manager.Event{manager.NodeDown{Node: "n0003"}}
	for _, ev := range steps {
		s.Step(now, ev)
		if err := sv.Save(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		sameState(t, s, m.decode(t))
	}
	if sv.Last.Compacted || sv.Last.Guests != 125 || sv.Last.Nodes != 1 {
		t.Fatalf("node down saved %+v, want the 125 guests of n0003 and the node", sv.Last)
	}
	n := s.Node("n0003")
	s.Step(now.Add(time.Second), manager.FenceResult{Node: "n0003", Attempt: n.Fence.Attempt, OK: true})
	if err := sv.Save(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	sameState(t, s, m.decode(t))
	if sv.Last.Guests != 125 {
		t.Fatalf("fence result saved %d guests, want 125", sv.Last.Guests)
	}
	// Nothing changed: nothing written.
	w := m.writes
	if err := sv.Save(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if m.writes != w {
		t.Fatalf("a save with no change wrote")
	}
}

// Removals, configuration changes and compaction round-trip; a new term's
// saver replaces the old generation and the format-1 value.
func TestSaveRemoveCompactNewTerm(t *testing.T) {
	s := bigState(t, 4, 5)
	m := &memKV{kv: map[string]string{}}
	old, _ := json.Marshal(s)
	m.kv[KeyLegacy] = string(gzipBytes(old))
	sameState(t, s, m.decode(t))

	sv := NewSaver(m.write, m.keys, 10)
	ctx := context.Background()
	if err := sv.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.kv[KeyLegacy]; ok {
		t.Fatal("format-1 state left after the first base")
	}
	spec := s.Guest("g000001").Spec
	spec.State = model.DesiredStopped
	if err := s.UpdateGuestSpec(spec); err != nil {
		t.Fatal(err)
	}
	s.Step(t0.Add(time.Second), manager.Tick{})
	if err := s.AddNode("n9999", model.GiB, 1); err != nil {
		t.Fatal(err)
	}
	s.Config.Fencing = model.FencingWatchdog
	if err := sv.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	sameState(t, s, m.decode(t))
	// Force many log entries until a compaction happens.
	defer func(v int) { minLogBytes = v }(minLogBytes)
	minLogBytes = 4 << 10
	compacted := false
	for i := 0; i < 200 && !compacted; i++ {
		s.Step(t0.Add(time.Duration(i+2)*time.Second), manager.GuestCrashed{Guest: fmt.Sprintf("g%06d", 2+i%10), Node: s.Guest(fmt.Sprintf("g%06d", 2+i%10)).Node})
		if err := sv.Save(ctx, s); err != nil {
			t.Fatal(err)
		}
		compacted = sv.Last.Compacted
		sameState(t, s, m.decode(t))
	}
	if !compacted {
		t.Fatal("the log never compacted")
	}
	// A new term.
	sv2 := NewSaver(m.write, m.keys, 1000)
	if err := sv2.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	sameState(t, s, m.decode(t))
	for k := range m.kv {
		if strings.HasPrefix(k, PrefixBase) && !strings.HasPrefix(k, prefixBaseGen(1000)) || strings.HasPrefix(k, PrefixLog) {
			t.Fatalf("stale key %s left after the new term's base", k)
		}
	}
	extra := model.DefaultGuestSpec("zz-extra")
	extra.State = model.DesiredStopped
	if err := s.AddGuest(extra, false); err != nil {
		t.Fatal(err)
	}
	if err := sv2.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	sameState(t, s, m.decode(t))
	if err := s.RemoveGuest("zz-extra"); err != nil {
		t.Fatal(err)
	}
	if err := sv2.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	got := m.decode(t)
	sameState(t, s, got)
	if got.Guest("zz-extra") != nil {
		t.Fatal("removed guest restored")
	}
}

// A base bigger than one request is split in chunks, and a head that names
// a missing chunk is an error, not an empty state.
func TestChunkedBase(t *testing.T) {
	defer func(v int) { chunkBytes = v }(chunkBytes)
	chunkBytes = 1 << 10
	s := bigState(t, 8, 50)
	m := &memKV{kv: map[string]string{}}
	sv := NewSaver(m.write, m.keys, 1)
	if err := sv.Save(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	var h Head
	if err := json.Unmarshal([]byte(m.kv[KeyHead]), &h); err != nil {
		t.Fatal(err)
	}
	if h.Chunks < 2 {
		t.Fatalf("base of %d bytes fits one chunk of %d", h.Bytes, chunkBytes)
	}
	sameState(t, s, m.decode(t))
	delete(m.kv, KeyBase(h.Gen, 1))
	var kvs []KV
	for k, v := range m.kv {
		kvs = append(kvs, KV{Key: k, Value: []byte(v)})
	}
	if _, err := Decode(kvs); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing chunk: err = %v", err)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		kvs  map[string]string
		want string
	}{
		{"future version", map[string]string{KeyHead: `{"version":3,"gen":1,"chunks":1}`}, "format version 3"},
		{"bad head", map[string]string{KeyHead: `{`}, KeyHead},
		{"bad legacy", map[string]string{KeyLegacy: `{"nodes":1}`}, KeyLegacy},
	} {
		var kvs []KV
		for k, v := range tc.kvs {
			kvs = append(kvs, KV{Key: k, Value: []byte(v)})
		}
		if _, err := Decode(kvs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	if st, err := Decode(nil); st != nil || err != nil {
		t.Errorf("nothing saved: %v, %v", st, err)
	}
}

// guestEqual must see every field of manager.Guest: set each leaf field in
// turn to a new value on a copy and check that the copy is no longer equal,
// and that cloneGuest shares nothing the core changes in place.
func TestGuestEqualSeesEveryField(t *testing.T) {
	base := &manager.Guest{Op: &manager.Op{}}
	var paths []string
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		switch v.Kind() {
		case reflect.Struct:
			if v.Type() == reflect.TypeOf(time.Time{}) {
				paths = append(paths, path)
				return
			}
			for i := 0; i < v.NumField(); i++ {
				if v.Type().Field(i).IsExported() {
					walk(v.Field(i), path+"."+v.Type().Field(i).Name)
				}
			}
		case reflect.Pointer:
			walk(v.Elem(), path)
		default:
			paths = append(paths, path)
		}
	}
	walk(reflect.ValueOf(base).Elem(), "")
	sort.Strings(paths)
	for _, p := range paths {
		a := cloneGuest(base)
		b := cloneGuest(base)
		f := field(reflect.ValueOf(b).Elem(), p)
		if !setOther(f) {
			t.Fatalf("field %s of kind %s: teach this test to change it", p, f.Kind())
		}
		if guestEqual(a, b) {
			t.Errorf("guestEqual does not compare manager.Guest%s: add it (and to cloneGuest if it is a slice, map or pointer)", p)
		}
		c := cloneGuest(b)
		setOther(field(reflect.ValueOf(b).Elem(), p))
		if !guestEqual(c, cloneGuest(c)) {
			t.Errorf("clone of manager.Guest%s differs from the original", p)
		}
	}
	g := &manager.Guest{Tried: []string{"a"}, Spec: model.GuestSpec{Pools: []string{"p"}}, Op: &manager.Op{ID: 1}}
	c := cloneGuest(g)
	g.Tried[0], g.Spec.Pools[0], g.Op.ID = "b", "q", 2
	if guestEqual(c, g) {
		t.Error("cloneGuest shares slices or the op with the original")
	}
}

func field(v reflect.Value, path string) reflect.Value {
	for _, name := range strings.Split(strings.TrimPrefix(path, "."), ".") {
		if v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		v = v.FieldByName(name)
	}
	return v
}

func setOther(f reflect.Value) bool {
	switch f.Kind() {
	case reflect.String:
		f.SetString(f.String() + "x")
	case reflect.Bool:
		f.SetBool(!f.Bool())
	case reflect.Int, reflect.Int64, reflect.Int32:
		f.SetInt(f.Int() + 1)
	case reflect.Uint, reflect.Uint64, reflect.Uint32:
		f.SetUint(f.Uint() + 1)
	case reflect.Slice:
		f.Set(reflect.Append(f, reflect.Zero(f.Type().Elem())))
	case reflect.Struct:
		if tm, ok := f.Interface().(time.Time); ok {
			f.Set(reflect.ValueOf(tm.Add(time.Second)))
			return true
		}
		return false
	default:
		return false
	}
	return true
}

// storeIO is a Saver's writer (one transaction a write) and key lister on
// a real store.
func storeIO(cli *clientv3.Client) (Writer, func(ctx context.Context, prefix string) ([]string, error)) {
	write := func(ctx context.Context, ops ...clientv3.Op) error {
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		return err
	}
	keys := func(ctx context.Context, prefix string) ([]string, error) {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return nil, err
		}
		var out []string
		for _, kv := range resp.Kvs {
			out = append(out, string(kv.Key))
		}
		return out, nil
	}
	return write, keys
}

// Against a real store: Read sees what the Saver wrote, through the
// leader-guarded kind of write the daemon uses.
func TestReadFromStore(t *testing.T) {
	srv := storetest.Start(t)
	st := srv.Connect(t)
	cli := st.Client()
	ctx := context.Background()
	write, keys := storeIO(cli)
	if got, _, err := Read(ctx, cli); got != nil || err != nil {
		t.Fatalf("empty store: %v, %v", got, err)
	}
	s := bigState(t, 8, 10)
	sv := NewSaver(write, keys, 5)
	if err := sv.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	s.Step(t0.Add(time.Second), manager.NodeDown{Node: "n0001"})
	if err := sv.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	got, rev, err := Read(ctx, cli)
	if err != nil || rev == 0 {
		t.Fatal(err, rev)
	}
	sameState(t, s, got)
}

func BenchmarkSaveHostFailure(b *testing.B) {
	for _, size := range []struct{ hosts, per int }{{64, 125}, {1000, 50}} {
		b.Run(fmt.Sprintf("%dx%d", size.hosts, size.per), func(b *testing.B) {
			s := bigState(b, size.hosts, size.per)
			m := &memKV{kv: map[string]string{}}
			sv := NewSaver(m.write, m.keys, 1)
			ctx := context.Background()
			if err := sv.Save(ctx, s); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// One guest changes per save.
				g := s.Guests[i%len(s.Guests)]
				g.Restarts++
				if err := sv.Save(ctx, s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// jsonSubset reports where got lacks or differs from a field of want.
func jsonSubset(want, got any, path string) error {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %T, want an object", path, got)
		}
		for k, v := range w {
			if err := jsonSubset(v, g[k], path+"."+k); err != nil {
				return err
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Errorf("%s: %v, want %d items", path, got, len(w))
		}
		for i := range w {
			if err := jsonSubset(w[i], g[i], fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	default:
		if !reflect.DeepEqual(want, got) {
			return fmt.Errorf("%s: %v, want %v", path, got, want)
		}
	}
	return nil
}

// goldenV0 is the previous release's golden state (235b719, a fence in
// flight), as stored and restored.
func goldenV0(t *testing.T) ([]byte, *manager.State) {
	t.Helper()
	golden, err := os.ReadFile("../manager/testdata/state-v0-235b719.json")
	if err != nil {
		t.Fatal(err)
	}
	s, err := manager.Restore(golden)
	if err != nil {
		t.Fatal(err)
	}
	return golden, s
}

// With Saver.Legacy (a host of the previous release online), every save
// also writes format 1 as 235b719 wrote and read it (gzip JSON, its
// cluster.EncodeState and DecodeState), compaction keeps it, and the
// previous release's golden state (a fence in flight) comes back with every
// field it knows unchanged. Without it, no format-1 value is written and
// compaction deletes the one left.
func TestLegacyFormatInMixedClusters(t *testing.T) {
	golden, s := goldenV0(t)
	var want any
	if err := json.Unmarshal(golden, &want); err != nil {
		t.Fatal(err)
	}
	m := &memKV{kv: map[string]string{}}
	sv := NewSaver(m.write, m.keys, 10)
	sv.Legacy = true
	ctx := context.Background()
	legacy := func() (any, bool) {
		t.Helper()
		v, ok := m.kv[KeyLegacy]
		if !ok {
			return nil, false
		}
		if len(v) < 2 || v[0] != 0x1f || v[1] != 0x8b {
			t.Fatalf("%s is not gzip, as 235b719 wrote it", KeyLegacy)
		}
		raw, err := gunzip([]byte(v))
		if err != nil {
			t.Fatal(err)
		}
		var got any
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatal(err)
		}
		return got, true
	}
	check := func(what string) {
		t.Helper()
		got, ok := legacy()
		if !ok {
			t.Fatalf("%s: no %s in a mixed cluster", what, KeyLegacy)
		}
		if err := jsonSubset(want, got, "state"); err != nil {
			t.Fatalf("%s: the previous release would read another state: %v", what, err)
		}
	}
	if err := sv.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	check("first save")
	if !sv.Last.Compacted || sv.Last.LegacyBytes == 0 {
		t.Fatalf("first save: %+v", sv.Last)
	}
	// A delta, then a compaction: format 1 follows both.
	g := s.Guest("db1")
	g.Restarts = 7
	want.(map[string]any)["guests"].([]any)[0].(map[string]any)["restarts"] = 7.0
	if err := sv.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	if sv.Last.Compacted {
		t.Fatal("a small change compacted")
	}
	check("delta")
	if err := sv.compact(ctx, s); err != nil {
		t.Fatal(err)
	}
	check("compaction")
	// Nothing changed: nothing written.
	w := m.writes
	if err := sv.Save(ctx, s); err != nil || m.writes != w {
		t.Fatalf("a save with no change wrote %d times (%v)", m.writes-w, err)
	}
	if st := m.decode(t); st.Guest("db1").Restarts != 7 {
		t.Fatal("format 2 lost the change")
	}

	// Every host current: no longer written, deleted at compaction.
	sv.Legacy = false
	g.Restarts = 8
	if err := sv.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	if sv.Last.LegacyBytes != 0 {
		t.Fatal("format 1 written with every host current")
	}
	if err := sv.compact(ctx, s); err != nil {
		t.Fatal(err)
	}
	if _, ok := legacy(); ok {
		t.Fatalf("%s kept by compaction with every host current", KeyLegacy)
	}
	m2 := &memKV{kv: map[string]string{}}
	if err := NewSaver(m2.write, m2.keys, 10).Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	if _, ok := m2.kv[KeyLegacy]; ok {
		t.Fatalf("%s written with every host current", KeyLegacy)
	}
}

// After a downgrade, a host of the previous release may manage and save
// only format 1 (235b719 knows no other); when it is upgraded again, the
// next manager must continue that state, not the older format 2 that is
// still stored. Against a real store: of the two formats, Read takes the
// one written last, by the keys' revisions, both ways.
func TestReadTakesTheFormatWrittenLast(t *testing.T) {
	golden, s := goldenV0(t)
	srv := storetest.Start(t)
	cli := srv.Connect(t).Client()
	ctx := context.Background()
	write, keys := storeIO(cli)
	read := func(what string) *manager.State {
		t.Helper()
		got, _, err := Read(ctx, cli)
		if err != nil || got == nil {
			t.Fatalf("%s: %v, %v", what, got, err)
		}
		return got
	}

	// A current manager in a mixed cluster: both formats.
	sv := NewSaver(write, keys, 10)
	sv.Legacy = true
	if err := sv.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	sameState(t, s, read("both formats"))
	// Every host current again: format 2 goes on alone, the format-1
	// value (left until the next compaction) is stale.
	sv.Legacy = false
	s.Guest("web1").Restarts = 3
	if err := sv.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	if sv.Last.Compacted || sv.Last.LegacyBytes != 0 {
		t.Fatalf("save %+v, want a delta only", sv.Last)
	}
	sameState(t, s, read("format 1 stale"))

	// A downgraded host manages: the fence of h1 succeeded and it
	// restarted db1 on h2, saved as 235b719 saves (gzip JSON in format 1).
	var old map[string]any
	if err := json.Unmarshal(golden, &old); err != nil {
		t.Fatal(err)
	}
	for _, n := range old["nodes"].([]any) {
		if n := n.(map[string]any); n["name"] == "h1" {
			n["status"] = "fenced"
			delete(n, "fence")
			n["fences"] = 1.0
		}
	}
	db1 := old["guests"].([]any)[0].(map[string]any)
	db1["node"], db1["state"], db1["restarts"] = "h2", "started", 1.0
	raw, _ := json.Marshal(old)
	if _, err := cli.Put(ctx, KeyLegacy, string(gzipBytes(raw))); err != nil {
		t.Fatal(err)
	}
	want, err := manager.Restore(raw)
	if err != nil {
		t.Fatal(err)
	}
	got := read("format 1 written last")
	if g := got.Guest("db1"); g.Node != "h2" || g.State != manager.GuestStarted || g.Restarts != 1 {
		t.Fatalf("after the previous release managed: db1 %+v, want started on h2 (format 2 read instead of the newer format 1?)", *g)
	}
	sameState(t, want, got)

	// Upgraded again, the next manager's first save (every host current)
	// is format 2 alone, from the state it read, and drops format 1.
	sv2 := NewSaver(write, keys, 20)
	if err := sv2.Save(ctx, got); err != nil {
		t.Fatal(err)
	}
	if resp, err := cli.Get(ctx, KeyLegacy); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("format 1 kept with every host current: %v", err)
	}
	sameState(t, want, read("re-upgraded"))
}

// Decode compares format 1 with format 2's head and the keys of the
// head's generation only: a generation left half-written by a manager
// that died compacting is newer but not the state. A newer format 1 that
// does not decode is an error naming it, never format 2 instead.
func TestDecodeNewerFormatOne(t *testing.T) {
	s2 := bigState(t, 2, 1)
	s1 := bigState(t, 3, 1)
	m := &memKV{kv: map[string]string{}}
	if err := NewSaver(m.write, m.keys, 5).Save(context.Background(), s2); err != nil {
		t.Fatal(err)
	}
	legacy, err := EncodeLegacy(s1)
	if err != nil {
		t.Fatal(err)
	}
	kvs := func(legacy []byte, legacyRev int64) []KV {
		out := []KV{{Key: KeyLegacy, Value: legacy, ModRev: legacyRev}}
		for k, v := range m.kv {
			out = append(out, KV{Key: k, Value: []byte(v), ModRev: 10})
		}
		// A left-over chunk of generation 6, written after format 1.
		return append(out, KV{Key: KeyBase(6, 0), Value: []byte("x"), ModRev: 30})
	}
	for _, tc := range []struct {
		rev  int64
		want *manager.State
	}{{9, s2}, {10, s2}, {0, s2}, {11, s1}} {
		got, err := Decode(kvs(legacy, tc.rev))
		if err != nil {
			t.Fatalf("format 1 at revision %d: %v", tc.rev, err)
		}
		sameState(t, tc.want, got)
	}
	if _, err := Decode(kvs([]byte("{"), 11)); err == nil || !strings.Contains(err.Error(), KeyLegacy) {
		t.Fatalf("a broken newer format 1: %v, want an error naming %s", err, KeyLegacy)
	}
	if _, err := Decode(kvs([]byte("{"), 9)); err != nil {
		t.Fatalf("a broken older format 1 is not read: %v", err)
	}
}

// A new term carries on the log it read (Resume): its first save writes
// only what changed since, as the next entry of the same generation, and
// its first compaction writes the term's own generation and drops the
// one carried on.
func TestResumeCarriesOnTheLog(t *testing.T) {
	s := bigState(t, 16, 125)
	m := &memKV{kv: map[string]string{}}
	ctx := context.Background()
	sv := NewSaver(m.write, m.keys, 100)
	if err := sv.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	s.Step(t0.Add(time.Second), manager.NodeDown{Node: "n0003"})
	if err := sv.Save(ctx, s); err != nil {
		t.Fatal(err)
	}
	// The manager dies; the next one reads the store.
	var kvs []KV
	for k, v := range m.kv {
		kvs = append(kvs, KV{Key: k, Value: []byte(v)})
	}
	s2, r, err := DecodeResume(kvs)
	if err != nil || r == nil {
		t.Fatalf("DecodeResume: %v, resume %v", err, r)
	}
	sameState(t, s, s2)
	sv2 := NewSaver(m.write, m.keys, 200)
	sv2.Resume(r)
	w := m.writes
	if err := sv2.Save(ctx, s2); err != nil {
		t.Fatal(err)
	}
	if m.writes != w {
		t.Fatal("a resumed term's first save wrote with nothing changed")
	}
	n := s2.Node("n0003")
	s2.Step(t0.Add(2*time.Second), manager.FenceResult{Node: "n0003", Attempt: n.Fence.Attempt, OK: true})
	if err := sv2.Save(ctx, s2); err != nil {
		t.Fatal(err)
	}
	if sv2.Last.Compacted || sv2.Last.Guests != 125 {
		t.Fatalf("the resumed term's save: %+v, want a delta of the 125 guests of n0003", sv2.Last)
	}
	if _, ok := m.kv[KeyLog(100, 1)]; !ok {
		t.Fatalf("the resumed term's delta is not the next entry of generation 100")
	}
	sameState(t, s2, m.decode(t))
	if err := sv2.compact(ctx, s2); err != nil {
		t.Fatal(err)
	}
	for k := range m.kv {
		if strings.Contains(k, fmt.Sprintf("/%020d/", 100)) {
			t.Fatalf("key %s of the generation carried on left after the term's compaction", k)
		}
	}
	if _, ok := m.kv[KeyBase(200, 0)]; !ok {
		t.Fatal("the resumed term compacted to another generation than its own")
	}
	sameState(t, s2, m.decode(t))
}
