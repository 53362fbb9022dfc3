package manager

import (
	"fmt"
	"sort"

	"github.com/haven-ha/haven/internal/model"
)

// Admission is admission control's arithmetic at one moment (cluster policy
// reserve: hosts N | percent P). All sizes are bytes of guest memory.
//
// Capacity is the memory the hosts that can take guests now (online, not
// in maintenance, not shutting down) offer their guests (after the host
// memory reserve); a guest's memory counts with its overhead. Reserved is what is kept free for
// failures: with hosts N, the memory of the N largest such hosts (all of it
// when there are N or fewer); with percent P, P% of Capacity rounded up.
// Protected is the memory of the protected guests: every guest whose desired
// state is started and that is not failed (started, recovering, fencing,
// frozen, wherever it is), plus failed guests still running. The promise
// holds while Protected <= Capacity - Reserved; Short is by how much it
// does not (0 when it holds).
//
// When vCPUs are counted (cpu_overcommit) the same holds for them, in
// thousandths of a vCPU: CPUCapacity is the hosts' vCPU capacity,
// CPUReserved that of the N hosts with the largest vCPU capacity (or P% of
// CPUCapacity, rounded up), CPUProtected the protected guests' vCPUs; the
// promise needs both.
type Admission struct {
	Reserve      model.Reserve `json:"reserve"`
	Capacity     int64         `json:"capacity"`
	Reserved     int64         `json:"reserved"`
	Protected    int64         `json:"protected"`
	Short        int64         `json:"short"`
	CPUCapacity  int64         `json:"cpu_capacity,omitempty"`
	CPUReserved  int64         `json:"cpu_reserved,omitempty"`
	CPUProtected int64         `json:"cpu_protected,omitempty"`
	CPUShort     int64         `json:"cpu_short,omitempty"`
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
	var sizes, cpus []int64
	for _, n := range s.Nodes {
		if n.Status == NodeOnline && !n.Maintenance && n.Shutdown == nil && !n.Witness {
			sizes = append(sizes, s.nodeMem(n))
			cpus = append(cpus, s.nodeCPUs(n))
		}
	}
	a.Capacity, a.Reserved = reserved(s.Config.Reserve, sizes)
	a.CPUCapacity, a.CPUReserved = reserved(s.Config.Reserve, cpus)
	for _, g := range s.Guests {
		if g.Protected() {
			a.Protected += s.guestMem(g)
			a.CPUProtected += s.guestCPUs(g)
		}
	}
	if s.Config.Reserve.On() {
		a.Short = max(0, a.Protected-(a.Capacity-a.Reserved))
		a.CPUShort = max(0, a.CPUProtected-(a.CPUCapacity-a.CPUReserved))
	}
	return a
}

// reserved returns the total of the hosts' sizes and the part r keeps
// free: the N largest, or P% of the total rounded up.
func reserved(r model.Reserve, sizes []int64) (total, kept int64) {
	for _, v := range sizes {
		total += v
	}
	switch {
	case r.Hosts > 0:
		sort.Slice(sizes, func(i, j int) bool { return sizes[i] > sizes[j] })
		for i := 0; i < r.Hosts && i < len(sizes); i++ {
			kept += sizes[i]
		}
	case r.Percent > 0:
		kept = (total*int64(r.Percent) + 99) / 100
	}
	return total, kept
}

// Admit reports whether a guest of spec's memory, not protected now, may be
// started (or created started): nil when admission control is off or the
// promise still holds with it, else an error wrapping ErrAdmission.
func (s *State) Admit(spec model.GuestSpec) error {
	if !s.Config.Reserve.On() {
		return nil
	}
	a := s.Admission()
	g := &Guest{Spec: spec}
	mem, cpus := s.guestMem(g), s.guestCPUs(g)
	if a.Protected+mem > a.Capacity-a.Reserved {
		return fmt.Errorf("guest %q (%s): %w: %s protected + %s > %s capacity - %s reserved (%s)", spec.Name, fmtSize(spec.Memory), ErrAdmission,
			fmtSize(a.Protected), fmtSize(mem), fmtSize(a.Capacity), fmtSize(a.Reserved), a.Reserve)
	}
	if cpus > 0 && a.CPUProtected+cpus > a.CPUCapacity-a.CPUReserved {
		return fmt.Errorf("guest %q (%d vCPUs): %w: %s vCPUs protected + %s > %s vCPU capacity - %s reserved (%s)", spec.Name, spec.CPUs, ErrAdmission,
			fmtCPU(a.CPUProtected), fmtCPU(cpus), fmtCPU(a.CPUCapacity), fmtCPU(a.CPUReserved), a.Reserve)
	}
	return nil
}

// reportAdmission logs when the promise stops holding (a host failed, went
// into maintenance) or holds again.
func (st *stepper) reportAdmission() {
	s := st.s
	if !s.Config.Reserve.On() {
		s.Short, s.CPUShort = 0, 0
		return
	}
	a := s.Admission()
	switch {
	case a.CPUShort > 0 && s.CPUShort == 0:
		st.logf("admission control: short by %s vCPUs: %s vCPUs protected > %s vCPU capacity - %s reserved (%s); the cluster could not restart every protected guest after the failures it reserves for", fmtCPU(a.CPUShort), fmtCPU(a.CPUProtected), fmtCPU(a.CPUCapacity), fmtCPU(a.CPUReserved), a.Reserve)
	case a.CPUShort == 0 && s.CPUShort > 0:
		st.logf("admission control holds again for vCPUs: %s vCPUs protected <= %s vCPU capacity - %s reserved", fmtCPU(a.CPUProtected), fmtCPU(a.CPUCapacity), fmtCPU(a.CPUReserved))
	}
	s.CPUShort = a.CPUShort
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
