package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
)

// RecordVersion is the format of a term's recording.
const RecordVersion = 1

// Record is one line of a manager term's recording (JSON lines). The first
// line holds the state the term started from, the migrations it took over
// and its Sync; every later line one input as it was stepped (an Input, a
// fence result or a timer tick), or the actions a step produced. Every
// line carries the moment it was handled: a replay steps at that moment.
type Record struct {
	Version    int                  `json:"v,omitempty"`
	At         time.Time            `json:"at"`
	State      *manager.State       `json:"state,omitempty"`
	Migrations []MigrationRecord    `json:"migrations,omitempty"`
	Sync       *manager.Sync        `json:"sync,omitempty"`
	Input      *Input               `json:"input,omitempty"`
	Fence      *manager.FenceResult `json:"fence,omitempty"`
	Tick       bool                 `json:"tick,omitempty"`
	// Decided marks the actions of one step (none is a decision too).
	Decided bool     `json:"decided,omitempty"`
	Actions []string `json:"actions,omitempty"`
}

// MigrationRecord is a live migration the shell tracks.
type MigrationRecord struct {
	Op     uint64    `json:"op"`
	Guest  string    `json:"guest"`
	Src    string    `json:"src"`
	Dst    string    `json:"dst"`
	Target string    `json:"target,omitempty"`
	Sent   bool      `json:"sent,omitempty"`
	Since  time.Time `json:"since"`
}

func (s *Shell) record(r Record) {
	if s.cfg.Record == nil {
		return
	}
	r.At = s.now()
	if r.State != nil {
		r.Version = RecordVersion
	}
	s.cfg.Record(r)
}

func actionStrings(acts []manager.Action) []string {
	out := make([]string, 0, len(acts))
	for _, a := range acts {
		if a.Kind == manager.ActPersist {
			continue
		}
		out = append(out, a.String())
	}
	return out
}

// Recorder writes a term's records as JSON lines. It is safe for the
// shell's goroutine; Err reports the first write error.
type Recorder struct {
	mu  sync.Mutex
	w   *bufio.Writer
	c   io.Closer
	err error
}

// NewRecorder records to w (closed by Close when it is an io.Closer).
func NewRecorder(w io.Writer) *Recorder {
	r := &Recorder{w: bufio.NewWriterSize(w, 64<<10)}
	if c, ok := w.(io.Closer); ok {
		r.c = c
	}
	return r
}

// Record writes one record (Config.Record).
func (r *Recorder) Record(rec Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return
	}
	b, err := json.Marshal(rec)
	if err != nil {
		r.err = fmt.Errorf("encode record: %w", err)
		return
	}
	b = append(b, '\n')
	if _, err := r.w.Write(b); err != nil {
		r.err = err
		return
	}
	// Flush at every input, so that a recording is complete up to the
	// moment the manager died.
	if !rec.Decided {
		r.err = r.w.Flush()
	}
}

// Close flushes and closes the recording.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.w.Flush()
	if r.c != nil {
		if cerr := r.c.Close(); err == nil {
			err = cerr
		}
	}
	return errors.Join(r.err, err)
}

// ReplayResult is what a replay found.
type ReplayResult struct {
	Steps     int // inputs stepped
	Decisions int // steps whose actions were compared
	Diverged  int // of those, steps whose actions differ from the recording
}

// Replay runs a recording through the same core and shell, at the recorded
// moments, with writers that only print: every input and the decisions
// the core and shell took are written to w, and each step's actions are
// compared with the recorded ones ("!=" marks a divergence). The fence
// results and timer ticks come from the recording; fence devices are not
// called and definitions are not read (orders carry an empty definition).
func Replay(ctx context.Context, r io.Reader, w io.Writer) (ReplayResult, error) {
	var res ReplayResult
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<30)
	line := 0
	next := func() (*Record, error) {
		if !sc.Scan() {
			return nil, sc.Err()
		}
		line++
		var rec Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		return &rec, nil
	}
	first, err := next()
	if err != nil {
		return res, fmt.Errorf("read recording: %w", err)
	}
	if first == nil || first.State == nil || first.Sync == nil {
		return res, fmt.Errorf("read recording: line 1 does not start a term (no state and sync)")
	}
	if first.Version != RecordVersion {
		return res, fmt.Errorf("read recording: format version %d, this haven replays version %d", first.Version, RecordVersion)
	}
	raw, err := json.Marshal(first.State)
	if err != nil {
		return res, err
	}
	st, err := manager.Restore(raw)
	if err != nil {
		return res, fmt.Errorf("read recording: line 1: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pw := &printWriter{w: w}
	clock := first.At
	var produced [][]string
	sh := New(Config{
		State: st, Writer: pw, Fencer: replayFencer{}, Defs: replayDefs{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:    func() time.Time { return clock },
		// The shell records only actions outside Run: the same steps the
		// recording has actions for.
		Record: func(r Record) {
			if r.Decided {
				produced = append(produced, r.Actions)
			}
		},
	})
	sh.Resume(first.Migrations)
	fmt.Fprintf(w, "term from %s: %d nodes, %d guests, %d migrations in flight\n", first.At.Format(time.RFC3339Nano), len(st.Nodes), len(st.Guests), len(first.Migrations))
	stamp := func() string { return clock.Format("15:04:05.000") }
	run := func(what string, f func() error) error {
		fmt.Fprintf(w, "%s  %s\n", stamp(), what)
		res.Steps++
		if err := f(); err != nil {
			return fmt.Errorf("line %d: %s: %w", line, what, err)
		}
		return nil
	}
	if err := run("sync "+syncString(*first.Sync), func() error { return sh.then(ctx, sh.Start(ctx, clock, *first.Sync)) }); err != nil {
		return res, err
	}
	for {
		rec, err := next()
		if err != nil {
			return res, fmt.Errorf("read recording: %w", err)
		}
		if rec == nil {
			break
		}
		if rec.Decided {
			res.Decisions++
			var got []string
			if len(produced) > 0 {
				got, produced = produced[0], produced[1:]
			}
			if slices.Equal(got, rec.Actions) {
				for _, a := range got {
					fmt.Fprintf(w, "    %s\n", a)
				}
			} else {
				res.Diverged++
				fmt.Fprintf(w, "    != recorded: %s\n    != replayed: %s\n", strings.Join(rec.Actions, "; "), strings.Join(got, "; "))
			}
			continue
		}
		clock = rec.At
		switch {
		case rec.Input != nil:
			in := *rec.Input
			err = run("input "+inputString(in), func() error { return sh.Handle(ctx, clock, in) })
		case rec.Fence != nil:
			fr := *rec.Fence
			err = run(fmt.Sprintf("fence result %s attempt %d ok=%v %s", fr.Node, fr.Attempt, fr.OK, fr.Err), func() error { return sh.HandleFence(ctx, clock, fr) })
		case rec.Tick:
			err = run("tick", func() error { return sh.HandleTick(ctx, clock) })
		default:
			return res, fmt.Errorf("read recording: line %d: neither an input, a fence result, a tick nor actions", line)
		}
		if err != nil {
			return res, err
		}
	}
	for _, extra := range produced {
		res.Diverged++
		fmt.Fprintf(w, "    != not recorded: %s\n", strings.Join(extra, "; "))
	}
	return res, nil
}

func syncString(s manager.Sync) string {
	var parts []string
	for _, n := range s.Nodes {
		parts = append(parts, fmt.Sprintf("%s(%d running)", n.Name, len(n.Running)))
	}
	return strings.Join(parts, " ")
}

func inputString(in Input) string {
	switch {
	case in.NodeUp != nil:
		return "node up " + in.NodeUp.Name
	case in.NodeDown != "":
		return "node down " + in.NodeDown
	case in.NodeLeft != "":
		return "node left " + in.NodeLeft
	case in.NodeGone != "":
		return "node gone " + in.NodeGone
	case in.Shutdown != nil:
		return "shutdown " + in.Shutdown.Node
	case in.Report != nil:
		r := in.Report.Report
		s := fmt.Sprintf("report %s/%s %s", in.Report.Node, r.Guest, r.State)
		if r.OrderID != "" {
			s += fmt.Sprintf(" order %s %s %s", r.OrderID, r.Op, r.Result)
		}
		return s
	case in.Command != nil:
		return fmt.Sprintf("command %v", *in.Command)
	case in.Inventory != nil:
		return fmt.Sprintf("inventory %s %v", in.Inventory.Node, in.Inventory.Running)
	case in.Config != nil:
		b, _ := json.Marshal(in.Config)
		return "config " + string(b)
	}
	return "nothing"
}

// printWriter is the replay's Writer: it prints orders and saves nothing.
type printWriter struct{ w io.Writer }

func (p *printWriter) PutOrder(ctx context.Context, node string, o hostctl.Order) error {
	fmt.Fprintf(p.w, "    -> order %s %s on %s (%s)\n", o.Op, o.Guest, node, o.ID)
	return nil
}
func (p *printWriter) SaveState(ctx context.Context, s *manager.State) error { return nil }
func (p *printWriter) ShutdownReady(ctx context.Context, node string) error {
	fmt.Fprintf(p.w, "    -> shutdown of %s may proceed\n", node)
	return nil
}
func (p *printWriter) CommandDone(ctx context.Context, id string, err error) error {
	fmt.Fprintf(p.w, "    -> command %s done (%v)\n", id, err)
	return nil
}

// replayFencer never answers: a replay takes fence results from the
// recording.
type replayFencer struct{}

func (replayFencer) Fence(ctx context.Context, node string) error {
	<-ctx.Done()
	return ctx.Err()
}

type replayDefs struct{}

func (replayDefs) Definition(guest, node string) (guestdef.Definition, error) {
	return guestdef.Definition{Name: guest}, nil
}
