// Package savedstate keeps the manager core's state in the store so that a
// newly elected manager continues where the last one stopped, and saves it
// incrementally: a step's save costs in proportion to what the step changed,
// not to the size of the cluster.
//
// Layout (all under store.Prefix, format version 2):
//
//	manager/head                 Head: format version, base generation, its chunk count
//	manager/base/<gen>/<i>       the whole state (gzip JSON), split in chunks under etcd's request limit
//	manager/log/<gen>/<seq>      Delta: the records one save changed, applied on top of base <gen> in seq order
//	manager/state                format 1: the whole state in one value
//
// When both formats are stored, the one written last is read, by the
// keys' store revisions (etcd's ModRevision): format 1 when it is newer
// than the head and every key of its generation (an older release, on a
// downgraded host, managed after this one and wrote only format 1), format
// 2 otherwise (format 1 is then this release's copy for older hosts, or
// stale).
//
// A save writes one Delta (a single put: atomic). When the log outweighs the
// base, or a delta would be too big for one request, the saver compacts: it
// writes a new base generation in as many transactions as its size needs and
// then, in one transaction, points the head at it and deletes the old
// generation, its log and any format-1 value. While Saver.Legacy is set
// (a mixed-release cluster) the format-1 value is kept instead, and
// rewritten after every save that changed something. A manager that dies
// half-way leaves unreferenced chunks, which the next compaction deletes;
// readers only ever see a complete generation.
package savedstate

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/store"
)

// Keys.
const (
	PrefixManager = store.PrefixManager
	KeyHead       = store.KeyManagerHead
	PrefixBase    = store.PrefixManagerBase
	PrefixLog     = store.PrefixManagerLog
	// KeyLegacy is format 1: the whole state, gzip JSON or plain JSON.
	KeyLegacy = store.KeyManagerStateV1
)

// Version is the format this package writes.
const Version = 2

// Limits. etcd refuses requests over 1.5 MiB and transactions of more than
// 128 operations by default.
const (
	chunksPerTxn  = 1
	maxLogEntries = 2000
)

// chunkBytes is the most a base chunk or a delta holds (a variable for
// tests).
var chunkBytes = 1 << 20

// minLogBytes is the log size a small state's log may grow to before it is
// compacted (a variable for tests).
var minLogBytes = 64 << 10

// Head points at the current base generation.
type Head struct {
	Version int    `json:"version"`
	Gen     uint64 `json:"gen"`
	Chunks  int    `json:"chunks"`
	Bytes   int    `json:"bytes"` // compressed size of the base
}

// Delta is the change one save made. Top holds the state's fields other
// than nodes and guests, whole, when any of them changed.
type Delta struct {
	Version       int               `json:"version"`
	Top           json.RawMessage   `json:"top,omitempty"`
	Nodes         []json.RawMessage `json:"nodes,omitempty"`
	Guests        []json.RawMessage `json:"guests,omitempty"`
	RemovedNodes  []string          `json:"removed_nodes,omitempty"`
	RemovedGuests []string          `json:"removed_guests,omitempty"`
}

// KeyBase is chunk i of base generation gen.
func KeyBase(gen uint64, i int) string { return fmt.Sprintf("%s%020d/%06d", PrefixBase, gen, i) }

// KeyLog is entry seq of the log over base generation gen.
func KeyLog(gen, seq uint64) string { return fmt.Sprintf("%s%020d/%020d", PrefixLog, gen, seq) }

func prefixBaseGen(gen uint64) string { return fmt.Sprintf("%s%020d/", PrefixBase, gen) }
func prefixLogGen(gen uint64) string  { return fmt.Sprintf("%s%020d/", PrefixLog, gen) }

// Read reads the saved state in one request (ErrNotFound-free: nil when no
// manager has saved one yet). opts are extra read options, for example
// clientv3.WithSerializable. It returns the store revision read at.
func Read(ctx context.Context, cli *clientv3.Client, opts ...clientv3.OpOption) (*manager.State, int64, error) {
	resp, err := cli.Get(ctx, PrefixManager, append([]clientv3.OpOption{clientv3.WithPrefix()}, opts...)...)
	if err != nil {
		return nil, 0, fmt.Errorf("read the manager state: %w", err)
	}
	kvs := make([]KV, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		kvs[i] = KV{Key: string(kv.Key), Value: kv.Value, ModRev: kv.ModRevision}
	}
	st, err := Decode(kvs)
	return st, resp.Header.Revision, err
}

// Load reads the saved state: store.ErrNotFound before the first manager
// saved one.
func Load(ctx context.Context, cli *clientv3.Client) (*manager.State, error) {
	st, _, err := Read(ctx, cli)
	if err == nil && st == nil {
		return nil, store.ErrNotFound
	}
	return st, err
}

// KV is one stored key and value, with the store revision it was last
// written at (etcd's ModRevision; 0 when unknown).
type KV struct {
	Key    string
	Value  []byte
	ModRev int64
}

// Decode rebuilds the state from the keys under PrefixManager (in any
// order). It returns nil, nil when there is no saved state. When both
// formats are there, it reads the one written last (see the package
// comment); with equal revisions (unknown ones included), format 2.
func Decode(kvs []KV) (*manager.State, error) {
	d, err := decodeDoc(kvs)
	if err != nil || d == nil {
		return nil, err
	}
	return d.state()
}

// Resume is where a new term's Saver carries on the saved state's log
// (Saver.Resume) instead of writing the whole state again as a base: the
// generation read, its next log entry, what the log weighs against the
// base, and the records as read.
type Resume struct {
	gen, seq                     uint64
	baseBytes, logBytes, entries int
	top                          []byte
	nodes                        map[string][]byte
	guests                       map[string]*manager.Guest
}

// DecodeResume is Decode, and says where a Saver of the next term may
// carry on (nil: a saved state in format 1, or none, to be saved whole).
// The Resume holds the records as read: take it before the state changes.
func DecodeResume(kvs []KV) (*manager.State, *Resume, error) {
	d, err := decodeDoc(kvs)
	if err != nil || d == nil {
		return nil, nil, err
	}
	st, err := d.state()
	if err != nil || d.resume == nil {
		return st, nil, err
	}
	r := d.resume
	if r.top, err = marshalTop(st); err != nil {
		return nil, nil, err
	}
	r.nodes = make(map[string][]byte, len(st.Nodes))
	for _, n := range st.Nodes {
		b, err := json.Marshal(n)
		if err != nil {
			return nil, nil, fmt.Errorf("encode node %q: %w", n.Name, err)
		}
		r.nodes[n.Name] = b
	}
	r.guests = make(map[string]*manager.Guest, len(st.Guests))
	for _, g := range st.Guests {
		r.guests[g.Spec.Name] = cloneGuest(g)
	}
	return st, r, nil
}

func (d *doc) state() (*manager.State, error) {
	if len(d.patches) == 0 {
		st, err := manager.Restore(d.whole)
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", d.where, err)
		}
		return st, nil
	}
	st, err := manager.RestorePatched(d.whole, d.patches)
	var pe *manager.PatchError
	if errors.As(err, &pe) {
		return nil, fmt.Errorf("decode %s: %w", d.patchKeys[pe.Index], pe.Err)
	}
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", d.where, err)
	}
	return st, nil
}

// doc is the saved state as read: the JSON of the whole state and the
// patches of the log over it (their keys for errors), applied in order.
type doc struct {
	whole     []byte
	where     string // what whole was read from
	patches   []manager.Patch
	patchKeys []string
	resume    *Resume // format 2: where the log goes on (records not filled in)
}

func decodeDoc(kvs []KV) (*doc, error) {
	var head *Head
	var legacy []byte
	var legacyRev int64
	byKey := make(map[string][]byte, len(kvs))
	revs := make(map[string]int64, len(kvs))
	for _, kv := range kvs {
		byKey[kv.Key] = kv.Value
		revs[kv.Key] = kv.ModRev
		switch kv.Key {
		case KeyHead:
			head = &Head{}
			if err := json.Unmarshal(kv.Value, head); err != nil {
				return nil, fmt.Errorf("decode %s: %w", KeyHead, err)
			}
		case KeyLegacy:
			legacy, legacyRev = kv.Value, kv.ModRev
		}
	}
	decodeLegacy := func(where string) (*doc, error) {
		raw, err := gunzip(legacy)
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", where, err)
		}
		return &doc{whole: raw, where: where}, nil
	}
	if head == nil {
		if legacy == nil {
			return nil, nil
		}
		return decodeLegacy(KeyLegacy)
	}
	if legacy != nil {
		// The format written last: format 2's newest key is its head or
		// a key of the head's generation (other generations' keys are
		// left-overs, not the state).
		newest := revs[KeyHead]
		base, log := prefixBaseGen(head.Gen), prefixLogGen(head.Gen)
		for k, rev := range revs {
			if strings.HasPrefix(k, base) || strings.HasPrefix(k, log) {
				newest = max(newest, rev)
			}
		}
		if legacyRev > newest {
			return decodeLegacy(fmt.Sprintf("%s (format 1, written at revision %d, after format 2 at revision %d)", KeyLegacy, legacyRev, newest))
		}
	}
	if head.Version != Version {
		return nil, fmt.Errorf("decode %s: format version %d, this haven reads version %d", KeyHead, head.Version, Version)
	}
	var gz []byte
	for i := 0; i < head.Chunks; i++ {
		c, ok := byKey[KeyBase(head.Gen, i)]
		if !ok {
			return nil, fmt.Errorf("decode the manager state: chunk %s is missing (head says %d chunks)", KeyBase(head.Gen, i), head.Chunks)
		}
		gz = append(gz, c...)
	}
	raw, err := gunzip(gz)
	if err != nil {
		return nil, fmt.Errorf("decode base generation %d: %w", head.Gen, err)
	}
	var logKeys []string
	pfx := prefixLogGen(head.Gen)
	for k := range byKey {
		if strings.HasPrefix(k, pfx) {
			logKeys = append(logKeys, k)
		}
	}
	slices.Sort(logKeys) // zero-padded sequence numbers
	d := &doc{whole: raw, where: fmt.Sprintf("base generation %d", head.Gen), patchKeys: logKeys,
		resume: &Resume{gen: head.Gen, baseBytes: len(gz), entries: len(logKeys)}}
	for _, k := range logKeys {
		seq, err := strconv.ParseUint(strings.TrimPrefix(k, pfx), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("decode %s: not a log entry's key", k)
		}
		d.resume.seq = max(d.resume.seq, seq+1)
		d.resume.logBytes += len(byKey[k])
		raw, err := gunzip(byKey[k])
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", k, err)
		}
		var dl Delta
		if err := json.Unmarshal(raw, &dl); err != nil {
			return nil, fmt.Errorf("decode %s: %w", k, err)
		}
		if dl.Version != Version {
			return nil, fmt.Errorf("decode %s: format version %d, this haven reads version %d", k, dl.Version, Version)
		}
		d.patches = append(d.patches, dl.patch())
	}
	return d, nil
}

// patch is the delta as the core applies it.
func (dl Delta) patch() manager.Patch {
	p := manager.Patch{Top: dl.Top, RemovedNodes: dl.RemovedNodes, RemovedGuests: dl.RemovedGuests}
	for _, n := range dl.Nodes {
		p.Nodes = append(p.Nodes, n)
	}
	for _, g := range dl.Guests {
		p.Guests = append(p.Guests, g)
	}
	return p
}

func gunzip(b []byte) ([]byte, error) {
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		return b, nil // plain JSON
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// Writer is how the Saver writes: one transaction of ops, guarded by the
// manager's election in the daemon.
type Writer func(ctx context.Context, ops ...clientv3.Op) error

// Saver saves a manager's state after each step, writing only what changed
// since its last save. One Saver serves one manager term; it is not safe
// for concurrent use.
type Saver struct {
	write  Writer
	read   func(ctx context.Context, prefix string) ([]string, error) // keys under prefix
	term   uint64                                                     // the generation of the term's first base
	gen    uint64
	seq    uint64
	based  bool // a base of this term's generation is written
	guests map[string]*manager.Guest
	// order is the saved guests in the state's order at the last save: a
	// guest is usually found at the same index, without a map lookup.
	order []*manager.Guest
	nodes map[string][]byte
	top   []byte
	// baseBytes and logBytes weigh the base against the log since it.
	baseBytes, logBytes, entries int
	// Stats of the last save, for benchmarks and logs.
	Last SaveStats
	// Legacy, when set, makes every save that changed something also write
	// the whole state in format 1 (KeyLegacy), which compaction then keeps:
	// set while some online host runs a release that reads only format 1,
	// so that it finds the state if it becomes manager.
	Legacy bool
	// legacyCurrent: KeyLegacy holds the state of the last save.
	legacyCurrent bool
}

// SaveStats describes one save.
type SaveStats struct {
	Compacted     bool
	Guests, Nodes int // records written
	Bytes         int // bytes written
	LegacyBytes   int // bytes written in format 1 (Saver.Legacy)
}

// NewSaver returns a Saver writing with write. keys lists the keys under a
// prefix (to find stale generations); gen is a generation number above any
// in use, for example the term's election revision.
func NewSaver(write Writer, keys func(ctx context.Context, prefix string) ([]string, error), gen uint64) *Saver {
	return &Saver{write: write, read: keys, term: gen, gen: gen}
}

// Resume makes the saver carry on the log that r was read from: its
// saves are deltas over the records as read, and its first compaction
// writes the term's generation. Call it before the first Save.
func (sv *Saver) Resume(r *Resume) {
	sv.gen, sv.seq, sv.based = r.gen, r.seq, true
	sv.baseBytes, sv.logBytes, sv.entries = r.baseBytes, r.logBytes, r.entries
	sv.top, sv.nodes, sv.guests, sv.order = r.top, r.nodes, r.guests, nil
}

// Save writes what changed in s since the last save; the first save of a
// Saver writes a whole new base, unless it carries on a log (Resume).
func (sv *Saver) Save(ctx context.Context, s *manager.State) error {
	if err := sv.save(ctx, s); err != nil {
		return err
	}
	if !sv.Legacy {
		sv.legacyCurrent = false
		return nil
	}
	if sv.legacyCurrent && sv.Last == (SaveStats{}) {
		return nil // nothing changed since format 1 was written
	}
	gz, err := EncodeLegacy(s)
	if err != nil {
		return err
	}
	if len(gz) > chunkBytes {
		// Too big for one request: the previous release could not have
		// saved it either.
		sv.legacyCurrent = false
		return nil
	}
	if err := sv.write(ctx, clientv3.OpPut(KeyLegacy, string(gz))); err != nil {
		return fmt.Errorf("save the manager state in format 1: %w", err)
	}
	sv.legacyCurrent = true
	sv.Last.LegacyBytes = len(gz)
	return nil
}

// EncodeLegacy encodes the state in format 1, as the previous release
// (235b719, cluster.EncodeState) wrote it: the state's JSON, gzipped.
func EncodeLegacy(s *manager.State) ([]byte, error) {
	raw, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode manager state: %w", err)
	}
	return gzipBytes(raw), nil
}

func (sv *Saver) save(ctx context.Context, s *manager.State) error {
	if !sv.based {
		return sv.compact(ctx, s)
	}
	var dl Delta
	dl.Version = Version
	bytesOut := 0
	top, err := marshalTop(s)
	if err != nil {
		return err
	}
	if !bytes.Equal(top, sv.top) {
		dl.Top = top
	}
	seenN := make(map[string]bool, len(s.Nodes))
	var newNodes map[string][]byte
	for _, n := range s.Nodes {
		seenN[n.Name] = true
		b, err := json.Marshal(n)
		if err != nil {
			return fmt.Errorf("encode node %q: %w", n.Name, err)
		}
		if !bytes.Equal(b, sv.nodes[n.Name]) {
			dl.Nodes = append(dl.Nodes, b)
			if newNodes == nil {
				newNodes = map[string][]byte{}
			}
			newNodes[n.Name] = b
		}
	}
	for name := range sv.nodes {
		if !seenN[name] {
			dl.RemovedNodes = append(dl.RemovedNodes, name)
		}
	}
	var changed []*manager.Guest
	var changedAt []int
	misaligned := len(sv.order) != len(s.Guests)
	kept := 0
	for i, g := range s.Guests {
		var old *manager.Guest
		ok := false
		if i < len(sv.order) && sv.order[i].Spec.Name == g.Spec.Name {
			old, ok = sv.order[i], true
		} else {
			old, ok = sv.guests[g.Spec.Name]
			misaligned = true
		}
		if ok {
			kept++
			if guestEqual(old, g) {
				continue
			}
		}
		b, err := json.Marshal(g)
		if err != nil {
			return fmt.Errorf("encode guest %q: %w", g.Spec.Name, err)
		}
		dl.Guests = append(dl.Guests, b)
		changed = append(changed, g)
		changedAt = append(changedAt, i)
		bytesOut += len(b)
	}
	if kept != len(sv.guests) {
		for name := range sv.guests {
			if s.Guest(name) == nil {
				dl.RemovedGuests = append(dl.RemovedGuests, name)
			}
		}
	}
	slices.Sort(dl.RemovedNodes)
	slices.Sort(dl.RemovedGuests)
	if dl.Top == nil && len(dl.Nodes) == 0 && len(dl.Guests) == 0 && len(dl.RemovedNodes) == 0 && len(dl.RemovedGuests) == 0 {
		sv.Last = SaveStats{}
		return nil
	}
	raw, err := json.Marshal(dl)
	if err != nil {
		return fmt.Errorf("encode manager state delta: %w", err)
	}
	gz := gzipBytes(raw)
	if len(gz) > chunkBytes || sv.entries >= maxLogEntries || sv.logBytes+len(gz) > max(sv.baseBytes, minLogBytes) {
		return sv.compact(ctx, s)
	}
	if err := sv.write(ctx, clientv3.OpPut(KeyLog(sv.gen, sv.seq), string(gz))); err != nil {
		return fmt.Errorf("save the manager state: %w", err)
	}
	sv.seq++
	sv.entries++
	sv.logBytes += len(gz)
	if dl.Top != nil {
		sv.top = top
	}
	for name, b := range newNodes {
		sv.nodes[name] = b
	}
	for _, name := range dl.RemovedNodes {
		delete(sv.nodes, name)
	}
	for _, name := range dl.RemovedGuests {
		delete(sv.guests, name)
	}
	for i, g := range changed {
		c := cloneGuest(g)
		sv.guests[g.Spec.Name] = c
		if !misaligned {
			sv.order[changedAt[i]] = c
		}
	}
	if misaligned {
		sv.reorder(s)
	}
	sv.Last = SaveStats{Guests: len(dl.Guests), Nodes: len(dl.Nodes), Bytes: len(gz)}
	return nil
}

// reorder lines the saved guests up with the state's order.
func (sv *Saver) reorder(s *manager.State) {
	sv.order = sv.order[:0]
	for _, g := range s.Guests {
		sv.order = append(sv.order, sv.guests[g.Spec.Name])
	}
}

// marshalTop encodes the state's fields other than nodes and guests.
func marshalTop(s *manager.State) ([]byte, error) {
	cp := *s
	cp.Nodes, cp.Guests = nil, nil
	b, err := json.Marshal(&cp)
	if err != nil {
		return nil, fmt.Errorf("encode manager state: %w", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, err
	}
	delete(top, "nodes")
	delete(top, "guests")
	return json.Marshal(top)
}

// compact writes s as a new base generation and points the head at it.
func (sv *Saver) compact(ctx context.Context, s *manager.State) error {
	raw, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode manager state: %w", err)
	}
	gz := gzipBytes(raw)
	gen := sv.gen
	if sv.based {
		// Above the generation carried on (Resume) and every other in
		// use: the term's own, then one more at each compaction.
		gen = max(sv.gen+1, sv.term)
	}
	var chunks []string
	for off := 0; off < len(gz); off += chunkBytes {
		chunks = append(chunks, string(gz[off:min(off+chunkBytes, len(gz))]))
	}
	if len(chunks) == 0 {
		chunks = []string{""}
	}
	// Every chunk but the last in transactions of their own, then the last
	// with the head switch, in one transaction.
	for i := 0; i < len(chunks)-1; i += chunksPerTxn {
		var ops []clientv3.Op
		for j := i; j < min(i+chunksPerTxn, len(chunks)-1); j++ {
			ops = append(ops, clientv3.OpPut(KeyBase(gen, j), chunks[j]))
		}
		if err := sv.write(ctx, ops...); err != nil {
			return fmt.Errorf("save the manager state: %w", err)
		}
	}
	head, _ := json.Marshal(Head{Version: Version, Gen: gen, Chunks: len(chunks), Bytes: len(gz)})
	ops := []clientv3.Op{
		clientv3.OpPut(KeyBase(gen, len(chunks)-1), chunks[len(chunks)-1]),
		clientv3.OpPut(KeyHead, string(head)),
	}
	if !sv.Legacy {
		ops = append(ops, clientv3.OpDelete(KeyLegacy))
	}
	// Delete every other generation's base and log.
	stale, err := sv.staleGens(ctx, gen)
	if err != nil {
		return err
	}
	for _, p := range stale {
		ops = append(ops, clientv3.OpDelete(p, clientv3.WithPrefix()))
	}
	if err := sv.write(ctx, ops...); err != nil {
		return fmt.Errorf("save the manager state: %w", err)
	}
	sv.gen, sv.seq, sv.based = gen, 0, true
	sv.baseBytes, sv.logBytes, sv.entries = len(gz), 0, 0
	sv.top, err = marshalTop(s)
	if err != nil {
		return err
	}
	sv.nodes = make(map[string][]byte, len(s.Nodes))
	for _, n := range s.Nodes {
		b, err := json.Marshal(n)
		if err != nil {
			return fmt.Errorf("encode node %q: %w", n.Name, err)
		}
		sv.nodes[n.Name] = b
	}
	sv.guests = make(map[string]*manager.Guest, len(s.Guests))
	for _, g := range s.Guests {
		sv.guests[g.Spec.Name] = cloneGuest(g)
	}
	sv.reorder(s)
	sv.Last = SaveStats{Compacted: true, Guests: len(s.Guests), Nodes: len(s.Nodes), Bytes: len(gz)}
	return nil
}

// staleGens lists the base and log prefixes of generations other than gen.
func (sv *Saver) staleGens(ctx context.Context, gen uint64) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, pfx := range []string{PrefixBase, PrefixLog} {
		keys, err := sv.read(ctx, pfx)
		if err != nil {
			return nil, fmt.Errorf("list saved manager state generations: %w", err)
		}
		for _, k := range keys {
			g, _, ok := strings.Cut(strings.TrimPrefix(k, pfx), "/")
			if !ok {
				continue
			}
			if n, err := strconv.ParseUint(g, 10, 64); err == nil && n == gen {
				continue
			}
			if p := pfx + g + "/"; !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// cloneGuest copies a guest deeply: the core changes guests in place.
func cloneGuest(g *manager.Guest) *manager.Guest {
	c := *g
	c.Spec.Pools = slices.Clone(g.Spec.Pools)
	c.Spec.After = slices.Clone(g.Spec.After)
	c.Spec.Tags = slices.Clone(g.Spec.Tags)
	c.Tried = slices.Clone(g.Tried)
	c.PreemptVictims = slices.Clone(g.PreemptVictims)
	if g.Op != nil {
		op := *g.Op
		c.Op = &op
	}
	return &c
}

// guestEqual compares two guests field by field. TestGuestEqualSeesEveryField
// fails when manager.Guest gains a field this does not compare.
func guestEqual(a, b *manager.Guest) bool {
	if a.Spec.Name != b.Spec.Name || a.Spec.Memory != b.Spec.Memory || a.Spec.CPUs != b.Spec.CPUs ||
		a.Spec.State != b.Spec.State || a.Spec.Domain != b.Spec.Domain || a.Spec.Recovery != b.Spec.Recovery ||
		a.Spec.MaxRestarts != b.Spec.MaxRestarts || a.Spec.RestartWindow != b.Spec.RestartWindow ||
		a.Spec.MaxRelocations != b.Spec.MaxRelocations || a.Spec.Migratable != b.Spec.Migratable ||
		!slices.Equal(a.Spec.Pools, b.Spec.Pools) || a.Spec.Pinned != b.Spec.Pinned || a.Spec.Node != b.Spec.Node || a.Spec.Priority != b.Spec.Priority ||
		!slices.Equal(a.Spec.After, b.Spec.After) || !slices.Equal(a.Spec.Tags, b.Spec.Tags) || a.Spec.CPUModel != b.Spec.CPUModel {
		return false
	}
	if (a.Op == nil) != (b.Op == nil) || (a.Op != nil && *a.Op != *b.Op) {
		return false
	}
	return a.State == b.State && a.Node == b.Node && a.Running == b.Running && a.Need == b.Need &&
		a.RetryAt.Equal(b.RetryAt) && a.Restarts == b.Restarts && a.Moves == b.Moves &&
		slices.Equal(a.Tried, b.Tried) && a.RunningSince.Equal(b.RunningSince) &&
		a.AlsoOn == b.AlsoOn && a.EvacuatedFrom == b.EvacuatedFrom && a.ReturnTo == b.ReturnTo && a.OperatorPlaced == b.OperatorPlaced &&
		a.FailbackBlocked == b.FailbackBlocked && a.BlockedSeq == b.BlockedSeq && a.MoveFailedAt.Equal(b.MoveFailedAt) && a.MoveFails == b.MoveFails &&
		a.PreemptOn == b.PreemptOn && slices.Equal(a.PreemptVictims, b.PreemptVictims) && a.PreemptedBy == b.PreemptedBy &&
		a.Preempted == b.Preempted && a.Wait == b.Wait && a.BalancedAt.Equal(b.BalancedAt) && a.CPUModel == b.CPUModel
}
