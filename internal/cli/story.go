package cli

// `haven events --story`: each incident of the event log as one story,
// from the fault (a host failed) to every guest it ran running again,
// each step with its time since the fault.

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/cluster"
)

// Story is one incident: a host failed, was fenced, and its guests were
// started elsewhere.
type Story struct {
	Node  string          `json:"node"`
	Start time.Time       `json:"start"`
	Steps []cluster.Event `json:"steps"`
	// Fenced is when the host was fenced (zero if not in the log).
	Fenced time.Time `json:"fenced,omitzero"`
	// Recovered lists the guests started again, with when each ran.
	Recovered map[string]time.Time `json:"recovered,omitempty"`
	// Pending lists guests ordered to start that were not seen running.
	Pending []string `json:"pending,omitempty"`
}

var (
	// A host's fault: found dead by its peers (before its lease ends),
	// failed, or back with a new boot.
	reNodeFailed = regexp.MustCompile(`^(?:node (\S+) (?:failed|reports a new boot)|(\S+) is dead: )`)
	reStart      = regexp.MustCompile(`^start (\S+) on (\S+)`)
	reRunning    = regexp.MustCompile(`^(\S+) is running on (\S+)`)
	// The fence's own event, or the manager's (either may be missing: an
	// event write can fail while the store elects a leader).
	reFenced = regexp.MustCompile(`^(?:fenced (\S+):|node (\S+) is fenced$)`)
)

// stories groups events (in the log's order) into incidents. An incident
// opens when a host fails; it takes the events about that host and about
// the guests started while it is open, and closes once the host is
// fenced (or back) and every guest started meanwhile runs, or after
// storyMax.
func stories(evs []cluster.Event) []*Story {
	const storyMax = 15 * time.Minute
	var out []*Story
	var open []*Story
	pending := map[*Story]map[string]bool{}
	for _, e := range evs {
		if m := reNodeFailed.FindStringSubmatch(e.Msg); m != nil {
			node := m[1] + m[2]
			if s := openFor(open, node, e.At, storyMax); s != nil {
				// Found dead, then failed by the manager: one fault.
				s.Steps = append(s.Steps, e)
				continue
			}
			s := &Story{Node: node, Start: e.At, Recovered: map[string]time.Time{}}
			out, open = append(out, s), append(open, s)
			pending[s] = map[string]bool{}
			s.Steps = append(s.Steps, e)
			continue
		}
		var keep []*Story
		for _, s := range open {
			if e.At.Sub(s.Start) > storyMax {
				continue
			}
			if s.take(e, pending[s]) {
				s.Steps = append(s.Steps, e)
			}
			if s.done(pending[s]) {
				continue
			}
			keep = append(keep, s)
		}
		open = keep
	}
	for _, s := range out {
		for g := range pending[s] {
			s.Pending = append(s.Pending, g)
		}
	}
	return out
}

// openFor returns the story still open at t about node's fault, if any.
func openFor(open []*Story, node string, t time.Time, max time.Duration) *Story {
	for _, s := range open {
		if s.Node == node && t.Sub(s.Start) <= max {
			return s
		}
	}
	return nil
}

// take reports whether e belongs to the story, and notes what it says.
func (s *Story) take(e cluster.Event, pending map[string]bool) bool {
	about := func(node string) bool {
		return e.Node == node || strings.Contains(" "+e.Msg+" ", " "+node+" ") || strings.Contains(e.Msg, " "+node+":") || strings.Contains(e.Msg, " "+node+";") || strings.Contains(e.Msg, " "+node+",")
	}
	if m := reFenced.FindStringSubmatch(e.Msg); m != nil && m[1]+m[2] == s.Node {
		if s.Fenced.IsZero() {
			s.Fenced = e.At
		}
		return true
	}
	if m := reStart.FindStringSubmatch(e.Msg); m != nil && m[2] != s.Node {
		pending[m[1]] = true
		return true
	}
	if m := reRunning.FindStringSubmatch(e.Msg); m != nil && pending[m[1]] {
		delete(pending, m[1])
		s.Recovered[m[1]] = e.At
		return true
	}
	for g := range pending {
		if e.Guest == g || strings.HasPrefix(e.Msg, g+" ") {
			return true
		}
	}
	return about(s.Node)
}

func (s *Story) done(pending map[string]bool) bool {
	return !s.Fenced.IsZero() && len(s.Recovered) > 0 && len(pending) == 0
}

// printStories writes each story with its steps' times since the fault.
func printStories(w io.Writer, ss []*Story) {
	if len(ss) == 0 {
		fmt.Fprintln(w, "No incident (a host failing) in these events; show more with -n.")
		return
	}
	for i, s := range ss {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "Incident: host %s failed at %s\n", s.Node, fmtTime(s.Start))
		for _, e := range s.Steps {
			fmt.Fprintf(w, "  %+8.1fs  %s\n", e.At.Sub(s.Start).Seconds(), e.Msg)
		}
		var sum []string
		if !s.Fenced.IsZero() {
			sum = append(sum, fmt.Sprintf("fenced after %.1fs", s.Fenced.Sub(s.Start).Seconds()))
		}
		var last time.Time
		for _, at := range s.Recovered {
			if at.After(last) {
				last = at
			}
		}
		if len(s.Recovered) > 0 {
			sum = append(sum, fmt.Sprintf("%d guests running again after %.1fs", len(s.Recovered), last.Sub(s.Start).Seconds()))
		}
		if len(s.Pending) > 0 {
			sum = append(sum, fmt.Sprintf("not seen running yet: %s", strings.Join(s.Pending, ", ")))
		}
		if len(sum) > 0 {
			fmt.Fprintf(w, "  = %s\n", strings.Join(sum, "; "))
		}
	}
}
