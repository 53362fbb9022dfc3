package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/scenario"
)

// ExpectResult is the outcome of one expectation (or of the invariants).
type ExpectResult struct {
	Line int    `json:"line,omitempty"`
	Text string `json:"expect"`
	OK   bool   `json:"ok"`
	Seen string `json:"seen,omitempty"`
}

// Result is the outcome of one scenario run.
type Result struct {
	Scenario   *scenario.Scenario
	Timeline   []Line
	Expects    []ExpectResult // the scenario's, then one for the invariants
	Violations []string
	World      *World
}

// Passed and Failed count the expectations (the invariants count as one).
func (r *Result) Passed() int { return r.count(true) }

// Failed counts the expectations that did not hold.
func (r *Result) Failed() int { return r.count(false) }

func (r *Result) count(ok bool) int {
	n := 0
	for _, e := range r.Expects {
		if e.OK == ok {
			n++
		}
	}
	return n
}

func fmtT(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%.3fs", d.Seconds())
}

// Describe says what an expectation checks, in words.
func Describe(x scenario.Expect) string {
	when := "at " + fmtT(x.At)
	if x.AtEnd {
		when = "at end (" + fmtT(x.At) + ")"
	}
	if x.By {
		when = "by " + fmtT(x.At)
	}
	switch x.Kind {
	case scenario.ExpectGuest:
		s := fmt.Sprintf("%s: guest %s %s", when, x.Guest, x.State)
		if x.Node != "" {
			s += " on " + x.Node
		}
		return s
	case scenario.ExpectNode:
		return fmt.Sprintf("%s: node %s %s", when, x.Node, x.State)
	case scenario.ExpectFenced:
		if x.Times >= 0 {
			return fmt.Sprintf("node %s fenced exactly %d times", x.Node, x.Times)
		}
		return fmt.Sprintf("node %s fenced at least once", x.Node)
	case scenario.ExpectNeverStopped:
		return fmt.Sprintf("guest %s never stopped", x.Guest)
	}
	return fmt.Sprintf("node %s never fenced", x.Node)
}

func (w *World) eval(x scenario.Expect) (bool, string) {
	switch x.Kind {
	case scenario.ExpectGuest:
		g := w.mgr.Guest(x.Guest)
		seen := string(g.State)
		if g.Node != "" {
			seen += " on " + g.Node
		}
		return string(g.State) == x.State && (x.Node == "" || g.Node == x.Node), seen
	case scenario.ExpectNode:
		s := w.mgr.Node(x.Node).Reported()
		if w.mgrNode == "" && s == "online" {
			s = "offline" // no quorate cluster: no node is in it
		}
		return s == x.State, s
	case scenario.ExpectFenced:
		c := w.mgr.Node(x.Node).Fences
		return c > 0 && (x.Times < 0 || c == x.Times), fmt.Sprintf("fenced %d times", c)
	case scenario.ExpectNeverStopped:
		where := ""
		for _, n := range w.nodes {
			if v := n.vms[x.Guest]; v != nil && v.state != vmIncoming {
				where = n.name
			}
		}
		switch {
		case w.stopped[x.Guest]:
			return false, "it was stopped, crashed or lost"
		case where == "":
			return false, "it does not run at the end"
		}
		return true, ""
	}
	c := w.mgr.Node(x.Node).Fences
	return c == 0, fmt.Sprintf("fenced %d times", c)
}

// Run runs a scenario to its end and evaluates its expectations.
func Run(sc *scenario.Scenario, opt Options) *Result {
	w := New(sc, opt)
	res := &Result{Scenario: sc, World: w}
	res.Expects = make([]ExpectResult, len(sc.Expects))
	done := make([]bool, len(sc.Expects))
	var cps []time.Duration
	seenCP := map[time.Duration]bool{}
	for i, x := range sc.Expects {
		res.Expects[i] = ExpectResult{Line: x.Line, Text: Describe(x)}
		if (x.Kind == scenario.ExpectGuest || x.Kind == scenario.ExpectNode) && !x.By && !seenCP[x.At] {
			seenCP[x.At] = true
			cps = append(cps, x.At)
		}
	}
	sort.Slice(cps, func(a, b int) bool { return cps[a] < cps[b] })
	at := func(t time.Duration) {
		for i, x := range sc.Expects {
			if done[i] || x.By || x.At != t || (x.Kind != scenario.ExpectGuest && x.Kind != scenario.ExpectNode) {
				continue
			}
			ok, seen := w.eval(x)
			done[i] = true
			res.Expects[i].OK = ok
			if !ok {
				res.Expects[i].Seen = seen + " at " + fmtT(t)
			}
		}
	}
	after := func() {
		for i, x := range sc.Expects {
			if done[i] || !x.By || w.now > x.At {
				continue
			}
			ok, seen := w.eval(x)
			if ok {
				done[i] = true
				res.Expects[i].OK = true
				res.Expects[i].Seen = ""
			} else {
				res.Expects[i].Seen = seen + " at " + fmtT(w.now)
			}
		}
	}
	w.run(cps, at, after)
	for i, x := range sc.Expects {
		if x.Kind == scenario.ExpectFenced || x.Kind == scenario.ExpectNotFenced || x.Kind == scenario.ExpectNeverStopped {
			ok, seen := w.eval(x)
			res.Expects[i].OK = ok
			if !ok {
				res.Expects[i].Seen = seen
			}
		}
	}
	if w.Stopped {
		res.Expects = append(res.Expects, ExpectResult{Text: "the run reached its end", Seen: "stopped at " + fmtT(w.now)})
	}
	inv := ExpectResult{Text: "invariants held at every step", OK: len(w.Violations) == 0}
	if !inv.OK {
		inv.Seen = strings.Join(w.Violations, "; ")
	}
	res.Expects = append(res.Expects, inv)
	res.Timeline = w.Timeline
	res.Violations = w.Violations
	return res
}

// WriteText prints the timeline, one event a line (time, source, what
// happened), then one line per expectation.
func (r *Result) WriteText(out io.Writer) {
	fmt.Fprintf(out, "== %s: %s\n", r.Scenario.File, r.Scenario.Name)
	for _, l := range r.Timeline {
		fmt.Fprintf(out, "%9s  %-10s  %s\n", fmtT(l.T), l.Source, l.Msg)
	}
	for _, e := range r.Expects {
		if e.OK {
			fmt.Fprintf(out, "PASS  %s\n", e.Text)
		} else {
			fmt.Fprintf(out, "FAIL  %s: saw %s\n", e.Text, e.Seen)
		}
	}
}

type jsonLine struct {
	Scenario string  `json:"scenario"`
	T        float64 `json:"t"`
	Source   string  `json:"source"`
	Msg      string  `json:"msg"`
}

type jsonExpect struct {
	Scenario string `json:"scenario"`
	ExpectResult
}

// WriteJSON prints the timeline as JSON lines, then one object per
// expectation with ok and, when false, what was seen.
func (r *Result) WriteJSON(out io.Writer) {
	enc := json.NewEncoder(out)
	for _, l := range r.Timeline {
		_ = enc.Encode(jsonLine{Scenario: r.Scenario.File, T: l.T.Seconds(), Source: l.Source, Msg: l.Msg})
	}
	for _, e := range r.Expects {
		_ = enc.Encode(jsonExpect{Scenario: r.Scenario.File, ExpectResult: e})
	}
}
