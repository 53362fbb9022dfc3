package model

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// AffinityKind is what an affinity rule asks.
type AffinityKind string

const (
	AffinityTogether AffinityKind = "together" // the guests run on one host
	AffinityApart    AffinityKind = "apart"    // no two of the guests run on one host
	AffinityOn       AffinityKind = "on"       // the guests run on one of Hosts
	AffinityOff      AffinityKind = "off"      // the guests run on none of Hosts
)

// Rule is an affinity rule. A hard rule (Soft false) is never broken by the
// manager's placement; a soft one is kept when possible. See docs/manager.md.
type Rule struct {
	Name   string       `json:"name"`
	Kind   AffinityKind `json:"kind"`
	Guests []string     `json:"guests"`
	Hosts  []string     `json:"hosts,omitempty"` // for on and off
	Soft   bool         `json:"soft,omitempty"`
}

// Strength is "hard" or "soft".
func (r Rule) Strength() string {
	if r.Soft {
		return "soft"
	}
	return "hard"
}

// Validate checks one rule on its own.
func (r Rule) Validate() error {
	if r.Name == "" {
		return fmt.Errorf("rule: name is required")
	}
	switch r.Kind {
	case AffinityTogether, AffinityApart:
		if len(r.Guests) < 2 {
			return fmt.Errorf("rule %q: %s needs at least 2 guests", r.Name, r.Kind)
		}
		if len(r.Hosts) > 0 {
			return fmt.Errorf("rule %q: %s takes no hosts (hosts are for on and off)", r.Name, r.Kind)
		}
	case AffinityOn, AffinityOff:
		if len(r.Guests) < 1 {
			return fmt.Errorf("rule %q: %s needs at least 1 guest", r.Name, r.Kind)
		}
		if len(r.Hosts) < 1 {
			return fmt.Errorf("rule %q: %s needs at least 1 host", r.Name, r.Kind)
		}
	default:
		return fmt.Errorf("rule %q: kind %q is not together, apart, on or off", r.Name, r.Kind)
	}
	for _, l := range [][]string{r.Guests, r.Hosts} {
		s := slices.Clone(l)
		slices.Sort(s)
		for i := 1; i < len(s); i++ {
			if s[i] == s[i-1] {
				return fmt.Errorf("rule %q: %q is listed twice", r.Name, s[i])
			}
		}
	}
	return nil
}

// TogetherGroups merges the hard together rules into groups (a guest in two
// such rules joins them): it maps each guest in a group to the group's first
// name in byte order.
func TogetherGroups(rules []Rule) map[string]string {
	parent := map[string]string{}
	var find func(string) string
	find = func(x string) string {
		p, ok := parent[x]
		if !ok || p == x {
			parent[x] = x
			return x
		}
		r := find(p)
		parent[x] = r
		return r
	}
	for _, r := range rules {
		if r.Kind != AffinityTogether || r.Soft {
			continue
		}
		for _, g := range r.Guests[1:] {
			a, b := find(r.Guests[0]), find(g)
			if a == b {
				continue
			}
			if b < a {
				a, b = b, a
			}
			parent[b] = a
		}
	}
	out := map[string]string{}
	for g := range parent {
		out[g] = find(g)
	}
	return out
}

// CheckRules checks a set of rules together: names unique, every rule valid,
// and no hard apart rule between two guests that hard together rules keep on
// one host. guest and host, when not nil, say whether a name is configured.
func CheckRules(rules []Rule, guest, host func(string) bool) error {
	names := map[string]bool{}
	for _, r := range rules {
		if err := r.Validate(); err != nil {
			return err
		}
		if names[r.Name] {
			return fmt.Errorf("rule %q: defined twice", r.Name)
		}
		names[r.Name] = true
		for _, g := range r.Guests {
			if guest != nil && !guest(g) {
				return fmt.Errorf("rule %q: no such guest %q", r.Name, g)
			}
		}
		for _, h := range r.Hosts {
			if host != nil && !host(h) {
				return fmt.Errorf("rule %q: no such host %q", r.Name, h)
			}
		}
	}
	groups := TogetherGroups(rules)
	for _, r := range rules {
		if r.Kind != AffinityApart || r.Soft {
			continue
		}
		for i, a := range r.Guests {
			for _, b := range r.Guests[i+1:] {
				if ga, ok := groups[a]; ok && ga == groups[b] {
					return fmt.Errorf("rule %q: %s and %s must be apart, but hard together rules keep them on one host", r.Name, a, b)
				}
			}
		}
	}
	return nil
}

// DependencyCycle returns a cycle in the guests' start dependencies (after),
// as the list of guests around it with the first repeated at the end, or nil.
// after maps a guest to the guests it starts after.
func DependencyCycle(after map[string][]string) []string {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var path []string
	var visit func(string) []string
	visit = func(g string) []string {
		color[g] = grey
		path = append(path, g)
		deps := slices.Clone(after[g])
		slices.Sort(deps)
		for _, d := range deps {
			switch color[d] {
			case grey:
				i := slices.Index(path, d)
				return append(slices.Clone(path[i:]), d)
			case white:
				if c := visit(d); c != nil {
					return c
				}
			}
		}
		path = path[:len(path)-1]
		color[g] = black
		return nil
	}
	keys := make([]string, 0, len(after))
	for g := range after {
		keys = append(keys, g)
	}
	slices.Sort(keys)
	for _, g := range keys {
		if color[g] == white {
			if c := visit(g); c != nil {
				return c
			}
		}
	}
	return nil
}

// FormatCycle writes a dependency cycle as "a -> b -> a".
func FormatCycle(c []string) string { return strings.Join(c, " -> ") }

// Reserve is the cluster's admission control: the failover capacity kept
// free. Zero values: off.
type Reserve struct {
	Hosts   int `json:"hosts,omitempty"`   // survive the loss of this many hosts
	Percent int `json:"percent,omitempty"` // keep this percent of capacity free
}

// On reports whether admission control is on.
func (r Reserve) On() bool { return r.Hosts > 0 || r.Percent > 0 }

func (r Reserve) String() string {
	switch {
	case r.Hosts > 0:
		return fmt.Sprintf("reserve: hosts %d", r.Hosts)
	case r.Percent > 0:
		return fmt.Sprintf("reserve: percent %d", r.Percent)
	}
	return "reserve: off"
}

// BalanceMode is how rebalancing acts.
type BalanceMode string

const (
	BalanceOff    BalanceMode = "off"
	BalanceManual BalanceMode = "manual" // propose moves (logged), do nothing
	BalanceAuto   BalanceMode = "auto"   // perform them
)

// Balance is the cluster's rebalancing policy (zero: off).
type Balance struct {
	Mode BalanceMode `json:"mode,omitempty"`
	// Threshold: rebalance while the memory use of the most and least used
	// hosts differs by more than this many percentage points (default 20).
	Threshold int `json:"threshold,omitempty"`
	// MaxMoves bounds the rebalancing migrations in flight (default 1).
	MaxMoves int `json:"max_moves,omitempty"`
	// Cooldown: a guest is not moved by rebalancing again within it
	// (default 10m).
	Cooldown time.Duration `json:"cooldown,omitempty"`
}

// On reports whether rebalancing is manual or auto.
func (b Balance) On() bool { return b.Mode == BalanceManual || b.Mode == BalanceAuto }

// WithDefaults fills in the documented defaults.
func (b Balance) WithDefaults() Balance {
	if b.Threshold <= 0 {
		b.Threshold = 20
	}
	if b.MaxMoves <= 0 {
		b.MaxMoves = 1
	}
	if b.Cooldown <= 0 {
		b.Cooldown = 10 * time.Minute
	}
	return b
}

// Capacity is how much of each host the guests may use (cluster policy;
// zero: all of it, CPUs not counted, no CPU model). See docs/manager.md,
// CPU and host reserves.
type Capacity struct {
	// CPUOvercommit is how many guest vCPUs one host CPU may carry; 0:
	// vCPUs are not counted. A host's CPU capacity is cpus × CPUOvercommit
	// − CPUReserve vCPUs.
	CPUOvercommit float64 `json:"cpu_overcommit,omitempty"`
	// CPUReserve is the vCPUs of each host's capacity kept for the host
	// itself (only with CPUOvercommit).
	CPUReserve int `json:"cpu_reserve,omitempty"`
	// MemoryReserve is the memory of each host kept for its OS: guests may
	// use its memory minus this.
	MemoryReserve int64 `json:"memory_reserve,omitempty"`
	// GuestOverhead is counted on a host for each guest on top of its
	// memory (the emulator's own memory).
	GuestOverhead int64 `json:"guest_overhead,omitempty"`
	// CPUModel is the cluster's CPU model: "" or CPUModelAuto (the newest
	// level every host supports), CPUModelHost (the host's CPU, no check),
	// or a model name such as x86-64-v2.
	CPUModel string `json:"cpu_model,omitempty"`
}

// CPU model names with a meaning of their own.
const (
	CPUModelAuto = "auto" // the newest of CPULevels every host supports
	CPUModelHost = "host" // the host's own CPU (-cpu host): no compatibility check
)

// CPULevels are the x86-64 micro-architecture levels, oldest first; each
// includes the ones before it. Host agents report those their CPU offers.
var CPULevels = []string{"x86-64-v1", "x86-64-v2", "x86-64-v3", "x86-64-v4"}

// DefaultCapacity is the daemon's default (the simulator's is the zero
// value): 4 vCPUs per host CPU, 1 of them reserved, 1 GiB of each host
// for its OS, 64 MiB per guest for QEMU itself (a 128 MiB test guest's QEMU
// holds 170 to 200 MB), the automatic CPU model.
func DefaultCapacity() Capacity {
	return Capacity{CPUOvercommit: 4, CPUReserve: 1, MemoryReserve: GiB, GuestOverhead: 64 * MiB, CPUModel: CPUModelAuto}
}

// CPUsOn reports whether vCPUs are counted.
func (c Capacity) CPUsOn() bool { return c.CPUOvercommit > 0 }

// CPUCapacity is the vCPU capacity of a host with cpus CPUs, in thousandths
// of a vCPU (so that a fractional ratio is exact to 0.001): cpus ×
// CPUOvercommit − CPUReserve, at least 0.
func (c Capacity) CPUCapacity(cpus int) int64 {
	v := int64(cpus)*int64(c.CPUOvercommit*1000+0.5) - int64(c.CPUReserve)*1000
	return max(v, 0)
}

// Check reports what is wrong with c, naming the field.
func (c Capacity) Check() error {
	switch {
	case c.CPUOvercommit < 0 || c.CPUOvercommit > 1000:
		return fmt.Errorf("cpu_overcommit: %v is not 0 (off) or a ratio up to 1000", c.CPUOvercommit)
	case c.CPUReserve < 0:
		return fmt.Errorf("cpu_reserve: %d is negative", c.CPUReserve)
	case c.CPUReserve > 0 && !c.CPUsOn():
		return fmt.Errorf("cpu_reserve: needs cpu_overcommit (vCPUs are not counted without it)")
	case c.MemoryReserve < 0:
		return fmt.Errorf("memory_reserve: %d is negative", c.MemoryReserve)
	case c.GuestOverhead < 0:
		return fmt.Errorf("guest_overhead: %d is negative", c.GuestOverhead)
	}
	if c.CPUModel != "" && c.CPUModel != CPUModelAuto {
		if err := CheckCPUModel(c.CPUModel); err != nil {
			return fmt.Errorf("cpu_model: %w", err)
		}
	}
	return nil
}

// CheckCPUModel checks a CPU model name (a guest's, or the cluster's other
// than auto): host, or a name of letters, digits, '-', '_' and '.'.
func CheckCPUModel(m string) error {
	if m == "" || len(m) > 64 {
		return fmt.Errorf("%q is not a CPU model name (1..64 characters)", m)
	}
	for _, r := range m {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("%q is not a CPU model name (letters, digits, '-', '_', '.'; e.g. x86-64-v2, host)", m)
		}
	}
	return nil
}

// CommonCPULevel returns the newest of CPULevels that every list of models
// holds, skipping empty lists (hosts that report none); "" when no list is
// given or no level is common.
func CommonCPULevel(lists [][]string) string {
	best := ""
	for _, lvl := range CPULevels {
		all, some := true, false
		for _, l := range lists {
			if len(l) == 0 {
				continue
			}
			some = true
			if !slices.Contains(l, lvl) {
				all = false
				break
			}
		}
		if !some {
			return ""
		}
		if all {
			best = lvl
		}
	}
	return best
}

func (c Capacity) String() string {
	m := c.CPUModel
	if m == "" {
		m = CPUModelAuto
	}
	cpu := "vCPUs not counted"
	if c.CPUsOn() {
		cpu = fmt.Sprintf("%v vCPUs per host CPU, %d reserved", c.CPUOvercommit, c.CPUReserve)
	}
	return fmt.Sprintf("capacity: %s; host memory reserve %d MiB, guest overhead %d MiB; CPU model %s", cpu, c.MemoryReserve/MiB, c.GuestOverhead/MiB, m)
}
