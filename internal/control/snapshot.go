package control

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/savedstate"
	"github.com/haven-ha/haven/internal/storage"
	"github.com/haven-ha/haven/internal/store"
)

// Snapshot is what a new manager term starts from: one consistent read of
// the store, decoded and sorted (by name, reports by node then guest,
// commands oldest first), so that two loads of the same store feed the
// core the same inputs in the same order.
type Snapshot struct {
	Rev        int64
	Policy     cluster.Policy
	Registered []string        // registered nodes
	Live       []LiveNode      // nodes with a live lease
	Domains    []model.Domain  // failover domains
	Guests     []cluster.Guest // guest records
	Reports    []NodeReport    // agents' guest reports
	State      *manager.State  // the saved core state; nil before the first manager saved one
	// Resume is where the term's saves carry on the saved state's log
	// (nil: the first save writes the state whole).
	Resume     *savedstate.Resume
	Commands   []cluster.Command // operator commands not handled yet
	Shutdowns  []manager.NodeShutdown
	Pools      []storage.Pool
	PoolHealth []PoolCheck
	// Skipped are the records that did not decode: each error names its
	// key. They are left out of the snapshot; the caller reports them.
	Skipped []error
}

// KV is one key read, with its create revision (commands are taken in
// the order the store took them) and the revision it was last written at
// (of the saved state's two formats, the one written last is read).
type KV struct {
	Key       string
	Value     []byte
	CreateRev int64
	ModRev    int64
}

// LiveNode is a node's liveness record.
type LiveNode struct {
	Name  string
	Facts model.NodeFacts
}

// PoolCheck is one node's latest check of one pool.
type PoolCheck struct {
	Node, Pool string
	Health     cluster.PoolHealth
}

// snapshotReads are the ranges a snapshot reads, by name.
var snapshotReads = []struct {
	name, key string
	prefix    bool
}{
	{"policy", cluster.KeyPolicy, false},
	{"registered", store.PrefixNodeReg, true},
	{"live", store.PrefixNodeLive, true},
	{"domains", cluster.PrefixDomains, true},
	{"guests", cluster.PrefixGuests, true},
	{"reports", cluster.PrefixReports, true},
	{"state", savedstate.PrefixManager, true},
	{"commands", cluster.PrefixCommands, true},
	{"shutdown", cluster.PrefixShutdown, true},
	{"poolhealth", cluster.PrefixPoolHealth, true},
	{"pools", cluster.PrefixPools, true},
}

// LoadSnapshot reads the snapshot in one transaction.
func LoadSnapshot(ctx context.Context, cli *clientv3.Client) (*Snapshot, error) {
	rev, ranges, err := fetchSnapshot(ctx, cli)
	if err != nil {
		return nil, err
	}
	return DecodeSnapshot(rev, ranges)
}

// fetchSnapshot reads the snapshot's ranges in one transaction.
func fetchSnapshot(ctx context.Context, cli *clientv3.Client) (int64, map[string][]KV, error) {
	ops := make([]clientv3.Op, len(snapshotReads))
	for i, r := range snapshotReads {
		var opts []clientv3.OpOption
		if r.prefix {
			opts = append(opts, clientv3.WithPrefix())
		}
		ops[i] = clientv3.OpGet(r.key, opts...)
	}
	resp, err := cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return 0, nil, fmt.Errorf("manager: read the cluster: %w", err)
	}
	if len(resp.Responses) != len(ops) {
		return 0, nil, fmt.Errorf("manager: read the cluster: %d answers to %d reads", len(resp.Responses), len(ops))
	}
	ranges := make(map[string][]KV, len(ops))
	for i, r := range snapshotReads {
		rr := resp.Responses[i].GetResponseRange()
		if rr == nil {
			return 0, nil, fmt.Errorf("manager: read the cluster: no range answer for %s", r.key)
		}
		kvs := make([]KV, len(rr.Kvs))
		for j, kv := range rr.Kvs {
			kvs[j] = KV{Key: string(kv.Key), Value: kv.Value, CreateRev: kv.CreateRevision, ModRev: kv.ModRevision}
		}
		ranges[r.name] = kvs
	}
	return resp.Header.Revision, ranges, nil
}

// recordDecoder decodes records, keeping those it skipped and the first
// of a newer schema than this build reads.
type recordDecoder struct {
	skipped []error
	newer   error
}

func (d *recordDecoder) skip(key string, err error) {
	d.skipped = append(d.skipped, fmt.Errorf("%s: %w", key, err))
}

func (d *recordDecoder) decode(kv KV, v any) bool {
	err := store.Decode(kv.Key, kv.Value, v)
	var se *model.SchemaError
	if errors.As(err, &se) && d.newer == nil {
		d.newer = err
	} else if err != nil {
		d.skip(kv.Key, err)
	}
	return err == nil
}

// DecodeSnapshot builds a snapshot from the keys read, by read name (see
// snapshotReads). An unreadable record is skipped and listed in Skipped;
// an unreadable policy or saved manager state is an error, since acting
// without them could undo a fence in progress, and so is a record of a
// newer schema than this build reads (a *model.SchemaError): a newer agent
// wrote it, and this one must leave the office to it rather than manage
// without what it cannot read.
func DecodeSnapshot(rev int64, ranges map[string][]KV) (*Snapshot, error) {
	s := &Snapshot{Rev: rev, Policy: cluster.DefaultPolicy()}
	// Three parts decode at once, on as many cores: the saved state (and
	// its restore), the guest records, the rest (at 50,000 guests each
	// takes about a second). Each part keeps what it skipped; they are
	// joined in the order of the reads.
	var head, guests, rest recordDecoder
	for _, kv := range ranges["policy"] {
		if err := store.Decode(kv.Key, kv.Value, &s.Policy); err != nil {
			return nil, fmt.Errorf("manager: decode the cluster policy: %w", err)
		}
	}
	saved := make([]savedstate.KV, len(ranges["state"]))
	for i, kv := range ranges["state"] {
		saved[i] = savedstate.KV{Key: kv.Key, Value: kv.Value, ModRev: kv.ModRev}
	}
	type decoded struct {
		st  *manager.State
		r   *savedstate.Resume
		err error
	}
	stateCh := make(chan decoded, 1)
	go func() {
		st, r, err := savedstate.DecodeResume(saved)
		stateCh <- decoded{st, r, err}
	}()
	for _, kv := range ranges["registered"] {
		s.Registered = append(s.Registered, strings.TrimPrefix(kv.Key, store.PrefixNodeReg))
	}
	guestsDone := make(chan []cluster.Guest, 1)
	go func() {
		out := make([]cluster.Guest, 0, len(ranges["guests"]))
		for _, kv := range ranges["guests"] {
			var g cluster.Guest
			if !guests.decode(kv, &g) {
				continue
			}
			if want := strings.TrimPrefix(kv.Key, cluster.PrefixGuests); g.Spec.Name != want {
				guests.skip(kv.Key, fmt.Errorf("record names guest %q", g.Spec.Name))
				continue
			}
			out = append(out, g)
		}
		slices.SortFunc(out, func(a, b cluster.Guest) int { return cmp.Compare(a.Spec.Name, b.Spec.Name) })
		guestsDone <- out
	}()
	for _, kv := range ranges["live"] {
		var f model.NodeFacts
		if !head.decode(kv, &f) {
			continue
		}
		s.Live = append(s.Live, LiveNode{Name: strings.TrimPrefix(kv.Key, store.PrefixNodeLive), Facts: f})
	}
	for _, kv := range ranges["domains"] {
		var d model.Domain
		if !head.decode(kv, &d) {
			continue
		}
		s.Domains = append(s.Domains, d)
	}
	s.Reports = make([]NodeReport, 0, len(ranges["reports"]))
	for _, kv := range ranges["reports"] {
		node, guest, ok := cluster.ReportFromKey(kv.Key)
		if !ok {
			rest.skip(kv.Key, errors.New("not a node/guest key"))
			continue
		}
		var r hostctl.Report
		if !rest.decode(kv, &r) {
			continue
		}
		if r.Guest == "" {
			r.Guest = guest
		}
		s.Reports = append(s.Reports, NodeReport{Node: node, Report: r})
	}
	cmds := slices.Clone(ranges["commands"])
	// Oldest first: in the order the store took them.
	slices.SortStableFunc(cmds, func(a, b KV) int { return cmp.Or(cmp.Compare(a.CreateRev, b.CreateRev), cmp.Compare(a.Key, b.Key)) })
	for _, kv := range cmds {
		var c cluster.Command
		if !rest.decode(kv, &c) {
			continue
		}
		if !c.Done {
			s.Commands = append(s.Commands, c)
		}
	}
	for _, kv := range ranges["shutdown"] {
		in, ok := shutdownInput(kv.Key, kv.Value)
		if !ok {
			rest.skip(kv.Key, errors.New("unreadable shutdown record"))
			continue
		}
		s.Shutdowns = append(s.Shutdowns, *in.Shutdown)
	}
	for _, kv := range ranges["pools"] {
		var p storage.Pool
		if !rest.decode(kv, &p) {
			continue
		}
		s.Pools = append(s.Pools, p)
	}
	for _, kv := range ranges["poolhealth"] {
		node, pool, ok := strings.Cut(strings.TrimPrefix(kv.Key, cluster.PrefixPoolHealth), "/")
		var h cluster.PoolHealth
		if !ok {
			rest.skip(kv.Key, errors.New("not a node/pool key"))
			continue
		}
		if !rest.decode(kv, &h) {
			continue
		}
		s.PoolHealth = append(s.PoolHealth, PoolCheck{Node: node, Pool: pool, Health: h})
	}
	s.Guests = <-guestsDone
	s.Skipped = slices.Concat(head.skipped, guests.skipped, rest.skipped)
	newer := cmp.Or(head.newer, guests.newer, rest.newer)
	state := <-stateCh
	if state.err != nil {
		return nil, fmt.Errorf("manager: the saved manager state is unreadable (fix or delete %s* to start from the configuration): %w", savedstate.PrefixManager, state.err)
	}
	s.State, s.Resume = state.st, state.r
	if newer != nil {
		return nil, fmt.Errorf("manager: %w", newer)
	}
	slices.Sort(s.Registered)
	slices.SortFunc(s.Live, func(a, b LiveNode) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(s.Domains, func(a, b model.Domain) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(s.Reports, func(a, b NodeReport) int {
		return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.Report.Guest, b.Report.Guest))
	})
	slices.SortFunc(s.Shutdowns, func(a, b manager.NodeShutdown) int { return cmp.Compare(a.Node, b.Node) })
	slices.SortFunc(s.Pools, func(a, b storage.Pool) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(s.PoolHealth, func(a, b PoolCheck) int {
		return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.Pool, b.Pool))
	})
	return s, nil
}
