// Package health runs the health checks of the guests on one host (see
// guestdef.Check): guest agent pings and the heartbeat of guests that
// declare a guest agent, TCP connects, HTTP gets and commands run through
// the guest agent. It is built for hundreds of guests per host: one
// scheduler goroutine keeps every check's next run in a heap, and at most
// Workers checks run at a time.
//
// A check that fails Failures times in a row makes the Monitor call OnFail
// once for that run of the guest and stop checking it; the host kills the
// guest and reports it crashed with the reason. Failures do not count
// during the check's start grace, unless the check has passed once in this
// run (then the guest is up and a failure is real).
package health

import (
	"container/heap"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hypervisor/guestagent"
)

// AgentFunc sends a guest agent command to the guest named name (see
// hypervisor.GuestAgent).
type AgentFunc func(ctx context.Context, name string, cmd []byte) (json.RawMessage, error)

// Config wires a Monitor.
type Config struct {
	// Agent reaches guest agents; nil when the driver cannot (agent and
	// exec checks then fail, saying so).
	Agent AgentFunc
	// OnFail is called (from a goroutine of the monitor) when a guest's
	// check failed Failures times in a row.
	OnFail func(guest, reason string)
	// OnChange is called (from the scheduler goroutine, without locks
	// held) when a check of a watched guest changes status: it passes or
	// fails where it did the opposite before, or its count of failures in
	// a row changes. A check that keeps passing does not call it, so the
	// status can be published without a store write every interval.
	OnChange func(guest string)
	// Workers bounds the checks running at once; default 32.
	Workers int
	// Dial connects tcp and http checks; default a net.Dialer. It is only
	// given IP addresses the checks may reach (see Networks).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Networks are where tcp and http checks may connect besides the
	// guest's own addresses (those its guest agent reports): networks an
	// admin declared (agent --health-network), such as the subnet of
	// guests without a guest agent. Any other address is refused. A
	// declared network opens no cluster host's address (HostAddrs) unless
	// it is that single address (a /32 or /128).
	Networks []netip.Prefix
	// GuestNetworks are the networks of a guest's NICs as Haven defines
	// them: the subnets this host has on the bridges they attach to
	// (default: read from the host's interfaces). An address the guest's
	// agent reports is a target only inside them: a guest cannot aim the
	// host's checks at machines on other networks.
	GuestNetworks func(def guestdef.Definition) []netip.Prefix
	// HostAddrs are the addresses of the cluster's hosts (this one's, every
	// registered host's, the store's) that checks never connect to: a guest
	// sharing a bridge with the hosts could otherwise have the host's
	// prober reach their agents and store. Default: this host's interface
	// addresses. Asked once per check run.
	HostAddrs func(ctx context.Context) []netip.Addr
	Logger    *slog.Logger
	Now       func() time.Time
}

// Result is the last outcome of one check, for status pages.
type Result struct {
	Check    string    `json:"check"`
	Kind     string    `json:"kind"`
	OK       bool      `json:"ok"`
	Failures int       `json:"failures"` // in a row
	Output   string    `json:"output,omitempty"`
	At       time.Time `json:"at"`
}

// Monitor runs the checks of the guests it watches.
type Monitor struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client

	mu     sync.Mutex
	guests map[string]*watched // guarded by mu
	gen    uint64              // guarded by mu
	heap   dueHeap             // guarded by mu
	wake   chan struct{}
	done   chan result
}

type watched struct {
	def     guestdef.Definition
	gen     uint64
	started time.Time
	checks  []*check
	addr    string // cached guest address for tcp and http; "" unknown
	failed  bool
	// refused are the targets a check of this run was refused (logged
	// once each).
	refused map[netip.Addr]bool
}

type check struct {
	guestdef.Check
	idx      int
	failures int
	passed   bool // passed once in this run
	last     Result
	running  bool
}

type due struct {
	at    time.Time
	guest string
	gen   uint64
	idx   int
}

type dueHeap []due

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(due)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

type result struct {
	d      due
	ok     bool
	output string
	addr   string // the address used, to drop from the cache on failure
}

// New returns a Monitor; Run starts it.
func New(cfg Config) *Monitor {
	if cfg.Workers <= 0 {
		cfg.Workers = 32
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = d.DialContext
	}
	if cfg.GuestNetworks == nil {
		cfg.GuestNetworks = BridgeNetworks
	}
	if cfg.HostAddrs == nil {
		cfg.HostAddrs = func(context.Context) []netip.Addr { return LocalAddrs() }
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	m := &Monitor{cfg: cfg, log: log.With("component", "health"), guests: map[string]*watched{},
		wake: make(chan struct{}, 1), done: make(chan result, cfg.Workers)}
	m.client = &http.Client{
		Transport: &http.Transport{
			DialContext:       m.dialGuest,
			DisableKeepAlives: true, // hundreds of guests: no idle connections
			// A health check asks whether the service answers, not who it
			// is: guests' certificates rarely name their address.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return m
}

// Watch starts checking a guest that has just started (or was adopted) on
// this host, with def's checks; it replaces an earlier watch of the same
// guest. A guest without checks is not watched.
func (m *Monitor) Watch(def guestdef.Definition) {
	checks := def.Checks()
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.guests, def.Name)
	if len(checks) == 0 {
		return
	}
	m.gen++
	now := m.cfg.Now()
	w := &watched{def: def, gen: m.gen, started: now, addr: def.Address}
	for i, c := range checks {
		w.checks = append(w.checks, &check{Check: c, idx: i, last: Result{Check: c.Name, Kind: c.Kind(), OK: true}})
		heap.Push(&m.heap, due{at: now.Add(c.Interval.D()), guest: def.Name, gen: w.gen, idx: i})
	}
	m.guests[def.Name] = w
	m.poke()
}

// Unwatch stops checking a guest (stopped, crashed, paused, leaving).
func (m *Monitor) Unwatch(name string) {
	m.mu.Lock()
	delete(m.guests, name)
	m.mu.Unlock()
}

// Watching reports whether name's checks run.
func (m *Monitor) Watching(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.guests[name]
	return w != nil && !w.failed
}

// MaxOutput bounds the output kept of a check's last run, in bytes.
const MaxOutput = 256

// truncate cuts s to at most MaxOutput bytes, on a rune boundary.
func truncate(s string) string {
	if len(s) <= MaxOutput {
		return s
	}
	cut := MaxOutput - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Results returns the last result of every check of a watched guest.
func (m *Monitor) Results(name string) []Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.guests[name]
	if w == nil {
		return nil
	}
	out := make([]Result, 0, len(w.checks))
	for _, c := range w.checks {
		r := c.last
		r.Failures = c.failures
		out = append(out, r)
	}
	return out
}

func (m *Monitor) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Run schedules checks until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	inflight := 0
	for {
		wait := time.Hour
		m.mu.Lock()
		for inflight < m.cfg.Workers && len(m.heap) > 0 {
			next := m.heap[0]
			if d := next.at.Sub(m.cfg.Now()); d > 0 {
				wait = d
				break
			}
			heap.Pop(&m.heap)
			w := m.guests[next.guest]
			if w == nil || w.gen != next.gen || w.failed {
				continue // unwatched or watched anew since
			}
			c := w.checks[next.idx]
			c.running = true
			inflight++
			go m.probe(ctx, w.def, w.addr, c.Check, next)
		}
		m.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-timer.C:
		case r := <-m.done:
			inflight--
			m.record(r)
		}
	}
}

// record folds one result in and schedules the check's next run.
func (m *Monitor) record(r result) {
	m.mu.Lock()
	w := m.guests[r.d.guest]
	if w == nil || w.gen != r.d.gen || w.failed {
		m.mu.Unlock()
		return
	}
	c := w.checks[r.d.idx]
	now := m.cfg.Now()
	c.running = false
	before, beforeFailures, first := c.last.OK, c.failures, c.last.At.IsZero()
	c.last = Result{Check: c.Name, Kind: c.Kind(), OK: r.ok, Output: truncate(r.output), At: now}
	var fail string
	if r.ok {
		if !c.passed {
			m.log.Info("health check passed; from now on its failures count", "guest", r.d.guest, "check", c.Name)
		}
		c.failures = 0
		c.passed = true
	} else {
		if r.addr != "" && r.addr == w.addr && w.def.Address == "" {
			w.addr = "" // ask the guest agent again next time
		}
		if c.passed || now.Sub(w.started) >= c.StartGrace.D() {
			c.failures++
		}
		if c.failures >= c.Failures {
			w.failed = true
			what := fmt.Sprintf("health check %q (%s)", c.Name, c.Kind())
			if c.Name == "heartbeat" {
				what = "guest agent heartbeat (a hung guest?)"
			}
			fail = fmt.Sprintf("%s failed %d times in a row: %s", what, c.failures, r.output)
		}
	}
	if fail == "" {
		next := r.d.at.Add(c.Interval.D())
		if next.Before(now) {
			next = now.Add(c.Interval.D())
		}
		heap.Push(&m.heap, due{at: next, guest: r.d.guest, gen: r.d.gen, idx: r.d.idx})
	}
	changed := fail == "" && (first || before != r.ok || beforeFailures != c.failures)
	m.mu.Unlock()
	if changed && m.cfg.OnChange != nil {
		m.cfg.OnChange(r.d.guest)
	}
	if fail != "" {
		m.log.Warn("guest failed its health check", "guest", r.d.guest, "check", c.Name, "reason", fail)
		if m.cfg.OnFail != nil {
			m.cfg.OnFail(r.d.guest, fail)
		}
	}
}

// probe runs one check and hands the result to the scheduler.
func (m *Monitor) probe(ctx context.Context, def guestdef.Definition, addr string, c guestdef.Check, d due) {
	guest := def.Name
	cctx, cancel := context.WithTimeout(ctx, c.Timeout.D())
	out, usedAddr, err := m.run(cctx, def, addr, c)
	cancel()
	r := result{d: d, ok: err == nil, output: out, addr: usedAddr}
	if err != nil {
		r.output = err.Error()
	}
	if usedAddr != "" && usedAddr != addr {
		m.mu.Lock()
		if w := m.guests[guest]; w != nil && w.gen == d.gen {
			w.addr = usedAddr
		}
		m.mu.Unlock()
	}
	select {
	case m.done <- r:
	case <-ctx.Done():
	}
}

// run carries out one check: its output on success, or why it failed.
func (m *Monitor) run(ctx context.Context, def guestdef.Definition, addr string, c guestdef.Check) (string, string, error) {
	guest := def.Name
	call := func(ctx context.Context, cmd []byte) (json.RawMessage, error) {
		if m.cfg.Agent == nil {
			return nil, errors.New("this host's hypervisor driver cannot reach guest agents")
		}
		return m.cfg.Agent(ctx, guest, cmd)
	}
	switch {
	case c.Agent:
		return "", "", guestagent.Ping(ctx, call)
	case len(c.Exec) > 0:
		res, err := guestagent.Exec(ctx, call, c.Exec)
		if err != nil {
			return "", "", err
		}
		out := ""
		if res.Output != "" {
			out = ": " + res.Output
		}
		if res.Signal != 0 {
			return res.Output, "", fmt.Errorf("%s killed by signal %d%s", c.Exec[0], res.Signal, out)
		}
		if res.ExitCode != c.ExitCode {
			return res.Output, "", fmt.Errorf("%s exited %d, want %d%s", c.Exec[0], res.ExitCode, c.ExitCode, out)
		}
		return res.Output, "", nil
	}
	g := &guard{guest: guest, networks: m.cfg.Networks, call: call, guestNets: func() []netip.Prefix { return m.cfg.GuestNetworks(def) },
		hostAddrs: m.cfg.HostAddrs, bridges: bridges(def)}
	if addr == "" {
		addrs, err := g.guestAddrs(ctx)
		if err != nil {
			return "", "", fmt.Errorf("no address for the guest (set the definition's address, or run a guest agent): %w", err)
		}
		if len(addrs) == 0 {
			return "", "", errors.New("no address for the guest: its guest agent reports none")
		}
		addr = addrs[0].String()
	}
	ctx = context.WithValue(ctx, guardKey{}, g)
	switch {
	case c.TCP != 0:
		target := net.JoinHostPort(addr, strconv.Itoa(c.TCP))
		conn, err := m.dialGuest(ctx, "tcp", target)
		if err != nil {
			return "", addr, fmt.Errorf("connect %s: %w", target, err)
		}
		conn.Close()
		return "connected to " + target, addr, nil
	case c.HTTP != "":
		u, err := url.Parse(c.HTTP)
		if err != nil {
			return "", addr, fmt.Errorf("URL %q: %w", c.HTTP, err)
		}
		if h := u.Hostname(); h == "" || h == "guest" {
			if p := u.Port(); p != "" {
				u.Host = net.JoinHostPort(addr, p)
			} else {
				u.Host = addr
				if net.ParseIP(addr) != nil && net.ParseIP(addr).To4() == nil {
					u.Host = "[" + addr + "]"
				}
			}
		}
		req, err := http.NewRequestWithContext(ctx, "GET", u.String(), nil)
		if err != nil {
			return "", addr, err
		}
		resp, err := m.client.Do(req)
		if err != nil {
			return "", addr, fmt.Errorf("GET %s: %w", u, err)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode != c.Status {
			return "", addr, fmt.Errorf("GET %s: status %d, want %d", u, resp.StatusCode, c.Status)
		}
		return fmt.Sprintf("GET %s: %d", u, resp.StatusCode), addr, nil
	}
	return "", addr, fmt.Errorf("check %q has no kind", c.Name)
}

// guardKey carries a check's guard to dialGuest (through the HTTP client).
type guardKey struct{}

// guard decides where one run of a guest's check may connect: an address
// its guest agent reports for one of its NICs (asked once per run) inside
// the guest's own networks, or one in an admin-declared network. Never a
// cluster host's address (unless declared as that single address), nor
// loopback, link-local, multicast or unspecified addresses (unless
// declared).
type guard struct {
	guest     string
	networks  []netip.Prefix
	call      guestagent.Caller
	guestNets func() []netip.Prefix
	hostAddrs func(context.Context) []netip.Addr
	bridges   []string
	asked     bool
	addrs     []netip.Addr
	err       error
	hosts     []netip.Addr // hostAddrs' answer, once asked
	askedHost bool
}

func (g *guard) guestAddrs(ctx context.Context) ([]netip.Addr, error) {
	if !g.asked {
		g.asked = true
		var list []string
		if list, g.err = guestagent.Addresses(ctx, g.call); g.err == nil {
			for _, s := range list {
				if a, err := netip.ParseAddr(s); err == nil {
					g.addrs = append(g.addrs, a.Unmap().WithZone(""))
				}
			}
		}
	}
	return g.addrs, g.err
}

// isHost reports whether ip is a cluster host's address.
func (g *guard) isHost(ctx context.Context, ip netip.Addr) bool {
	if !g.askedHost {
		g.askedHost = true
		if g.hostAddrs != nil {
			g.hosts = g.hostAddrs(ctx)
		}
	}
	for _, h := range g.hosts {
		if h.Unmap().WithZone("") == ip {
			return true
		}
	}
	return false
}

// allow says why a check may not connect to ip, or nil.
func (g *guard) allow(ctx context.Context, ip netip.Addr) error {
	ip = ip.Unmap().WithZone("")
	for _, p := range g.networks {
		if p.IsSingleIP() && p.Addr().Unmap() == ip {
			return nil // the admin named this very address
		}
	}
	if !ip.IsLoopback() && g.isHost(ctx, ip) {
		return fmt.Errorf("%s is an address of a cluster host (this one, another host or the store): health checks never connect there unless the host's admin declares that very address (agent --health-network %s): not connected", ip, netip.PrefixFrom(ip, ip.BitLen()))
	}
	for _, p := range g.networks {
		if p.Contains(ip) {
			return nil
		}
	}
	if ip.IsLoopback() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() {
		return fmt.Errorf("%s is not the guest's address (loopback, link-local, multicast or unspecified) and not in a network declared for health checks (agent --health-network): not connected", ip)
	}
	addrs, err := g.guestAddrs(ctx)
	if err != nil {
		return fmt.Errorf("%s is not in a network declared for health checks (agent --health-network), and the guest agent cannot confirm it is the guest's: %w: not connected", ip, err)
	}
	if !slices.Contains(addrs, ip) {
		return fmt.Errorf("%s is not one of the guest's addresses (its guest agent reports %v) nor in a network declared for health checks (agent --health-network): not connected", ip, addrs)
	}
	nets := g.guestNets()
	for _, p := range nets {
		if p.Contains(ip) {
			return nil
		}
	}
	return fmt.Errorf("%s, which the guest's agent reports, is not in the guest's networks (%s) nor in a network declared for health checks (agent --health-network): not connected", ip, describeNets(g.bridges, nets))
}

// describeNets says what a guest's networks are, for a refusal.
func describeNets(bridges []string, nets []netip.Prefix) string {
	switch {
	case len(bridges) == 0:
		return "it has no NIC on a host bridge"
	case len(nets) == 0:
		return fmt.Sprintf("this host has no address on its bridges %s", strings.Join(bridges, ", "))
	}
	return fmt.Sprintf("%v on this host's bridges %s", nets, strings.Join(bridges, ", "))
}

// bridges lists the host bridges def's NICs attach to.
func bridges(def guestdef.Definition) []string {
	var out []string
	for _, n := range def.NICs {
		if n.Bridge != "" && !slices.Contains(out, n.Bridge) {
			out = append(out, n.Bridge)
		}
	}
	return out
}

// BridgeNetworks are def's networks as Haven defines them: the subnets of
// this host's addresses on the bridges def's NICs attach to (a NIC with
// user networking reaches no network of the host's).
func BridgeNetworks(def guestdef.Definition) []netip.Prefix {
	var out []netip.Prefix
	for _, b := range bridges(def) {
		ifi, err := net.InterfaceByName(b)
		if err != nil {
			continue
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if p, err := netip.ParsePrefix(n.String()); err == nil && !p.Addr().IsLinkLocalUnicast() {
					out = append(out, p.Masked())
				}
			}
		}
	}
	return out
}

// LocalAddrs are this host's interface addresses.
func LocalAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// logRefused logs, once per target and run of the guest, that a check was
// refused a connection (the check's result says it at every run).
func (m *Monitor) logRefused(guest string, ip netip.Addr, why error) {
	m.mu.Lock()
	w := m.guests[guest]
	first := w != nil && !w.refused[ip]
	if first {
		if w.refused == nil {
			w.refused = map[netip.Addr]bool{}
		}
		w.refused[ip] = true
	}
	m.mu.Unlock()
	if first {
		m.log.Warn("health check target refused", "guest", guest, "target", ip.String(), "reason", why.Error())
	}
}

// dialGuest connects a check to addr (HOST:PORT) if its guard allows the
// address: a name is resolved here and the allowed address itself dialed,
// so a name cannot resolve differently for the check and the connection.
func (m *Monitor) dialGuest(ctx context.Context, network, addr string) (net.Conn, error) {
	g, _ := ctx.Value(guardKey{}).(*guard)
	if g == nil {
		return nil, errors.New("health check connection without a guard")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else if ips, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host); err != nil {
		return nil, err
	}
	var refused error
	for _, ip := range ips {
		if err := g.allow(ctx, ip); err != nil {
			if refused == nil {
				refused = err
			}
			m.logRefused(g.guest, ip, err)
			continue
		}
		return m.cfg.Dial(ctx, network, net.JoinHostPort(ip.WithZone("").String(), port))
	}
	if refused == nil {
		refused = fmt.Errorf("%s resolves to no address", host)
	}
	return nil, refused
}
