package cluster

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/raft/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/haven-ha/haven/internal/fence"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/savedstate"
	"github.com/haven-ha/haven/internal/store"
)

// Command is an operator command queued for the manager, and its outcome.
type Command struct {
	ID      string          `json:"id"`
	Command manager.Command `json:"command"`
	Who     string          `json:"who,omitempty"`
	At      time.Time       `json:"at"`
	Done    bool            `json:"done"`
	Error   string          `json:"error,omitempty"`
}

// NewID returns a random identifier for a command.
func NewID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// QueueCommand stores a command for the manager and returns it with its ID.
func (s *Store) QueueCommand(ctx context.Context, c manager.Command, who string, now time.Time) (Command, error) {
	rec := Command{ID: NewID(), Command: c, Who: who, At: now}
	if _, err := s.cli.Put(ctx, KeyCommand(rec.ID), store.MustEncode(KeyCommand(rec.ID), rec)); err != nil {
		return rec, fmt.Errorf("queue command %q: %w", c, err)
	}
	return rec, nil
}

// WaitCommand waits until the manager has handled command id, or ctx ends.
func (s *Store) WaitCommand(ctx context.Context, id string) (Command, error) {
	key := KeyCommand(id)
	for {
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return Command{}, fmt.Errorf("read command %s: %w", id, err)
		}
		if len(resp.Kvs) == 0 {
			return Command{}, fmt.Errorf("command %s: %w", id, ErrNotFound)
		}
		var c Command
		if err := store.Decode(key, resp.Kvs[0].Value, &c); err != nil {
			return c, err
		}
		if c.Done {
			return c, nil
		}
		wctx, cancel := context.WithCancel(ctx)
		wch := s.cli.Watch(wctx, key, clientv3.WithRev(resp.Header.Revision+1))
		select {
		case <-wch:
		case <-ctx.Done():
		}
		cancel()
		if ctx.Err() != nil {
			return c, fmt.Errorf("waiting for the manager to handle %q: %w", c.Command, ctx.Err())
		}
	}
}

// PendingCommands lists commands the manager has not handled yet, oldest
// first.
func (s *Store) PendingCommands(ctx context.Context) ([]Command, int64, error) {
	resp, err := s.cli.Get(ctx, PrefixCommands, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("list commands: %w", err)
	}
	var out []Command
	for _, kv := range resp.Kvs {
		var c Command
		if err := store.Decode(string(kv.Key), kv.Value, &c); err != nil {
			return nil, 0, err
		}
		if !c.Done {
			out = append(out, c)
		}
	}
	return out, resp.Header.Revision, nil
}

// ManagerWriter is the manager's guarded writes (control.Writer).
//
// A guarded write that the store did not answer in time (it is electing a
// leader, say just after the old manager's host, which was also its leader,
// died) is tried again with a short backoff while the term lasts, for up to
// RetryFor, instead of ending the term: each try carries the election
// guard, so a retry can never write as a deposed manager, and every write
// is idempotent (the same keys, the same values). A write refused by the
// guard (the office is lost) ends the term at once, as before.
type ManagerWriter struct {
	L   *store.Leadership
	Cli *clientv3.Client
	// CommandTTL keeps handled commands this long for their callers.
	CommandTTL time.Duration
	// RetryFor bounds how long a guarded write is retried while the store
	// does not answer (default store.DefaultLeaseTTL: by then the term's
	// own lease would have expired in a store that answers).
	RetryFor time.Duration
	// Logger, when set, hears of the retries.
	Logger *slog.Logger

	saver  *savedstate.Saver
	legacy bool // KeepLegacyState
}

// do applies ops in one guarded transaction, trying again while the store
// does not answer in time and the term lasts, for up to RetryFor.
func (w *ManagerWriter) do(ctx context.Context, ops ...clientv3.Op) error {
	bound := w.RetryFor
	if bound <= 0 {
		bound = store.DefaultLeaseTTL
	}
	deadline := time.Now().Add(bound)
	wait := firstRetry
	for {
		_, err := w.L.Do(ctx, ops...)
		left := time.Until(deadline)
		if err == nil || !storeBusy(ctx, err) || w.L.Context().Err() != nil || left <= 0 {
			return err
		}
		if w.Logger != nil && wait == firstRetry {
			w.Logger.Warn("the store did not answer a manager write; trying again while this term lasts", "op", "manager", "err", err, "for", bound)
		}
		t := time.NewTimer(min(wait, left))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		case <-w.L.Done():
			t.Stop()
			return err
		}
		wait = min(2*wait, 400*time.Millisecond)
	}
}

const firstRetry = 25 * time.Millisecond

// storeBusy reports whether err says the store did not answer in time or
// could not be reached (etcd's "request timed out", "leader changed", "no
// leader", a lost connection: all Unavailable; raft's "proposal dropped"),
// as opposed to an answer (the guard failed, a request refused) or the end
// of ctx.
func storeBusy(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, store.ErrNotLeader) || errors.Is(err, store.ErrConflict) {
		return false
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable
	}
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		s := gs.GRPCStatus()
		// raft's ErrProposalDropped (a leader transfer or election in
		// progress) reaches the client as code Unknown: nothing was written.
		return s.Code() == codes.Unavailable || s.Code() == codes.DeadlineExceeded || (s.Code() == codes.Unknown && s.Message() == raft.ErrProposalDropped.Error())
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// PutOrder writes an order for node.
func (w *ManagerWriter) PutOrder(ctx context.Context, node string, o hostctl.Order) error {
	return w.do(ctx, clientv3.OpPut(KeyOrder(node, o.Guest), store.MustEncode(KeyOrder(node, o.Guest), o)))
}

// PutOrders writes many orders in as few guarded transactions as etcd's
// limits allow (ordersPerTxn each).
func (w *ManagerWriter) PutOrders(ctx context.Context, orders []NodeOrder) error {
	for len(orders) > 0 {
		n := min(len(orders), ordersPerTxn)
		ops := make([]clientv3.Op, n)
		for i, o := range orders[:n] {
			ops[i] = clientv3.OpPut(KeyOrder(o.Node, o.Order.Guest), store.MustEncode(KeyOrder(o.Node, o.Order.Guest), o.Order))
		}
		if err := w.do(ctx, ops...); err != nil {
			return err
		}
		orders = orders[n:]
	}
	return nil
}

// ordersPerTxn keeps a batch of orders under etcd's default limits: 128
// operations and 1.5 MiB per request.
const ordersPerTxn = 64

// NodeOrder is an order and the node it is for.
type NodeOrder struct {
	Node  string
	Order hostctl.Order
}

// SaveState saves the manager core's state: the first save of a term
// writes it whole, later ones what changed (package savedstate).
func (w *ManagerWriter) SaveState(ctx context.Context, s *manager.State) error {
	if w.saver == nil {
		write := w.do
		keys := func(ctx context.Context, prefix string) ([]string, error) {
			resp, err := w.Cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
			if err != nil {
				return nil, err
			}
			out := make([]string, len(resp.Kvs))
			for i, kv := range resp.Kvs {
				out[i] = string(kv.Key)
			}
			return out, nil
		}
		w.saver = savedstate.NewSaver(write, keys, uint64(w.L.Rev()))
	}
	w.saver.Legacy = w.legacy
	return w.saver.Save(ctx, s)
}

// KeepLegacyState makes the following saves also write (on) or no longer
// write (off) the state in the previous release's format
// (savedstate.Saver.Legacy; control.LegacyStateWriter).
func (w *ManagerWriter) KeepLegacyState(on bool) { w.legacy = on }

// ShutdownReady tells node its graceful shutdown may proceed.
func (w *ManagerWriter) ShutdownReady(ctx context.Context, node string) error {
	return w.do(ctx, clientv3.OpPut(PrefixShutdownReady+node, time.Now().UTC().Format(time.RFC3339Nano)))
}

// CommandDone records a command's outcome; the record expires later.
func (w *ManagerWriter) CommandDone(ctx context.Context, id string, cmdErr error) error {
	resp, err := w.Cli.Get(ctx, KeyCommand(id))
	if err != nil {
		return fmt.Errorf("read command %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	var c Command
	if err := store.Decode(KeyCommand(id), resp.Kvs[0].Value, &c); err != nil {
		return err
	}
	c.Done = true
	if cmdErr != nil {
		c.Error = cmdErr.Error()
	}
	ttl := w.CommandTTL
	if ttl == 0 {
		ttl = 10 * time.Minute
	}
	lease, err := w.Cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return fmt.Errorf("grant lease for command %s: %w", id, err)
	}
	return w.do(ctx, clientv3.OpPut(KeyCommand(id), store.MustEncode(KeyCommand(id), c), clientv3.WithLease(lease.ID)))
}

// ManagerState reads the saved manager state (ErrNotFound before the first
// manager saved one).
func (s *Store) ManagerState(ctx context.Context) (*manager.State, error) {
	st, _, err := savedstate.Read(ctx, s.cli)
	if err == nil && st == nil {
		return nil, ErrNotFound
	}
	return st, err
}

// StoredOrder is an order and the store revision that wrote it.
type StoredOrder struct {
	Order hostctl.Order
	Rev   int64
}

// Orders lists the current orders for node, and the revision read at.
func (s *Store) Orders(ctx context.Context, node string) ([]StoredOrder, int64, error) {
	resp, err := s.cli.Get(ctx, PrefixOrders+node+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list orders for node %q: %w", node, err)
	}
	var out []StoredOrder
	for _, kv := range resp.Kvs {
		var o hostctl.Order
		if err := store.Decode(string(kv.Key), kv.Value, &o); err != nil {
			return nil, 0, err
		}
		out = append(out, StoredOrder{Order: o, Rev: kv.ModRevision})
	}
	return out, resp.Header.Revision, nil
}

// Reports lists every agent's guest reports, by node.
func (s *Store) Reports(ctx context.Context) (map[string][]hostctl.Report, int64, error) {
	resp, err := s.cli.Get(ctx, PrefixReports, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list guest reports: %w", err)
	}
	out := map[string][]hostctl.Report{}
	for _, kv := range resp.Kvs {
		node, _, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), PrefixReports), "/")
		if !ok {
			continue
		}
		var r hostctl.Report
		if err := store.Decode(string(kv.Key), kv.Value, &r); err != nil {
			return nil, 0, err
		}
		out[node] = append(out[node], r)
	}
	return out, resp.Header.Revision, nil
}

// Report reads node's report about guest (ErrNotFound when there is none).
func (s *Store) Report(ctx context.Context, node, guest string) (hostctl.Report, error) {
	var r hostctl.Report
	_, err := getJSON(ctx, s.cli, KeyReport(node, guest), &r)
	return r, err
}

// ReportFromKey splits a report key into node and guest.
func ReportFromKey(key string) (node, guest string, ok bool) {
	return strings.Cut(strings.TrimPrefix(key, PrefixReports), "/")
}

// FenceConfig reads the fence configuration (empty when never set). It is
// sealed in the store with the cluster secret key: its devices' passwords
// open only on a current host.
func (s *Store) FenceConfig(ctx context.Context) (fence.Config, error) {
	var c fence.Config
	b, err := s.st.GetSealed(ctx, KeyFenceConfig)
	if errors.Is(err, ErrNotFound) {
		return fence.Config{}, nil
	}
	if err != nil {
		return c, fmt.Errorf("read the fence configuration: %w", err)
	}
	if err := store.Decode(KeyFenceConfig, b, &c); err != nil {
		return c, fmt.Errorf("the fence configuration: %w", err)
	}
	return c, nil
}

// SetFenceConfig writes the fence configuration, sealed, after checking it.
func (s *Store) SetFenceConfig(ctx context.Context, c fence.Config) error {
	if err := c.Check(); err != nil {
		return err
	}
	// A newer agent's configuration is not replaced by one that lacks
	// what it does not know.
	if old, err := s.st.GetSealed(ctx, KeyFenceConfig); err == nil {
		if err := store.CheckSchema(KeyFenceConfig, old); err != nil {
			return err
		}
	}
	return s.st.PutSealed(ctx, KeyFenceConfig, []byte(store.MustEncode(KeyFenceConfig, c)))
}

// Event is one line of the cluster's event and audit log.
type Event struct {
	Seq   string    `json:"seq"`
	At    time.Time `json:"at"`
	Kind  string    `json:"kind"` // manager, node, guest, fence, operator
	Node  string    `json:"node,omitempty"`
	Guest string    `json:"guest,omitempty"`
	Who   string    `json:"who,omitempty"` // the operator, for operator actions
	Msg   string    `json:"msg"`
	// Rev is the store revision that recorded the event: the cluster's own
	// clock, one order for every writer whatever the hosts' clocks say.
	// Events are listed in Rev order.
	Rev int64 `json:"rev,omitempty"`
}

// AddEvent appends to the event log.
func (s *Store) AddEvent(ctx context.Context, e Event) error {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	e.Seq = fmt.Sprintf("%020d-%s", e.At.UnixNano(), NewID()[:6])
	_, err := s.cli.Put(ctx, PrefixEvents+e.Seq, store.MustEncode(PrefixEvents+e.Seq, e))
	return err
}

// AddEvents appends several events in as few transactions as etcd's
// limits allow.
func (s *Store) AddEvents(ctx context.Context, evs []Event) error {
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := s.cli.Txn(ctx).Then(ops...).Commit()
		ops = ops[:0]
		return err
	}
	var prev time.Time
	for _, e := range evs {
		if e.At.IsZero() {
			e.At = time.Now()
		}
		// The events of one batch share a revision: keep their order in
		// their keys (a step's events all have the step's time).
		if !e.At.After(prev) && !prev.IsZero() {
			e.At = prev.Add(time.Nanosecond)
		}
		prev = e.At
		e.Seq = fmt.Sprintf("%020d-%s", e.At.UnixNano(), NewID()[:6])
		ops = append(ops, clientv3.OpPut(PrefixEvents+e.Seq, store.MustEncode(PrefixEvents+e.Seq, e)))
		if len(ops) == ordersPerTxn {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// decodeEvent reads an event record; one it cannot read (a newer schema,
// say) is shown as an event saying so, not left out.
func decodeEvent(key, val []byte) Event {
	var e Event
	if err := store.Decode(string(key), val, &e); err != nil {
		return Event{Seq: strings.TrimPrefix(string(key), PrefixEvents), Kind: "unreadable", Msg: err.Error()}
	}
	return e
}

// Events returns the last n events in the order the store recorded them
// (Rev; the events of one AddEvents share a revision), oldest first.
func (s *Store) Events(ctx context.Context, n int) ([]Event, int64, error) {
	resp, err := s.cli.Get(ctx, PrefixEvents, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(int64(n)))
	if err != nil {
		return nil, 0, fmt.Errorf("read events: %w", err)
	}
	out := make([]Event, 0, len(resp.Kvs))
	for i := len(resp.Kvs) - 1; i >= 0; i-- {
		e := decodeEvent(resp.Kvs[i].Key, resp.Kvs[i].Value)
		e.Rev = resp.Kvs[i].CreateRevision
		out = append(out, e)
	}
	// One batch (AddEvents) shares a revision: its keys keep its order.
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Rev != out[j].Rev {
			return out[i].Rev < out[j].Rev
		}
		return out[i].Seq < out[j].Seq
	})
	return out, resp.Header.Revision, nil
}

// WatchEvents delivers events appended after rev until ctx ends.
func (s *Store) WatchEvents(ctx context.Context, rev int64) <-chan Event {
	return watchPrefix(ctx, s.cli, PrefixEvents, rev, func(ev *clientv3.Event) (Event, bool) {
		if ev.Type != clientv3.EventTypePut || ev.IsModify() {
			return Event{}, false
		}
		e := decodeEvent(ev.Kv.Key, ev.Kv.Value)
		e.Rev = ev.Kv.CreateRevision
		return e, true
	})
}

// watchPrefix sends what conv makes of each change under prefix after
// revision rev (the changes it refuses are skipped), until ctx ends.
func watchPrefix[T any](ctx context.Context, cli *clientv3.Client, prefix string, rev int64, conv func(*clientv3.Event) (T, bool)) <-chan T {
	out := make(chan T, 64)
	go func() {
		defer close(out)
		for wr := range cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			for _, ev := range wr.Events {
				v, ok := conv(ev)
				if !ok {
					continue
				}
				select {
				case out <- v:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// ReportChange says that a host's report about a guest was written or
// removed: the guest's running state or the live status of its health
// checks may have changed.
type ReportChange struct {
	Node  string `json:"node"`
	Guest string `json:"guest"`
}

// WatchReports sends a ReportChange for every write or removal of a guest
// report after revision rev, until ctx ends.
func (s *Store) WatchReports(ctx context.Context, rev int64) <-chan ReportChange {
	return watchPrefix(ctx, s.cli, PrefixReports, rev, func(ev *clientv3.Event) (ReportChange, bool) {
		node, guest, ok := ReportFromKey(string(ev.Kv.Key))
		return ReportChange{Node: node, Guest: guest}, ok
	})
}

// TrimEvents deletes all but the newest keep events.
func (s *Store) TrimEvents(ctx context.Context, keep int) error {
	resp, err := s.cli.Get(ctx, PrefixEvents, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(keep)+1))
	if err != nil || len(resp.Kvs) <= keep {
		return err
	}
	oldest := string(resp.Kvs[keep].Key)
	_, err = s.cli.Delete(ctx, PrefixEvents, clientv3.WithRange(oldest+"\x00"))
	return err
}

// Incident is a manager step that failed on an internal error: what a
// post-mortem needs. The manager writes it, raises an alert event and
// resigns; the store keeps the state before the step.
type Incident struct {
	At        time.Time       `json:"at"`
	Node      string          `json:"node"`
	Term      int64           `json:"term"`
	EventType string          `json:"event_type"`
	Event     json.RawMessage `json:"event"`
	Panic     string          `json:"panic"`
	Stack     string          `json:"stack"`
	// State is the manager state as the failed step left it (gzip JSON
	// when stored).
	State json.RawMessage `json:"state"`
}

// IncidentsKept is how many incidents the store keeps.
const IncidentsKept = 20

// AddIncident stores an incident (its state compressed) and returns its
// key; only the newest IncidentsKept are kept.
func (s *Store) AddIncident(ctx context.Context, in Incident) (string, error) {
	if in.At.IsZero() {
		in.At = time.Now()
	}
	key := fmt.Sprintf("%s%020d-%s", PrefixIncidents, in.At.UnixNano(), NewID()[:6])
	rec, err := store.Encode(key, in)
	if err != nil {
		return "", fmt.Errorf("encode incident: %w", err)
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	zw.Write(rec)
	zw.Close()
	if _, err := s.cli.Put(ctx, key, buf.String()); err != nil {
		return "", fmt.Errorf("store incident: %w", err)
	}
	resp, err := s.cli.Get(ctx, PrefixIncidents, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(IncidentsKept+1))
	if err == nil && len(resp.Kvs) > IncidentsKept {
		_, err = s.cli.Delete(ctx, PrefixIncidents, clientv3.WithRange(string(resp.Kvs[IncidentsKept].Key)+"\x00"))
	}
	return key, err
}

// Incidents reads the stored incidents, oldest first.
func (s *Store) Incidents(ctx context.Context) ([]Incident, error) {
	resp, err := s.cli.Get(ctx, PrefixIncidents, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("read incidents: %w", err)
	}
	var out []Incident
	for _, kv := range resp.Kvs {
		zr, err := gzip.NewReader(bytes.NewReader(kv.Value))
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		rec, err := io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		var in Incident
		if err := store.Decode(string(kv.Key), rec, &in); err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, nil
}
