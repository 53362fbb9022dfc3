package manager

import (
	"fmt"
	"sort"

	"github.com/haven-ha/haven/internal/model"
)

// Admission is admission control's arithmetic at one moment (cluster policy
// reserve: hosts N | percent P). All sizes are bytes of guest memory.
//
// Capacity is the memory of the hosts that can take guests now (online, not
// in maintenance, not shutting down). Reserved is what is kept free for
// failures: with hosts N, the memory of the N largest such hosts (all of it
// when there are N or fewer); with percent P, P% of Capacity rounded up.
// Protected is the memory of the protected guests: every guest whose desired
// state is started and that is not failed (started, recovering, fencing,
// frozen, wherever it is), plus failed guests still running. The promise
// holds while Protected <= Capacity - Reserved; Short is by how much it
// does not (0 when it holds).
type Admission struct {
	Reserve   model.Reserve `json:"reserve"`
	Capacity  int64         `json:"capacity"`
	Reserved  int64         `json:"reserved"`
	Protected int64         `json:"protected"`
	Short     int64         `json:"short"`
}

// Protected reports whether admission control counts guest g.
func (g *Guest) Protected() bool {
	if g.Running {
		return true
	}
	desired := g.Spec.State
	return (desired == model.DesiredStarted || desired == "") && g.State != GuestFailed &&
		g.State != GuestStopped && g.State != GuestDisabled
}

// Admission returns admission control's figures now.
func (s *State) Admission() Admission {
	a := Admission{Reserve: s.Config.Reserve}
	var sizes []int64
	for _, n := range s.Nodes {
		if n.Status == NodeOnline && !n.Maintenance && n.Shutdown == nil && !n.Witness {
			a.Capacity += n.Memory
			sizes = append(sizes, n.Memory)
		}
	}
	switch r := s.Config.Reserve; {
	case r.Hosts > 0:
		sort.Slice(sizes, func(i, j int) bool { return sizes[i] > sizes[j] })
		for i := 0; i < r.Hosts && i < len(sizes); i++ {
			a.Reserved += sizes[i]
		}
	case r.Percent > 0:
		a.Reserved = (a.Capacity*int64(r.Percent) + 99) / 100
	}
	for _, g := range s.Guests {
		if g.Protected() {
			a.Protected += g.Spec.Memory
		}
	}
	if s.Config.Reserve.On() {
		a.Short = max(0, a.Protected-(a.Capacity-a.Reserved))
	}
	return a
}

// Admit reports whether a guest of spec's memory, not protected now, may be
// started (or created started): nil when admission control is off or the
// promise still holds with it, else an error wrapping ErrAdmission.
func (s *State) Admit(spec model.GuestSpec) error {
	if !s.Config.Reserve.On() {
		return nil
	}
	a := s.Admission()
	if a.Protected+spec.Memory <= a.Capacity-a.Reserved {
		return nil
	}
	return fmt.Errorf("guest %q (%s): %w: %s protected + %s > %s capacity - %s reserved (%s)", spec.Name, fmtSize(spec.Memory), ErrAdmission,
		fmtSize(a.Protected), fmtSize(spec.Memory), fmtSize(a.Capacity), fmtSize(a.Reserved), a.Reserve)
}

// reportAdmission logs when the promise stops holding (a host failed, went
// into maintenance) or holds again.
func (st *stepper) reportAdmission() {
	s := st.s
	if !s.Config.Reserve.On() {
		s.Short = 0
		return
	}
	a := s.Admission()
	switch {
	case a.Short > 0 && s.Short == 0:
		st.logf("admission control: short by %s: %s protected > %s capacity - %s reserved (%s); the cluster could not restart every protected guest after the failures it reserves for", fmtSize(a.Short), fmtSize(a.Protected), fmtSize(a.Capacity), fmtSize(a.Reserved), a.Reserve)
	case a.Short == 0 && s.Short > 0:
		st.logf("admission control holds again: %s protected <= %s capacity - %s reserved", fmtSize(a.Protected), fmtSize(a.Capacity), fmtSize(a.Reserved))
	}
	s.Short = a.Short
}

// fmtSize writes a byte count in the largest binary unit that divides it,
// or in MiB with decimals.
func fmtSize(b int64) string {
	for _, u := range []struct {
		n int64
		s string
	}{{model.TiB, "TiB"}, {model.GiB, "GiB"}, {model.MiB, "MiB"}, {model.KiB, "KiB"}} {
		if b != 0 && b%u.n == 0 {
			return fmt.Sprintf("%d%s", b/u.n, u.s)
		}
	}
	if b >= model.MiB || b <= -model.MiB {
		return fmt.Sprintf("%.2fMiB", float64(b)/float64(model.MiB))
	}
	return fmt.Sprintf("%dB", b)
}
