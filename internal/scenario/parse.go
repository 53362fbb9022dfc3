package scenario

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/model"
)

// Error is one load error with its place in the file.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Key, e.Msg)
}

// Load reads and parses a scenario file.
func Load(path string) (*Scenario, error) {
	if st, err := os.Stat(path); err == nil && st.Size() > MaxFileBytes {
		return nil, fmt.Errorf("load scenario %s: %d bytes; a scenario file has at most %d", path, st.Size(), MaxFileBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load scenario: %w", err)
	}
	return Parse(path, data)
}

// Bounds of a scenario file: far above any test of a real cluster, and
// low enough that a run ends in seconds (`haven sim run` on a file of
// unknown origin).
const (
	MaxFileBytes = 4 << 20
	MaxNodes     = 1000
	MaxGuests    = 20000
	MaxEvents    = 20000
	MaxExpects   = 20000
)

type parser struct {
	file string
	errs []error
}

func (p *parser) errf(n *yaml.Node, key, format string, a ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Key: key, Msg: fmt.Sprintf(format, a...)})
}

// Parse parses and validates a scenario. file names it in errors. All the
// errors found are returned together (errors.Join of *Error).
func Parse(file string, data []byte) (*Scenario, error) {
	p := &parser{file: file}
	if len(data) > MaxFileBytes {
		return nil, &Error{File: file, Line: 1, Msg: fmt.Sprintf("%d bytes: a scenario file has at most %d", len(data), MaxFileBytes)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, &Error{File: file, Line: 1, Msg: "empty scenario file"}
	}
	sc := p.scenario(doc.Content[0])
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	for _, b := range []struct {
		what   string
		n, max int
	}{{"nodes", len(sc.Nodes), MaxNodes}, {"guests", len(sc.Guests), MaxGuests}, {"events", len(sc.Events), MaxEvents}, {"expectations", len(sc.Expects), MaxExpects}} {
		if b.n > b.max {
			return nil, &Error{File: file, Line: 1, Msg: fmt.Sprintf("%d %s: a scenario has at most %d", b.n, b.what, b.max)}
		}
	}
	return sc, nil
}

// fields walks a mapping, calling fn for each key in allowed; unknown and
// duplicate keys are errors. It returns the key nodes seen.
func (p *parser) fields(n *yaml.Node, ctx string, allowed []string, fn func(key string, k, v *yaml.Node)) map[string]*yaml.Node {
	seen := map[string]*yaml.Node{}
	if n.Kind != yaml.MappingNode {
		p.errf(n, ctx, "must be a mapping")
		return seen
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		name := key
		if ctx != "" {
			name = ctx + "." + key
		}
		if _, dup := seen[key]; dup {
			p.errf(k, name, "duplicate key")
			continue
		}
		seen[key] = k
		ok := false
		for _, a := range allowed {
			if a == key {
				ok = true
			}
		}
		if !ok {
			p.errf(k, name, "unknown key (known: %s)", strings.Join(allowed, ", "))
			continue
		}
		fn(key, k, v)
	}
	return seen
}

func (p *parser) str(v *yaml.Node, key string) string {
	if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
		p.errf(v, key, "must be a string")
		return ""
	}
	return v.Value
}

func (p *parser) name(v *yaml.Node, key string) string {
	s := p.str(v, key)
	if s == "" && v.Kind == yaml.ScalarNode && v.Tag != "!!null" {
		p.errf(v, key, "must not be empty")
	}
	if strings.ContainsAny(s, " \t,/") {
		p.errf(v, key, "name %q must not contain spaces, commas or slashes", s)
	}
	return s
}

func (p *parser) integer(v *yaml.Node, key string, min int) int {
	if v.Kind != yaml.ScalarNode || v.Tag != "!!int" {
		p.errf(v, key, "must be an integer")
		return 0
	}
	n, err := strconv.Atoi(v.Value)
	if err != nil {
		p.errf(v, key, "must be an integer: %v", err)
		return 0
	}
	if n < min {
		p.errf(v, key, "must be at least %d", min)
	}
	return n
}

func (p *parser) boolean(v *yaml.Node, key string) bool {
	if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
		p.errf(v, key, "must be true or false")
		return false
	}
	b, _ := strconv.ParseBool(v.Value)
	if v.Value == "yes" || v.Value == "on" {
		b = true
	}
	return b
}

// ParseDuration parses a duration with units ms, s, m, h ("90s", "1m30s",
// "1.5s"). Plain numbers other than 0 and negative values are errors.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	if s == "" {
		return 0, errors.New("empty duration")
	}
	if strings.ContainsAny(s, "µ") || strings.Contains(s, "ns") || strings.Contains(s, "us") {
		return 0, fmt.Errorf("duration %q: use the units ms, s, m, h", s)
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return 0, fmt.Errorf("duration %q needs a unit (ms, s, m, h)", s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: use a number and a unit: ms, s, m, h (like 90s)", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %q must not be negative", s)
	}
	if d > MaxDuration {
		return 0, fmt.Errorf("duration %q is longer than the simulator's limit of %s", s, MaxDuration)
	}
	return d, nil
}

// MaxDuration bounds every duration in a scenario (a week of simulated
// time).
const MaxDuration = 7 * 24 * time.Hour

var sizeRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*(KiB|MiB|GiB|TiB)$`)

// ParseSize parses a size with a unit KiB, MiB, GiB or TiB ("1GiB",
// "1.5GiB"); it must come to a whole number of bytes.
func ParseSize(s string) (int64, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("size %q: use a number and a unit: KiB, MiB, GiB, TiB (like 2GiB)", s)
	}
	r, ok := new(big.Rat).SetString(m[1])
	if !ok {
		return 0, fmt.Errorf("size %q: bad number", s)
	}
	unit := map[string]int64{"KiB": model.KiB, "MiB": model.MiB, "GiB": model.GiB, "TiB": model.TiB}[m[2]]
	r.Mul(r, new(big.Rat).SetInt64(unit))
	if !r.IsInt() {
		return 0, fmt.Errorf("size %q is not a whole number of bytes", s)
	}
	if r.Num().BitLen() > 52 {
		return 0, fmt.Errorf("size %q is too large (at most 4096TiB)", s)
	}
	return r.Num().Int64(), nil
}

func (p *parser) duration(v *yaml.Node, key string) time.Duration {
	if v.Kind != yaml.ScalarNode {
		p.errf(v, key, "must be a duration like 90s")
		return 0
	}
	d, err := ParseDuration(v.Value)
	if err != nil {
		p.errf(v, key, "%v", err)
	}
	return d
}

func (p *parser) size(v *yaml.Node, key string) int64 {
	if v.Kind != yaml.ScalarNode {
		p.errf(v, key, "must be a size like 2GiB")
		return 0
	}
	n, err := ParseSize(v.Value)
	if err != nil {
		p.errf(v, key, "%v", err)
	} else if n <= 0 {
		p.errf(v, key, "must be more than 0")
	}
	return n
}

func (p *parser) seq(v *yaml.Node, key string) []*yaml.Node {
	if v.Kind != yaml.SequenceNode {
		p.errf(v, key, "must be a list")
		return nil
	}
	return v.Content
}

func (p *parser) scenario(root *yaml.Node) *Scenario {
	sc := &Scenario{File: p.file, Fencing: model.FencingAgent, Shutdown: model.ShutdownMigrate, QuorumLoss: model.QuorumLossStop, Settle: 300 * time.Second}
	var clusterN, domainsN, guestsN, eventsN, expectN, affinityN *yaml.Node
	seen := p.fields(root, "", []string{"name", "description", "cluster", "domains", "guests", "affinity", "events", "expect"}, func(key string, k, v *yaml.Node) {
		switch key {
		case "name":
			sc.Name = p.str(v, key)
		case "description":
			sc.Description = p.str(v, key)
		case "cluster":
			clusterN = v
		case "domains":
			domainsN = v
		case "guests":
			guestsN = v
		case "events":
			eventsN = v
		case "expect":
			expectN = v
		case "affinity":
			affinityN = v
		}
	})
	if root.Kind != yaml.MappingNode {
		return sc
	}
	if seen["name"] == nil || sc.Name == "" {
		p.errf(root, "name", "required")
	}
	if clusterN == nil {
		p.errf(root, "cluster", "required: the cluster's nodes")
		return sc
	}
	p.cluster(sc, clusterN)
	nodes := map[string]*Node{}
	for i := range sc.Nodes {
		nodes[sc.Nodes[i].Name] = &sc.Nodes[i]
	}
	if domainsN != nil {
		p.domains(sc, domainsN, nodes)
	}
	if guestsN != nil {
		p.guests(sc, guestsN, nodes)
	}
	guests := map[string]*Guest{}
	for i := range sc.Guests {
		guests[sc.Guests[i].Spec.Name] = &sc.Guests[i]
	}
	p.dependencies(sc, guests)
	if affinityN != nil {
		p.affinity(sc, affinityN, nodes, guests)
	}
	if eventsN != nil {
		p.events(sc, eventsN, nodes, guests)
	}
	if expectN != nil {
		p.expects(sc, expectN, nodes, guests)
	}
	return sc
}

func (p *parser) cluster(sc *Scenario, n *yaml.Node) {
	var nodesN, quorumN, cpuReserveN *yaml.Node
	p.fields(n, "cluster", []string{"fencing", "shutdown_policy", "quorum_loss", "preemption", "settle", "reserve", "balance", "balance_threshold", "balance_max_moves", "balance_cooldown",
		"cpu_overcommit", "cpu_reserve", "memory_reserve", "guest_overhead", "cpu_model", "nodes"}, func(key string, k, v *yaml.Node) {
		ck := "cluster." + key
		switch key {
		case "fencing":
			switch s := p.str(v, ck); s {
			case "agent", "watchdog":
				sc.Fencing = model.FencingMode(s)
			default:
				p.errf(v, ck, "%q is not agent or watchdog", s)
			}
		case "shutdown_policy":
			switch s := p.str(v, ck); s {
			case "migrate", "stop", "freeze":
				sc.Shutdown = model.ShutdownPolicy(s)
			default:
				p.errf(v, ck, "%q is not migrate, stop or freeze", s)
			}
		case "quorum_loss":
			quorumN = v
			switch s := p.str(v, ck); s {
			case "stop", "freeze":
				sc.QuorumLoss = model.QuorumLossPolicy(s)
			default:
				p.errf(v, ck, "%q is not stop or freeze", s)
			}
		case "preemption":
			sc.Preemption = p.onOff(v, ck)
		case "settle":
			sc.Settle = p.duration(v, ck)
		case "reserve":
			sc.Reserve = p.reserve(v, ck)
		case "balance":
			switch s := p.str(v, ck); s {
			case "off", "manual", "auto":
				sc.Balance.Mode = model.BalanceMode(s)
			default:
				p.errf(v, ck, "%q is not off, manual or auto", s)
			}
		case "balance_threshold":
			sc.Balance.Threshold = p.integer(v, ck, 1)
			if sc.Balance.Threshold > 100 {
				p.errf(v, ck, "%d is more than 100 (percentage points)", sc.Balance.Threshold)
			}
		case "balance_max_moves":
			sc.Balance.MaxMoves = p.integer(v, ck, 1)
		case "balance_cooldown":
			sc.Balance.Cooldown = p.duration(v, ck)
		case "cpu_overcommit":
			sc.Capacity.CPUOvercommit = p.overcommit(v, ck)
		case "cpu_reserve":
			cpuReserveN = v
			sc.Capacity.CPUReserve = p.integer(v, ck, 0)
		case "memory_reserve":
			sc.Capacity.MemoryReserve = p.size(v, ck)
		case "guest_overhead":
			sc.Capacity.GuestOverhead = p.size(v, ck)
		case "cpu_model":
			if m := p.str(v, ck); m != model.CPUModelAuto {
				sc.Capacity.CPUModel = p.cpuModel(v, ck)
			}
		case "nodes":
			nodesN = v
		}
	})
	if cpuReserveN != nil && !sc.Capacity.CPUsOn() {
		p.errf(cpuReserveN, "cluster.cpu_reserve", "needs cpu_overcommit: vCPUs are not counted without it")
	}
	if sc.QuorumLoss == model.QuorumLossFreeze && sc.Fencing == model.FencingWatchdog {
		p.errf(quorumN, "cluster.quorum_loss", "freeze needs fence devices (fencing: agent): with fencing: watchdog a node that loses the quorate side must self-fence")
	}
	if nodesN == nil {
		if n.Kind == yaml.MappingNode {
			p.errf(n, "cluster.nodes", "required: at least one node")
		}
		return
	}
	items := p.seq(nodesN, "cluster.nodes")
	if nodesN.Kind == yaml.SequenceNode && len(items) == 0 {
		p.errf(nodesN, "cluster.nodes", "required: at least one node")
	}
	seen := map[string]bool{}
	for _, it := range items {
		nd := Node{Memory: 64 * model.GiB, CPUs: 16, PowerOn: true, Line: it.Line}
		f := p.fields(it, "cluster.nodes", []string{"name", "memory", "cpus", "power", "witness", "cpu_models"}, func(key string, k, v *yaml.Node) {
			ck := "cluster.nodes." + key
			switch key {
			case "name":
				nd.Name = p.name(v, ck)
			case "memory":
				nd.Memory = p.size(v, ck)
			case "cpus":
				nd.CPUs = p.integer(v, ck, 1)
			case "witness":
				nd.Witness = p.boolean(v, ck)
			case "cpu_models":
				for _, it := range p.seq(v, ck) {
					if m := p.cpuModel(it, ck); m == model.CPUModelHost {
						p.errf(it, ck, "host is not a model a node offers: list models such as x86-64-v2")
					} else if m != "" {
						nd.CPUModels = append(nd.CPUModels, m)
					}
				}
				if len(nd.CPUModels) == 0 && v.Kind == yaml.SequenceNode {
					p.errf(v, ck, "must list at least one model (leave the key out when unknown)")
				}
			case "power":
				switch {
				case v.Kind == yaml.ScalarNode && v.Value == "on" || v.Value == "true":
					nd.PowerOn = true
				case v.Kind == yaml.ScalarNode && v.Value == "off" || v.Value == "false":
					nd.PowerOn = false
				default:
					p.errf(v, ck, "must be on or off")
				}
			}
		})
		if it.Kind != yaml.MappingNode {
			continue
		}
		if f["name"] == nil {
			p.errf(it, "cluster.nodes.name", "required")
			continue
		}
		if seen[nd.Name] {
			p.errf(f["name"], "cluster.nodes.name", "duplicate node %q", nd.Name)
			continue
		}
		seen[nd.Name] = true
		sc.Nodes = append(sc.Nodes, nd)
	}
}

func (p *parser) domains(sc *Scenario, n *yaml.Node, nodes map[string]*Node) {
	seen := map[string]bool{}
	for _, it := range p.seq(n, "domains") {
		var d model.Domain
		var membersN *yaml.Node
		f := p.fields(it, "domains", []string{"name", "members", "ordered", "restricted", "nofailback"}, func(key string, k, v *yaml.Node) {
			ck := "domains." + key
			switch key {
			case "name":
				d.Name = p.name(v, ck)
			case "members":
				membersN = v
			case "ordered":
				d.Ordered = p.boolean(v, ck)
			case "restricted":
				d.Restricted = p.boolean(v, ck)
			case "nofailback":
				d.NoFailback = p.boolean(v, ck)
			}
		})
		if it.Kind != yaml.MappingNode {
			continue
		}
		if f["name"] == nil {
			p.errf(it, "domains.name", "required")
			continue
		}
		if seen[d.Name] {
			p.errf(f["name"], "domains.name", "duplicate domain %q", d.Name)
			continue
		}
		seen[d.Name] = true
		if membersN == nil {
			p.errf(it, "domains.members", "required: at least one node")
			continue
		}
		plain, explicit := false, false
		mseen := map[string]bool{}
		items := p.seq(membersN, "domains.members")
		if membersN.Kind == yaml.SequenceNode && len(items) == 0 {
			p.errf(membersN, "domains.members", "required: at least one node")
		}
		for _, m := range items {
			var mem model.DomainMember
			if m.Kind == yaml.ScalarNode {
				plain = true
				mem.Node = p.name(m, "domains.members")
			} else {
				explicit = true
				mf := p.fields(m, "domains.members", []string{"node", "priority"}, func(key string, k, v *yaml.Node) {
					switch key {
					case "node":
						mem.Node = p.name(v, "domains.members.node")
					case "priority":
						mem.Priority = p.integer(v, "domains.members.priority", -1<<31)
					}
				})
				if m.Kind == yaml.MappingNode && (mf["node"] == nil || mf["priority"] == nil) {
					p.errf(m, "domains.members", "an explicit member needs node and priority")
					continue
				}
			}
			if mem.Node == "" {
				continue
			}
			if nodes[mem.Node] == nil {
				p.errf(m, "domains.members", "unknown node %q", mem.Node)
				continue
			}
			if nodes[mem.Node].Witness {
				p.errf(m, "domains.members", "node %q is a witness: it never runs guests, so no domain may list it", mem.Node)
				continue
			}
			if mseen[mem.Node] {
				p.errf(m, "domains.members", "node %q listed twice", mem.Node)
				continue
			}
			mseen[mem.Node] = true
			d.Members = append(d.Members, mem)
		}
		if plain && explicit {
			p.errf(membersN, "domains.members", "mixes plain node names and {node, priority}: use one form")
		}
		if explicit && d.Ordered {
			p.errf(f["ordered"], "domains.ordered", "ordered cannot be combined with explicit priorities")
		}
		sc.Domains = append(sc.Domains, d)
	}
}

func (p *parser) guests(sc *Scenario, n *yaml.Node, nodes map[string]*Node) {
	seen := map[string]bool{}
	doms := map[string]*model.Domain{}
	for i := range sc.Domains {
		doms[sc.Domains[i].Name] = &sc.Domains[i]
	}
	used := map[string]int64{}
	usedCPU := map[string]int64{}
	capa := sc.Capacity
	nodeMem := func(nd *Node) int64 { return nd.Memory - capa.MemoryReserve }
	var maxMem, maxCPU int64
	var lists [][]string
	for i := range sc.Nodes {
		if nd := &sc.Nodes[i]; !nd.Witness {
			maxMem = max(maxMem, nodeMem(nd))
			maxCPU = max(maxCPU, capa.CPUCapacity(nd.CPUs))
			lists = append(lists, nd.CPUModels)
		}
	}
	clusterModel := capa.CPUModel
	if clusterModel == "" {
		clusterModel = model.CommonCPULevel(lists)
	}
	for _, it := range p.seq(n, "guests") {
		g := Guest{Spec: model.DefaultGuestSpec(""), Line: it.Line}
		f := p.fields(it, "guests", []string{"name", "node", "state", "memory", "cpus", "cpu_model", "domain", "recovery", "max_restarts", "restart_window", "max_relocations", "priority", "migratable", "after", "faults", "guest_agent", "health"}, func(key string, k, v *yaml.Node) {
			ck := "guests." + key
			switch key {
			case "name":
				g.Spec.Name = p.name(v, ck)
			case "node":
				g.Spec.Node = p.name(v, ck)
				if g.Spec.Node != "" && nodes[g.Spec.Node] == nil {
					p.errf(v, ck, "unknown node %q", g.Spec.Node)
				} else if g.Spec.Node != "" && nodes[g.Spec.Node].Witness {
					p.errf(v, ck, "node %q is a witness: it never runs guests", g.Spec.Node)
				}
			case "state":
				switch s := p.str(v, ck); s {
				case "started", "stopped", "disabled":
					g.Spec.State = model.DesiredState(s)
				default:
					p.errf(v, ck, "%q is not started, stopped or disabled", s)
				}
			case "memory":
				g.Spec.Memory = p.size(v, ck)
			case "cpus":
				g.Spec.CPUs = p.integer(v, ck, 1)
			case "cpu_model":
				if p.str(v, ck) == model.CPUModelAuto {
					p.errf(v, ck, "auto is the cluster's choice: leave the key out to use the cluster's model")
				} else {
					g.Spec.CPUModel = p.cpuModel(v, ck)
				}
			case "domain":
				g.Spec.Domain = p.name(v, ck)
				if g.Spec.Domain != "" && doms[g.Spec.Domain] == nil {
					p.errf(v, ck, "unknown domain %q", g.Spec.Domain)
				}
			case "recovery":
				switch s := p.str(v, ck); s {
				case "restart", "relocate", "disable":
					g.Spec.Recovery = model.Recovery(s)
				default:
					p.errf(v, ck, "%q is not restart, relocate or disable", s)
				}
			case "max_restarts":
				g.Spec.MaxRestarts = p.integer(v, ck, 0)
			case "restart_window":
				g.Spec.RestartWindow = p.duration(v, ck)
			case "max_relocations":
				g.Spec.MaxRelocations = p.integer(v, ck, 0)
			case "priority":
				g.Spec.Priority = p.integer(v, ck, 0)
				if g.Spec.Priority > model.MaxPriority {
					p.errf(v, ck, "%d is more than %d (priority is 0..%d)", g.Spec.Priority, model.MaxPriority, model.MaxPriority)
				}
			case "migratable":
				g.Spec.Migratable = p.boolean(v, ck)
			case "guest_agent":
				g.GuestAgent = p.boolean(v, ck)
			case "health":
				g.Health = p.health(v)
			case "after":
				g.Spec.After = p.names(v, ck)
				g.afterLine = v.Line
			case "faults":
				p.fields(v, "guests.faults", []string{"start_failures", "migrate_failures", "stop_fails"}, func(key string, k, v *yaml.Node) {
					fk := "guests.faults." + key
					switch key {
					case "start_failures":
						g.Faults.StartFailures = p.integer(v, fk, 0)
					case "migrate_failures":
						g.Faults.MigrateFailures = p.integer(v, fk, 0)
					case "stop_fails":
						g.Faults.StopFails = p.boolean(v, fk)
					}
				})
			}
		})
		if it.Kind != yaml.MappingNode {
			continue
		}
		if f["name"] == nil {
			p.errf(it, "guests.name", "required")
			continue
		}
		if seen[g.Spec.Name] {
			p.errf(f["name"], "guests.name", "duplicate guest %q", g.Spec.Name)
			continue
		}
		if hn := f["health"]; hn != nil {
			for _, fe := range (guestdef.Definition{Health: g.Health}).HealthErrors() {
				p.errf(hn, "guests."+fe.Field, "%s", fe.Msg)
			}
		}
		seen[g.Spec.Name] = true
		mem := g.Spec.Memory + capa.GuestOverhead
		if mem > maxMem && len(lists) > 0 {
			p.errf(it, "guests.memory", "guest %q needs %d bytes%s, more than any node has%s", g.Spec.Name, mem, pick(capa.GuestOverhead > 0, " with guest_overhead", ""), pick(capa.MemoryReserve > 0, " after memory_reserve", ""))
		}
		cpus := int64(g.Spec.CPUs) * 1000
		if capa.CPUsOn() && cpus > maxCPU && len(lists) > 0 {
			p.errf(it, "guests.cpus", "guest %q needs %d vCPUs, more than any node's capacity (cpus × cpu_overcommit - cpu_reserve: at most %s)", g.Spec.Name, g.Spec.CPUs, strconv.FormatFloat(float64(maxCPU)/1000, 'f', -1, 64))
		}
		gm := g.Spec.CPUModel
		if gm == "" {
			gm = clusterModel
		}
		if nd := nodes[g.Spec.Node]; nd != nil && !nd.Witness {
			if d := doms[g.Spec.Domain]; d != nil && d.Restricted {
				in := false
				for _, m := range d.Members {
					in = in || m.Node == nd.Name
				}
				if !in {
					p.errf(f["node"], "guests.node", "node %q is outside guest %q's restricted domain %q", nd.Name, g.Spec.Name, d.Name)
				}
			}
			if g.Spec.State == model.DesiredStarted {
				if !nd.PowerOn {
					p.errf(f["node"], "guests.node", "guest %q is started on node %q, which is powered off at t=0", g.Spec.Name, nd.Name)
				}
				used[nd.Name] += mem
				if used[nd.Name] > nodeMem(nd) {
					p.errf(f["node"], "guests.node", "guest %q does not fit on node %q at t=0: the started guests there need %d bytes, it has %d%s", g.Spec.Name, nd.Name, used[nd.Name], nodeMem(nd), pick(capa.MemoryReserve > 0, " after memory_reserve", ""))
				}
				if capa.CPUsOn() {
					usedCPU[nd.Name] += cpus
					if c := capa.CPUCapacity(nd.CPUs); usedCPU[nd.Name] > c {
						p.errf(f["node"], "guests.node", "guest %q does not fit on node %q at t=0: the started guests there need %d vCPUs, its capacity is %s", g.Spec.Name, nd.Name, usedCPU[nd.Name]/1000, strconv.FormatFloat(float64(c)/1000, 'f', -1, 64))
					}
				}
				if gm != "" && gm != model.CPUModelHost && len(nd.CPUModels) > 0 && !slices.Contains(nd.CPUModels, gm) {
					p.errf(f["node"], "guests.node", "guest %q is started on node %q at t=0, which does not offer its CPU model %s (cpu_models: %s)", g.Spec.Name, nd.Name, gm, strings.Join(nd.CPUModels, ", "))
				}
			}
		}
		sc.Guests = append(sc.Guests, g)
	}
}

// health reads a guest's health checks (docs/guests.md): each one of
// agent: true, tcp: PORT, http: URL, exec: COMMAND (a string run by /bin/sh
// -c, or a list), with its timings.
func (p *parser) health(n *yaml.Node) []guestdef.Check {
	var out []guestdef.Check
	for _, it := range p.seq(n, "guests.health") {
		var c guestdef.Check
		p.fields(it, "guests.health", []string{"name", "agent", "tcp", "http", "status", "exec", "exit_code", "interval", "timeout", "failures", "start_grace"}, func(key string, k, v *yaml.Node) {
			ck := "guests.health." + key
			switch key {
			case "name":
				c.Name = p.str(v, ck)
			case "agent":
				c.Agent = p.boolean(v, ck)
			case "tcp":
				c.TCP = p.integer(v, ck, 1)
			case "http":
				c.HTTP = p.str(v, ck)
			case "status":
				c.Status = p.integer(v, ck, 100)
			case "exec":
				if v.Kind == yaml.SequenceNode {
					for _, a := range v.Content {
						c.Exec = append(c.Exec, p.str(a, ck))
					}
				} else if cmd := p.str(v, ck); cmd != "" {
					c.Exec = []string{"/bin/sh", "-c", cmd}
				}
			case "exit_code":
				c.ExitCode = p.integer(v, ck, 0)
			case "interval":
				c.Interval = guestdef.Duration(p.duration(v, ck))
			case "timeout":
				c.Timeout = guestdef.Duration(p.duration(v, ck))
			case "failures":
				c.Failures = p.integer(v, ck, 1)
			case "start_grace":
				c.StartGrace = guestdef.Duration(p.duration(v, ck))
			}
		})
		out = append(out, c)
	}
	return out
}

func (p *parser) events(sc *Scenario, n *yaml.Node, nodes map[string]*Node, guests map[string]*Guest) {
	for _, it := range p.seq(n, "events") {
		var e Event
		e.Line = it.Line
		var doN *yaml.Node
		f := p.fields(it, "events", []string{"at", "do"}, func(key string, k, v *yaml.Node) {
			switch key {
			case "at":
				e.At = p.duration(v, "events.at")
			case "do":
				e.Do = p.str(v, "events.do")
				doN = v
			}
		})
		if it.Kind != yaml.MappingNode {
			continue
		}
		if f["at"] == nil {
			p.errf(it, "events.at", "required")
		}
		if doN == nil {
			p.errf(it, "events.do", "required")
			continue
		}
		if err := parseDo(&e, nodes, guests); err != nil {
			p.errf(doN, "events.do", "%v", err)
			continue
		}
		sc.Events = append(sc.Events, e)
	}
	sort.SliceStable(sc.Events, func(a, b int) bool { return sc.Events[a].At < sc.Events[b].At })
}

func parseDo(e *Event, nodes map[string]*Node, guests map[string]*Guest) error {
	w := strings.Fields(e.Do)
	node := func(s string) error {
		if nodes[s] == nil {
			return fmt.Errorf("unknown node %q in %q", s, e.Do)
		}
		e.Node = s
		return nil
	}
	guest := func(s string) error {
		if guests[s] == nil {
			return fmt.Errorf("unknown guest %q in %q", s, e.Do)
		}
		e.Guest = s
		return nil
	}
	bad := fmt.Errorf("cannot understand %q; see the events table in docs/scenarios.md", e.Do)
	if len(w) == 0 {
		return bad
	}
	switch {
	case len(w) == 3 && (w[0] == "power" || w[0] == "network") && (w[1] == "off" || w[1] == "on"):
		e.Kind = EventKind(w[0] + " " + w[1])
		return node(w[2])
	case w[0] == "partition":
		rest := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(e.Do), "partition"))
		if rest == "" {
			return fmt.Errorf("%q: list the groups, like partition n1,n2 / n3", e.Do)
		}
		e.Kind = Partition
		seen := map[string]bool{}
		for _, grp := range strings.Split(rest, "/") {
			var names []string
			for _, s := range strings.Split(grp, ",") {
				s = strings.TrimSpace(s)
				if s == "" {
					return fmt.Errorf("%q: empty node name in a group", e.Do)
				}
				if nodes[s] == nil {
					return fmt.Errorf("unknown node %q in %q", s, e.Do)
				}
				if seen[s] {
					return fmt.Errorf("node %q is in two groups in %q", s, e.Do)
				}
				seen[s] = true
				names = append(names, s)
			}
			e.Groups = append(e.Groups, names)
		}
		return nil
	case len(w) == 1 && w[0] == "heal":
		e.Kind = Heal
		return nil
	case len(w) == 2 && (w[0] == "reboot" || w[0] == "shutdown"):
		e.Kind = EventKind(w[0])
		return node(w[1])
	case len(w) == 3 && w[0] == "service" && w[2] == "dies":
		e.Kind = ServiceDies
		return guest(w[1])
	case len(w) == 2 && (w[0] == "crash" || w[0] == "hang" || w[0] == "panic" || w[0] == "start" || w[0] == "stop" || w[0] == "disable"):
		e.Kind = EventKind(w[0])
		return guest(w[1])
	case len(w) == 3 && w[0] == "agent" && w[1] == "restart":
		e.Kind = AgentRestart
		return node(w[2])
	case len(w) == 3 && w[0] == "fence" && (w[2] == "fails" || w[2] == "works"):
		e.Kind = EventKind("fence " + w[2])
		return node(w[1])
	case len(w) == 3 && w[0] == "confirm" && w[1] == "off":
		e.Kind = ConfirmOff
		return node(w[2])
	case len(w) == 3 && w[0] == "maintenance" && (w[2] == "on" || w[2] == "off"):
		e.Kind = EventKind("maintenance " + w[2])
		return node(w[1])
	case len(w) == 3 && (w[0] == "migrate" || w[0] == "relocate"):
		e.Kind = EventKind(w[0])
		if err := guest(w[1]); err != nil {
			return err
		}
		return node(w[2])
	}
	return bad
}

var guestStates = []string{"started", "stopped", "disabled", "failed", "recovering", "fencing", "frozen"}
var nodeStates = []string{"online", "offline", "maintenance"}

func (p *parser) expects(sc *Scenario, n *yaml.Node, nodes map[string]*Node, guests map[string]*Guest) {
	end := sc.End()
	for _, it := range p.seq(n, "expect") {
		x := Expect{Line: it.Line, Times: -1}
		var atN, byN, stateN *yaml.Node
		f := p.fields(it, "expect", []string{"at", "by", "guest", "node", "state", "fenced", "not_fenced", "times", "never_stopped"}, func(key string, k, v *yaml.Node) {
			ck := "expect." + key
			switch key {
			case "at":
				atN = v
			case "by":
				byN = v
			case "guest", "never_stopped":
				x.Guest = p.name(v, ck)
				if x.Guest != "" && guests[x.Guest] == nil {
					p.errf(v, ck, "unknown guest %q", x.Guest)
				}
			case "node", "fenced", "not_fenced":
				x.Node = p.name(v, ck)
				if x.Node != "" && nodes[x.Node] == nil {
					p.errf(v, ck, "unknown node %q", x.Node)
				}
			case "state":
				stateN = v
				x.State = p.str(v, ck)
			case "times":
				x.Times = p.integer(v, ck, 0)
			}
		})
		if it.Kind != yaml.MappingNode {
			continue
		}
		switch {
		case f["never_stopped"] != nil:
			x.Kind = ExpectNeverStopped
			for _, k := range []string{"at", "by", "guest", "node", "state", "fenced", "not_fenced", "times"} {
				if f[k] != nil {
					p.errf(f[k], "expect."+k, "not allowed with never_stopped")
				}
			}
			if g := guests[x.Guest]; g != nil && (g.Spec.Node == "" || g.Spec.State != model.DesiredStarted) {
				p.errf(f["never_stopped"], "expect.never_stopped", "guest %q must be started at t=0 (state started with a node:) to be checked as never stopped", x.Guest)
			}
			sc.Expects = append(sc.Expects, x)
			continue
		case f["fenced"] != nil || f["not_fenced"] != nil:
			x.Kind = ExpectFenced
			if f["not_fenced"] != nil {
				x.Kind = ExpectNotFenced
			}
			for _, k := range []string{"at", "by", "guest", "state"} {
				if f[k] != nil {
					p.errf(f[k], "expect."+k, "not allowed with %s", x.Kind)
				}
			}
			if f["fenced"] != nil && f["not_fenced"] != nil {
				p.errf(it, "expect", "use fenced or not_fenced, not both")
			}
			if f["node"] != nil {
				p.errf(f["node"], "expect.node", "not allowed with %s", x.Kind)
			}
			if f["times"] != nil && x.Kind == ExpectNotFenced {
				p.errf(f["times"], "expect.times", "only with fenced")
			}
			sc.Expects = append(sc.Expects, x)
			continue
		case f["guest"] != nil:
			x.Kind = ExpectGuest
			if stateN != nil && !contains(guestStates, x.State) {
				p.errf(stateN, "expect.state", "%q is not a guest state (%s)", x.State, strings.Join(guestStates, ", "))
			}
		case f["node"] != nil:
			x.Kind = ExpectNode
			if stateN != nil && !contains(nodeStates, x.State) {
				p.errf(stateN, "expect.state", "%q is not a node state (%s)", x.State, strings.Join(nodeStates, ", "))
			}
		default:
			p.errf(it, "expect", "say what to check: guest, node, fenced, not_fenced or never_stopped")
			continue
		}
		if f["times"] != nil {
			p.errf(f["times"], "expect.times", "only with fenced")
		}
		if stateN == nil {
			p.errf(it, "expect.state", "required")
		}
		switch {
		case atN != nil && byN != nil:
			p.errf(byN, "expect.by", "use at or by, not both")
		case atN == nil && byN == nil:
			p.errf(it, "expect.at", "required: at (a time or end) or by (a time)")
		default:
			v, key := atN, "expect.at"
			if byN != nil {
				v, key = byN, "expect.by"
				x.By = true
			}
			if v.Kind == yaml.ScalarNode && v.Value == "end" {
				x.AtEnd = true
				x.At = end
			} else {
				x.At = p.duration(v, key)
				if x.At > end {
					p.errf(v, key, "%s is after the end of the run (%s: last event + settle); raise cluster.settle", v.Value, end)
				}
			}
		}
		sc.Expects = append(sc.Expects, x)
	}
}

// onOff reads on/off (or true/false).
func (p *parser) onOff(v *yaml.Node, key string) bool {
	if v.Kind == yaml.ScalarNode {
		switch v.Value {
		case "on", "true":
			return true
		case "off", "false":
			return false
		}
	}
	p.errf(v, key, "must be on or off")
	return false
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// overcommit reads cpu_overcommit: off, or a ratio more than 0 and at most
// 1000 with at most three decimals.
func (p *parser) overcommit(v *yaml.Node, key string) float64 {
	if v.Kind == yaml.ScalarNode && (v.Value == "off" || v.Value == "false") {
		return 0
	}
	if v.Kind != yaml.ScalarNode || (v.Tag != "!!int" && v.Tag != "!!float") {
		p.errf(v, key, "must be off or a number of vCPUs per host CPU, like 4 or 1.5")
		return 0
	}
	f, err := strconv.ParseFloat(v.Value, 64)
	switch {
	case err != nil || f <= 0 || f > 1000:
		p.errf(v, key, "%s is not a ratio more than 0 and at most 1000", v.Value)
		return 0
	case math.Abs(f*1000-math.Round(f*1000)) > 1e-6:
		p.errf(v, key, "%s has more than three decimals", v.Value)
		return 0
	}
	return f
}

// cpuModel reads a CPU model name (host, or a name such as x86-64-v2).
func (p *parser) cpuModel(v *yaml.Node, key string) string {
	m := p.str(v, key)
	if m == "" {
		return ""
	}
	if err := model.CheckCPUModel(m); err != nil {
		p.errf(v, key, "%v", err)
		return ""
	}
	return m
}

func pick(ok bool, yes, no string) string {
	if ok {
		return yes
	}
	return no
}
