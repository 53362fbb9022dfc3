package cluster

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store"
)

// Command is an operator command queued for the manager, and its outcome.
type Command struct {
	ID      string        `json:"id"`
	Command model.Command `json:"command"`
	Who     string        `json:"who,omitempty"`
	At      time.Time     `json:"at"`
	Done    bool          `json:"done"`
	Error   string        `json:"error,omitempty"`
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
func (s *Store) QueueCommand(ctx context.Context, c model.Command, who string, now time.Time) (Command, error) {
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

// ReportFromKey splits a report key into node and guest.
func ReportFromKey(key string) (node, guest string, ok bool) {
	return strings.Cut(strings.TrimPrefix(key, PrefixReports), "/")
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
		if len(ops) == OpsPerTxn {
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
