package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/haven-ha/haven/internal/cluster"
)

// Event log limits of GET /api/v1/events.
const (
	DefaultEvents = 100
	MaxEvents     = 10000
)

func (o *Ops) registerEvents() {
	o.handle("GET", "/api/v1/events", RoleViewer, o.handleEvents)
	o.handleLong("GET", "/api/v1/events/stream", RoleViewer, o.handleEventStream)
}

// eventQuery reads n, guest, node and changes from the query string.
type eventQuery struct {
	n           int
	guest, node string
	// changes: the stream also says when a host's report about a guest
	// changed (its running state, the live status of its health checks),
	// which is no event of the log.
	changes bool
}

func parseEventQuery(r *http.Request, def int) (eventQuery, error) {
	q := eventQuery{n: def, guest: r.URL.Query().Get("guest"), node: r.URL.Query().Get("node")}
	switch s := r.URL.Query().Get("changes"); s {
	case "", "0", "false":
	case "1", "true":
		q.changes = true
	default:
		return q, Errorf(http.StatusBadRequest, "changes", "changes=%q: give 1 or 0", s)
	}
	if s := r.URL.Query().Get("n"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > MaxEvents {
			return q, Errorf(http.StatusBadRequest, "n", "n=%q: give a number of events from 0 to %d", s, MaxEvents)
		}
		q.n = n
	}
	return q, nil
}

func (q eventQuery) match(e cluster.Event) bool {
	return (q.guest == "" || e.Guest == q.guest) && (q.node == "" || e.Node == q.node)
}

// recent returns the last q.n matching events, oldest first, and the store
// revision they were read at.
func (o *Ops) recent(r *http.Request, q eventQuery) ([]cluster.Event, int64, error) {
	scan := q.n
	if q.guest != "" || q.node != "" {
		scan = MaxEvents
	}
	if scan == 0 {
		scan = 1 // for the revision
	}
	evs, rev, err := o.cl.Events(r.Context(), scan)
	if err != nil {
		return nil, 0, err
	}
	out := []cluster.Event{}
	for _, e := range evs {
		if q.match(e) {
			out = append(out, e)
		}
	}
	if len(out) > q.n {
		out = out[len(out)-q.n:]
	}
	return out, rev, nil
}

// handleEvents answers the last n events (default 100), oldest first,
// optionally only those of one guest or node.
func (o *Ops) handleEvents(w http.ResponseWriter, r *http.Request) {
	q, err := parseEventQuery(r, DefaultEvents)
	if err != nil {
		WriteError(w, err)
		return
	}
	evs, _, err := o.recent(r, q)
	if err != nil {
		writeErr(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, evs)
}

// StreamRecheck is how often a long-lived stream re-checks its caller's
// credential.
const StreamRecheck = 5 * time.Second

// streamWriteTimeout bounds each write of a stream.
const streamWriteTimeout = 30 * time.Second

// handleEventStream serves the event log as server-sent events: first the
// last n (default 0) events, then every new one as it is appended, each as
// "id: SEQ", "event: event" and "data: JSON"; a comment line every
// Heartbeat keeps proxies and clients from timing out. With changes=1, a
// change of a host's report about a guest is sent too, as "event: change"
// and "data: {"node":N,"guest":G}" (no id: it is not in the log).
func (o *Ops) handleEventStream(w http.ResponseWriter, r *http.Request) {
	q, err := parseEventQuery(r, 0)
	if err != nil {
		WriteError(w, err)
		return
	}
	// A reconnecting EventSource sends the id of the last event it saw:
	// resume after it (within the last MaxEvents).
	last := r.Header.Get("Last-Event-ID")
	if last != "" {
		q.n = MaxEvents
	}
	backlog, rev, err := o.recent(r, q)
	if err != nil {
		writeErr(w, err)
		return
	}
	if last != "" {
		i := sort.Search(len(backlog), func(i int) bool { return backlog[i].Seq > last })
		backlog = backlog[i:]
	}
	rc := http.NewResponseController(w)
	// The stream outlives the server's ReadTimeout: lift it (the request
	// has no body), and bound each write instead, so that a client that
	// stops reading is dropped.
	_ = rc.SetReadDeadline(time.Time{})
	writeDeadline := func() { _ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)) }
	writeDeadline()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(e cluster.Event) error {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "id: %s\nevent: event\ndata: %s\n\n", e.Seq, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if _, err := fmt.Fprint(w, ": haven event stream\n\n"); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	for _, e := range backlog {
		if send(e) != nil {
			return
		}
	}
	// The stream ends with the request or with the agent.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(o.cfg.Context, cancel)
	defer stop()
	evs := o.cl.WatchEvents(ctx, rev)
	var reports <-chan cluster.ReportChange // nil: never ready
	if q.changes {
		reports = o.cl.WatchReports(ctx, rev)
	}
	tick := time.NewTicker(o.cfg.Heartbeat)
	defer tick.Stop()
	// The caller's credential is checked again while the stream lasts: a
	// revoked or expired token, an ended session, a deleted user or a
	// lowered role closes it.
	recheck := time.NewTicker(min(o.cfg.Heartbeat, StreamRecheck))
	defer recheck.Stop()
	for {
		select {
		case e, ok := <-evs:
			if !ok {
				return
			}
			writeDeadline()
			if q.match(e) && send(e) != nil {
				return
			}
		case c, ok := <-reports:
			if !ok {
				return
			}
			if (q.guest != "" && c.Guest != q.guest) || (q.node != "" && c.Node != q.node) {
				continue
			}
			writeDeadline()
			b, _ := json.Marshal(c)
			if _, err := fmt.Fprintf(w, "event: change\ndata: %s\n\n", b); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		case <-recheck.C:
			if err := o.srv.Recheck(r, RoleViewer); err != nil {
				writeDeadline()
				b, _ := json.Marshal(map[string]string{"error": err.Error()})
				fmt.Fprintf(w, "event: end\ndata: %s\n\n", b)
				rc.Flush()
				return
			}
		case <-tick.C:
			writeDeadline()
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}
