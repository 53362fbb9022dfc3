package manager

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"
)

// WhatIfDurations are the times a what-if assumes for the world's actions
// (the simulator's: docs/scenarios.md).
type WhatIfDurations struct {
	Fence   time.Duration `json:"fence"`
	Start   time.Duration `json:"start"`
	Stop    time.Duration `json:"stop"`
	Migrate time.Duration `json:"migrate"`
}

// DefaultWhatIfDurations: fence 2 s, start 2 s, stop 2 s, live migration 5 s.
func DefaultWhatIfDurations() WhatIfDurations {
	return WhatIfDurations{Fence: 2 * time.Second, Start: 2 * time.Second, Stop: 2 * time.Second, Migrate: 5 * time.Second}
}

// WhatIfGuest is one guest's fate in a what-if.
type WhatIfGuest struct {
	Guest string `json:"guest"`
	From  string `json:"from"`           // where it runs (or is recorded) now
	To    string `json:"to,omitempty"`   // where it runs at the end (empty: nowhere)
	State string `json:"state"`          // its state at the end
	Wait  string `json:"wait,omitempty"` // why it waits, when it does
	// After is how long after the failure (or the maintenance command) it
	// runs on To: restarted there, or (Moved) arrived by live migration.
	After time.Duration `json:"after,omitempty"`
	// Moved: it was moved live (evacuation, failback) without stopping.
	Moved bool `json:"moved,omitempty"`
}

// WhatIf is the answer to "what if these nodes failed" (or were put in
// maintenance): the real manager core run on a copy of the state, with every
// fence, start, stop and migration succeeding after WhatIfDurations, and no
// other change.
type WhatIf struct {
	Down        []string      `json:"down"`
	Maintenance bool          `json:"maintenance"`
	Guests      []WhatIfGuest `json:"guests"` // every guest whose placement changes or that waits, by name
	// Recovered is how long after the failure the last guest that had
	// stopped runs again (0: none); it includes the lease TTL it takes to
	// notice the failure.
	Recovered time.Duration `json:"recovered"`
	Waiting   int           `json:"waiting"` // guests that should run and do not at the end
	Admission Admission     `json:"admission"`
	// Evacuated (maintenance): every guest left the nodes.
	Evacuated  bool        `json:"evacuated"`
	Violations []Violation `json:"violations,omitempty"`
	Log        []string    `json:"log"` // the manager's decisions, with times
}

// ErrWhatIf wraps a what-if request that cannot be answered.
var ErrWhatIf = fmt.Errorf("what-if")

// RunWhatIf answers what happens when the nodes in down fail at now (their
// leases expire after LeaseTTL; each is fenced), or, with maintenance, when
// they are put in maintenance at now. Operations and fences in flight
// succeed (except on the failing nodes). s is not changed.
func RunWhatIf(s *State, now time.Time, down []string, maintenance bool, d WhatIfDurations) (*WhatIf, error) {
	if len(down) == 0 {
		return nil, fmt.Errorf("%w: name at least one node", ErrWhatIf)
	}
	for _, n := range down {
		node := s.node(n)
		if node == nil {
			return nil, fmt.Errorf("%w: node %q: %w", ErrWhatIf, n, ErrUnknownNode)
		}
		if !maintenance && node.Status != NodeOnline {
			return nil, fmt.Errorf("%w: node %q is %s already", ErrWhatIf, n, node.Reported())
		}
		if maintenance && node.Maintenance {
			return nil, fmt.Errorf("%w: node %q: %w", ErrWhatIf, n, ErrInMaintenance)
		}
	}
	data, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("%w: copy state: %w", ErrWhatIf, err)
	}
	c, err := Restore(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWhatIf, err)
	}
	type ev struct {
		at time.Time
		e  Event
	}
	out := &WhatIf{Down: slices.Clone(down), Maintenance: maintenance}
	before := map[string]string{}
	wasRunning := map[string]bool{}
	for _, g := range c.Guests {
		before[g.Spec.Name] = g.Node
		wasRunning[g.Spec.Name] = g.Running
	}
	start := now
	var queue []ev
	if maintenance {
		for _, n := range down {
			queue = append(queue, ev{now, Command{Kind: CmdMaintenanceOn, Node: n}})
		}
	} else {
		start = now.Add(c.Config.Timings.LeaseTTL)
		for _, n := range down {
			queue = append(queue, ev{start, NodeDown{Node: n}})
		}
	}
	dead := map[string]bool{}
	if !maintenance {
		for _, n := range down {
			dead[n] = true
		}
	}
	// Operations already in flight succeed (on nodes that stay up).
	for _, g := range c.Guests {
		op := g.Op
		if op == nil || dead[op.Node] {
			continue
		}
		switch op.Kind {
		case OpStart:
			queue = append(queue, ev{now.Add(d.Start), GuestResult{Guest: g.Spec.Name, Node: op.Node, Op: op.ID, Result: ResultStarted}})
		case OpStop:
			queue = append(queue, ev{now.Add(d.Stop), GuestResult{Guest: g.Spec.Name, Node: op.Node, Op: op.ID, Result: ResultStopped}})
		case OpMigrate:
			if !dead[op.Target] {
				queue = append(queue, ev{now.Add(d.Migrate), GuestResult{Guest: g.Spec.Name, Node: op.Node, Op: op.ID, Result: ResultMigrated}})
			}
		}
	}
	for _, n := range c.Nodes {
		if n.Status == NodeFailed && n.Fence != nil && n.Fence.InFlight {
			queue = append(queue, ev{now.Add(d.Fence), FenceResult{Node: n.Name, Attempt: n.Fence.Attempt, OK: true, At: now.Add(d.Fence)}})
		}
	}
	ready := map[string]time.Time{}
	moved := map[string]bool{}
	t := now
	for steps := 0; steps < 100000; steps++ {
		if len(queue) == 0 {
			nt, ok := c.NextTimer()
			if !ok || nt.Sub(start) > time.Hour {
				break
			}
			if nt.Before(t) {
				nt = t
			}
			queue = append(queue, ev{nt, Tick{}})
		}
		sort.SliceStable(queue, func(i, j int) bool { return queue[i].at.Before(queue[j].at) })
		x := queue[0]
		queue = queue[1:]
		t = x.at
		for _, a := range c.Step(t, x.e) {
			at := t.Sub(start).Round(time.Millisecond)
			switch a.Kind {
			case ActLog, ActReject:
				out.Log = append(out.Log, fmt.Sprintf("+%s %s", at, a.Msg))
				continue
			case ActPersist:
				continue
			}
			out.Log = append(out.Log, fmt.Sprintf("+%s %s", at, a))
			switch a.Kind {
			case ActFence:
				queue = append(queue, ev{t.Add(d.Fence), FenceResult{Node: a.Node, Attempt: a.Op, OK: true, At: t.Add(d.Fence)}})
			case ActStart:
				if dead[a.Node] {
					continue
				}
				queue = append(queue, ev{t.Add(d.Start), GuestResult{Guest: a.Guest, Node: a.Node, Op: a.Op, Result: ResultStarted}})
			case ActStop:
				if dead[a.Node] {
					continue
				}
				queue = append(queue, ev{t.Add(d.Stop), GuestResult{Guest: a.Guest, Node: a.Node, Op: a.Op, Result: ResultStopped}})
			case ActMigrate:
				if dead[a.Node] || dead[a.Target] {
					continue
				}
				queue = append(queue, ev{t.Add(d.Migrate), GuestResult{Guest: a.Guest, Node: a.Node, Op: a.Op, Result: ResultMigrated}})
			}
		}
		// Note when guests run again.
		for _, g := range c.Guests {
			if g.Running && g.Op == nil && g.Node != before[g.Spec.Name] {
				if _, ok := ready[g.Spec.Name]; !ok {
					ready[g.Spec.Name] = t
					// A live migration keeps RunningSince: it never stopped.
					moved[g.Spec.Name] = wasRunning[g.Spec.Name] && g.RunningSince.Before(now)
				}
			}
		}
	}
	out.Evacuated = true
	for _, g := range c.Guests {
		name := g.Spec.Name
		changed := g.Node != before[name] || (!g.Running && wasRunning[name])
		waits := g.State == GuestRecovering || g.State == GuestFencing
		stays := maintenance && g.Running && slices.Contains(down, g.Node)
		if !changed && !waits && !stays {
			continue
		}
		wg := WhatIfGuest{Guest: name, From: before[name], State: string(g.State), Wait: g.Wait}
		if g.Running {
			wg.To = g.Node
			if r, ok := ready[name]; ok {
				wg.After = r.Sub(now)
				if !moved[name] {
					out.Recovered = max(out.Recovered, wg.After)
				}
			}
			wg.Moved = moved[name]
		}
		if waits {
			out.Waiting++
			if wg.Wait == "" {
				wg.Wait = "no node can take it"
			}
		}
		if stays {
			out.Evacuated = false
			wg.Wait = "cannot leave: no other node can take it"
		}
		out.Guests = append(out.Guests, wg)
	}
	if !maintenance {
		out.Evacuated = false
	}
	out.Admission = c.Admission()
	out.Violations = c.Violations()
	return out, nil
}
