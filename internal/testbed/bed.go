// Package testbed owns Haven's test bed: several Haven "hosts" on one machine,
// each a network namespace (plus a persistent mount and UTS namespace) wired
// to a bridge that lives in a namespace of its own, a shared directory that
// plays the shared storage, and fault injection (power off, agent kill,
// network cut, partitions, failing fence devices). It also owns the
// double-run checker that watches test guests' disks for two writers.
//
// A bed's state lives in a directory (Root/<id>, such as
// /run/haven-testbed/hvn3) that this package, cmd/testbed (scripts/testbed.sh)
// and the fence agent scripts/fence_testbed share; docs/testbed.md describes
// its layout. Everything a bed creates carries its id as a prefix (network
// namespaces hvn3-h1, hvn3-br; the root leg hvn3-leg), so beds never collide
// and tearing one down touches nothing else.
//
// Safety: the root namespace has a default route to the outside. A bed's
// subnet (10.213.K.0/24) is made local to this machine before any process
// runs in it: either a leg on the bed's bridge (Options.Leg) or an
// "unreachable" route, and New refuses to return a bed when `ip route get`
// says any of its addresses would leave through another device.
package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultRoot is where beds keep their state directories.
const DefaultRoot = "/run/haven-testbed"

// DefaultSharedRoot holds the beds' default shared directories
// (DefaultSharedRoot/<id>), removed with their beds.
const DefaultSharedRoot = "/var/tmp/haven-testbed"

// subnetPrefix is the /16 the beds' /24 subnets are carved from: bed K uses
// 10.213.K.0/24, host i has 10.213.K.i and the root leg 10.213.K.254.
const subnetPrefix = "10.213."

// legHost is the last octet of the root leg's address.
const legHost = 254

// MaxHosts is the most hosts a bed may have.
const MaxHosts = 200

// Options configures a new bed.
type Options struct {
	// Hosts is the number of hosts, h1..hN (default 3).
	Hosts int
	// Leg adds a veth from the root namespace to the bed's bridge, with the
	// address Bed.LegAddr, so a person or a test on this machine can reach the
	// hosts (web UI, API) from the root namespace.
	Leg bool
	// SharedDir is the directory every host sees as shared storage. Default:
	// DefaultSharedRoot/<id>, removed with the bed. A given directory is
	// created when missing and never removed.
	SharedDir string
	// Root holds the beds' state directories (default DefaultRoot).
	Root string
	// Persistent marks a bed made by a person (scripts/testbed.sh): it is
	// never reaped as stale. Beds made by tests are reaped by a later New once
	// the process that made them has died without tearing them down.
	Persistent bool
	// Logger receives the bed's operations (default slog.Default()).
	Logger *slog.Logger
}

// Config is the static description of a bed, stored as bed.json.
type Config struct {
	ID         string   `json:"id"`
	Index      int      `json:"index"`
	Subnet     string   `json:"subnet"`
	Hosts      []string `json:"hosts"`
	Leg        bool     `json:"leg"`
	SharedDir  string   `json:"shared_dir"`
	OwnShared  bool     `json:"own_shared"`
	Persistent bool     `json:"persistent"`
	OwnerPID   int      `json:"owner_pid"`
	OwnerStart uint64   `json:"owner_start"`
	Created    string   `json:"created"`
}

// Bed is a running test bed. Its methods are safe for concurrent use.
type Bed struct {
	cfg    Config
	dir    string
	log    *slog.Logger
	hosts  []*Host
	byName map[string]*Host

	netMu sync.Mutex // serializes Partition and Heal

	mu    sync.Mutex // guards hooks, procs and known
	hooks Hooks
	procs map[int]*Process      // processes this Bed value started, by PID
	known map[string]powerState // power state last seen, by host; see WatchPower
}

// ErrNotRoot is returned when the bed cannot be built for want of privileges.
var ErrNotRoot = errors.New("the test bed needs root (network namespaces, veths, iptables)")

// New builds a bed: namespaces, bridge, addresses, the root leg or an
// unreachable route, and each host's mount and UTS namespace. It checks the
// routes before returning, and tears everything down again on any failure.
func New(ctx context.Context, opts Options) (*Bed, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	if err := RequireTools(); err != nil {
		return nil, err
	}
	if opts.Hosts == 0 {
		opts.Hosts = 3
	}
	if opts.Hosts < 1 || opts.Hosts > MaxHosts {
		return nil, fmt.Errorf("create test bed: %d hosts asked, want 1 to %d", opts.Hosts, MaxHosts)
	}
	if opts.Root == "" {
		opts.Root = DefaultRoot
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(opts.Root, 0o755); err != nil {
		return nil, fmt.Errorf("create test bed root %s: %w", opts.Root, err)
	}
	ReapStale(ctx, opts.Root, log)

	idx, dir, err := claimIndex(ctx, opts.Root)
	if err != nil {
		return nil, err
	}
	cfg := Config{
		ID:         fmt.Sprintf("hvn%d", idx),
		Index:      idx,
		Subnet:     fmt.Sprintf("%s%d.0/24", subnetPrefix, idx),
		Leg:        opts.Leg,
		SharedDir:  opts.SharedDir,
		Persistent: opts.Persistent,
		OwnerPID:   os.Getpid(),
		Created:    time.Now().UTC().Format(time.RFC3339),
	}
	cfg.OwnerStart, _ = procStart(os.Getpid())
	if cfg.SharedDir == "" {
		// Not under /run, a small tmpfs on most machines: guest disks live here.
		cfg.SharedDir = filepath.Join(DefaultSharedRoot, cfg.ID)
		cfg.OwnShared = true
	}
	for i := 1; i <= opts.Hosts; i++ {
		cfg.Hosts = append(cfg.Hosts, fmt.Sprintf("h%d", i))
	}
	b := newBed(cfg, dir, log)
	if err := b.writeConfig(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := b.build(ctx); err != nil {
		if derr := b.Destroy(context.WithoutCancel(ctx)); derr != nil {
			log.Error("tear down half-built test bed", "bed", cfg.ID, "err", derr)
		}
		return nil, fmt.Errorf("create test bed %s: %w", cfg.ID, err)
	}
	log.Info("test bed up", "bed", cfg.ID, "hosts", len(cfg.Hosts), "subnet", cfg.Subnet, "leg", cfg.Leg, "dir", dir)
	return b, nil
}

// Open attaches to an existing bed by its state directory (or its id under
// DefaultRoot), for commands that act on a bed another process built. The
// processes that process started are known only through their PID files.
func Open(dirOrID string) (*Bed, error) {
	dir := dirOrID
	if !strings.Contains(dir, "/") {
		dir = filepath.Join(DefaultRoot, dir)
	}
	data, err := os.ReadFile(filepath.Join(dir, "bed.json"))
	if err != nil {
		return nil, fmt.Errorf("open test bed %s: %w (is it up? see scripts/testbed.sh status)", dir, err)
	}
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("open test bed %s: parse bed.json: %w", dir, err)
	}
	return newBed(cfg, dir, slog.Default()), nil
}

func newBed(cfg Config, dir string, log *slog.Logger) *Bed {
	b := &Bed{cfg: cfg, dir: dir, log: log.With("bed", cfg.ID), byName: map[string]*Host{}, procs: map[int]*Process{}}
	for i, name := range cfg.Hosts {
		h := &Host{
			bed:   b,
			Name:  name,
			Netns: cfg.ID + "-" + name,
			Addr:  b.addr(i + 1),
			Dir:   filepath.Join(dir, "host", name, "work"),
		}
		b.hosts = append(b.hosts, h)
		b.byName[name] = h
	}
	return b
}

// ID is the bed's id, such as "hvn3", the prefix of everything it creates.
func (b *Bed) ID() string { return b.cfg.ID }

// Dir is the bed's state directory (the fence agent's testbed_dir).
func (b *Bed) Dir() string { return b.dir }

// Config returns the bed's static description.
func (b *Bed) Config() Config { return b.cfg }

// SharedDir is the directory every host sees as shared storage.
func (b *Bed) SharedDir() string { return b.cfg.SharedDir }

// Subnet is the bed's private subnet.
func (b *Bed) Subnet() netip.Prefix { return netip.MustParsePrefix(b.cfg.Subnet) }

// LegAddr is the root namespace's address on the bed's bridge; valid only
// when the bed has a leg.
func (b *Bed) LegAddr() (netip.Addr, bool) { return b.addr(legHost), b.cfg.Leg }

// LegDev is the name of the root namespace's leg device (hvnK-leg).
func (b *Bed) LegDev() string { return b.cfg.ID + "-leg" }

// BridgeNetns is the name of the namespace holding the bridge.
func (b *Bed) BridgeNetns() string { return b.cfg.ID + "-br" }

// Hosts returns the hosts in order h1..hN.
func (b *Bed) Hosts() []*Host { return append([]*Host(nil), b.hosts...) }

// Host returns a host by name ("h2"); it also accepts the namespace name
// ("hvn3-h2"). It returns nil for an unknown name.
func (b *Bed) Host(name string) *Host {
	if h, ok := b.byName[name]; ok {
		return h
	}
	return b.byName[strings.TrimPrefix(name, b.cfg.ID+"-")]
}

// MustHost is Host that panics on an unknown name, for tests.
func (b *Bed) MustHost(name string) *Host {
	h := b.Host(name)
	if h == nil {
		panic(fmt.Sprintf("testbed: bed %s has no host %q", b.cfg.ID, name))
	}
	return h
}

func (b *Bed) lookup(name string) (*Host, error) {
	h := b.Host(name)
	if h == nil {
		return nil, fmt.Errorf("test bed %s has no host %q (hosts: %s)", b.cfg.ID, name, strings.Join(b.cfg.Hosts, ", "))
	}
	return h, nil
}

func (b *Bed) addr(last int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("%s%d.%d", subnetPrefix, b.cfg.Index, last))
}

// Addrs returns every address of the bed: the hosts' and the leg's.
func (b *Bed) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, h := range b.hosts {
		out = append(out, h.Addr)
	}
	return append(out, b.addr(legHost))
}

func (b *Bed) nsDir() string              { return filepath.Join(b.dir, "ns") }
func (b *Bed) hostDir(name string) string { return filepath.Join(b.dir, "host", name) }
func (b *Bed) etcHosts() string           { return filepath.Join(b.dir, "etc-hosts") }

func (b *Bed) writeConfig() error {
	data, err := json.MarshalIndent(b.cfg, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(b.dir, "bed.json"), append(data, '\n'))
}

// build creates the bed's namespaces and links. Every step is undone by
// Destroy, which tolerates steps that never happened.
func (b *Bed) build(ctx context.Context) error {
	br := b.BridgeNetns()
	if err := os.MkdirAll(b.cfg.SharedDir, 0o777); err != nil {
		return fmt.Errorf("create shared dir: %w", err)
	}
	var hostsFile strings.Builder
	hostsFile.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	for _, h := range b.hosts {
		fmt.Fprintf(&hostsFile, "%s\t%s %s\n", h.Addr, h.Name, h.Netns)
	}
	if b.cfg.Leg {
		fmt.Fprintf(&hostsFile, "%s\tleg %s\n", b.addr(legHost), b.LegDev())
	}
	if err := os.WriteFile(b.etcHosts(), []byte(hostsFile.String()), 0o644); err != nil {
		return err
	}

	if err := ip(ctx, "netns", "add", br); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "br0", "type", "bridge"},
		{"link", "set", "br0", "up"},
	} {
		if err := ip(ctx, append([]string{"-n", br}, args...)...); err != nil {
			return err
		}
	}
	// Make the subnet local to this machine before any host exists.
	if b.cfg.Leg {
		// The pair is made in the bridge's namespace with its peer sent to
		// ours (named by our PID), so no name is ever taken in the wrong place.
		if err := ip(ctx, "-n", br, "link", "add", "leg", "type", "veth", "peer", "name", b.LegDev(), "netns", strconv.Itoa(os.Getpid())); err != nil {
			return fmt.Errorf("create root leg: %w", err)
		}
		if err := ip(ctx, "-n", br, "link", "set", "leg", "master", "br0", "up"); err != nil {
			return err
		}
		if err := ip(ctx, "addr", "add", b.addr(legHost).String()+"/24", "dev", b.LegDev()); err != nil {
			return fmt.Errorf("address root leg: %w", err)
		}
		if err := ip(ctx, "link", "set", b.LegDev(), "up"); err != nil {
			return err
		}
	} else if err := ip(ctx, "route", "add", "unreachable", b.cfg.Subnet); err != nil {
		return fmt.Errorf("add unreachable route for %s: %w", b.cfg.Subnet, err)
	}

	if err := os.MkdirAll(b.nsDir(), 0o755); err != nil {
		return err
	}
	// The mount and UTS namespace files must sit on a private mount.
	if err := run(ctx, "mount", "--bind", b.nsDir(), b.nsDir()); err != nil {
		return err
	}
	if err := run(ctx, "mount", "--make-private", b.nsDir()); err != nil {
		return err
	}
	for _, h := range b.hosts {
		if err := b.buildHost(ctx, h); err != nil {
			return fmt.Errorf("build host %q: %w", h.Name, err)
		}
	}
	return b.CheckRoutes(ctx)
}

func (b *Bed) buildHost(ctx context.Context, h *Host) error {
	br := b.BridgeNetns()
	for _, d := range []string{h.Dir, filepath.Join(b.hostDir(h.Name), "procs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := h.setPower(powerState{on: true, boots: 1}); err != nil {
		return err
	}
	if err := ip(ctx, "netns", "add", h.Netns); err != nil {
		return err
	}
	if err := ip(ctx, "-n", br, "link", "add", h.Name, "type", "veth", "peer", "name", "eth0", "netns", h.Netns); err != nil {
		return err
	}
	if err := ip(ctx, "-n", br, "link", "set", h.Name, "master", "br0", "up"); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", h.Addr.String() + "/24", "dev", "eth0"},
		{"link", "set", "eth0", "up"},
	} {
		if err := ip(ctx, append([]string{"-n", h.Netns}, args...)...); err != nil {
			return err
		}
	}
	mnt, uts := h.nsFiles()
	for _, f := range []string{mnt, uts} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			return err
		}
	}
	// A persistent mount and UTS namespace per host: hostname hN, and the
	// bed's hosts file on /etc/hosts. Propagation "slave": mounts made on this
	// machine later still show inside the hosts, never the other way round.
	script := fmt.Sprintf("hostname %s && mount --bind %s /etc/hosts", h.Name, shellQuote(b.etcHosts()))
	return run(ctx, "nsenter", "--net=/run/netns/"+h.Netns, "unshare", "--mount="+mnt, "--uts="+uts,
		"--propagation", "slave", "sh", "-c", script)
}

// Destroy kills every process of the bed (all processes in its hosts'
// namespaces and every recorded process group), deletes its namespaces, leg,
// route and mounts and removes its state directory. It touches nothing that
// does not carry the bed's id and carries on past errors, returning them
// joined.
func (b *Bed) Destroy(ctx context.Context) error {
	var errs []error
	for _, h := range b.hosts {
		if err := b.killHost(ctx, h); err != nil {
			errs = append(errs, err)
		}
	}
	if entries, err := os.ReadDir(b.nsDir()); err == nil {
		for _, e := range entries {
			f := filepath.Join(b.nsDir(), e.Name())
			if isMountPoint(f) {
				if err := run(ctx, "umount", f); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if isMountPoint(b.nsDir()) {
		if err := run(ctx, "umount", b.nsDir()); err != nil {
			errs = append(errs, err)
		}
	}
	// Every namespace named with this bed's prefix, including ones a
	// half-finished build left behind.
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), b.cfg.ID+"-") {
				if err := ip(ctx, "netns", "del", e.Name()); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	// The leg's peer lives in the bridge's namespace: deleting that
	// namespace deletes the pair, a moment later (the kernel cleans a
	// namespace up asynchronously), so the leg may vanish under us.
	if linkExists(ctx, "", b.LegDev()) {
		if err := ip(ctx, "link", "del", b.LegDev()); err != nil && linkExists(ctx, "", b.LegDev()) {
			errs = append(errs, err)
		}
	}
	if !b.cfg.Leg {
		if out, _ := output(ctx, "ip", "route", "show", "type", "unreachable", b.cfg.Subnet); strings.TrimSpace(out) != "" {
			if err := ip(ctx, "route", "del", "unreachable", b.cfg.Subnet); err != nil {
				errs = append(errs, err)
			}
		}
	}
	b.mu.Lock()
	procs := make([]*Process, 0, len(b.procs))
	for _, p := range b.procs {
		procs = append(procs, p)
	}
	b.mu.Unlock()
	wait := time.NewTimer(10 * time.Second)
	defer wait.Stop()
	for _, p := range procs {
		select {
		case <-p.done:
		case <-wait.C:
			errs = append(errs, fmt.Errorf("process %d (%s) on host %q did not end", p.PID, p.Role, p.Host.Name))
		}
	}
	if b.cfg.OwnShared {
		if err := os.RemoveAll(b.cfg.SharedDir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(b.dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tear down test bed %s: %w", b.cfg.ID, err)
	}
	b.log.Info("test bed down")
	return nil
}

// claimIndex picks a free bed index: no state directory, no namespace with
// its prefix, no route of this machine covering its subnet. The state
// directory's creation (mkdir is atomic) is the claim.
func claimIndex(ctx context.Context, root string) (int, string, error) {
	netns, _ := os.ReadDir("/run/netns")
	for k := 1; k <= 250; k++ {
		prefix := fmt.Sprintf("hvn%d-", k)
		taken := false
		for _, e := range netns {
			if strings.HasPrefix(e.Name(), prefix) {
				taken = true
				break
			}
		}
		if taken {
			continue
		}
		dir := filepath.Join(root, fmt.Sprintf("hvn%d", k))
		if err := os.Mkdir(dir, 0o755); err != nil {
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			return 0, "", fmt.Errorf("claim test bed dir %s: %w", dir, err)
		}
		// Something else on this machine may already route the subnet (a
		// leftover leg, a VPN): skip it then.
		out, err := output(ctx, "ip", "route", "get", fmt.Sprintf("%s%d.1", subnetPrefix, k))
		if err != nil || !viaDefault(out) {
			os.Remove(dir)
			continue
		}
		return k, dir, nil
	}
	return 0, "", errors.New("no free test bed index in 1..250: tear down old beds (scripts/testbed.sh down --all-stale)")
}

// viaDefault reports whether `ip route get` output shows the address going
// through a gateway, which for a free test subnet is the default route.
func viaDefault(out string) bool {
	return strings.Contains(" "+out+" ", " via ")
}

// ReapStale tears down beds under root whose creating process has died
// without tearing them down (a test binary killed by its timeout). Beds made
// with Options.Persistent are left alone.
func ReapStale(ctx context.Context, root string, log *slog.Logger) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "hvn") {
			continue
		}
		dir := filepath.Join(root, e.Name())
		b, err := Open(dir)
		if err != nil {
			// A directory without bed.json: a claim in progress, or one that
			// died before writing it. Remove it once it is old.
			if st, serr := os.Stat(dir); serr == nil && time.Since(st.ModTime()) > time.Minute {
				if _, jerr := os.Stat(filepath.Join(dir, "bed.json")); errors.Is(jerr, fs.ErrNotExist) {
					os.Remove(dir)
				}
			}
			continue
		}
		if b.cfg.Persistent || processAlive(b.cfg.OwnerPID, b.cfg.OwnerStart) {
			continue
		}
		b.log = log.With("bed", b.cfg.ID)
		log.Warn("reaping stale test bed", "bed", b.cfg.ID, "owner_pid", b.cfg.OwnerPID)
		if err := b.Destroy(ctx); err != nil {
			log.Error("reap stale test bed", "bed", b.cfg.ID, "err", err)
		}
	}
}

// List returns the ids of the beds under root.
func List(root string) []string {
	if root == "" {
		root = DefaultRoot
	}
	var ids []string
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(root, e.Name(), "bed.json")); err == nil {
			ids = append(ids, e.Name())
		}
	}
	// hvn2 before hvn10
	sortByIndex(ids)
	return ids
}

func sortByIndex(ids []string) {
	n := func(s string) int { v, _ := strconv.Atoi(strings.TrimPrefix(s, "hvn")); return v }
	for i := 1; i < len(ids); i++ {
		for j := i; j > 0 && n(ids[j]) < n(ids[j-1]); j-- {
			ids[j], ids[j-1] = ids[j-1], ids[j]
		}
	}
}
