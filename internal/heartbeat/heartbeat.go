// Package heartbeat tells a dead host from a live one in about a second and
// a half, faster than its store lease (8 s) and without trusting one signal.
// Every agent sends a small authenticated UDP datagram to every other agent
// every Interval. When a peer falls silent, the monitor also probes the
// peer's host at the kernel level: a TCP connection to its API port, which a
// live kernel answers (accepting it, or refusing it with a reset when the
// agent is down) and a powered-off or cut-off host does not.
//
// A peer is Gone only when both signals agree for DeadAfter: no heartbeat
// and no answer from its address, with several probes failed in a row. A
// silent agent on a host that still answers is Silent (an agent crash or
// restart: the lease decides), and a peer that announced a planned stop
// (Announce, on SIGTERM) is Leaving until it beats again.
//
// The verdicts are evidence, never the safety: the manager acts on Gone only
// where a fence device confirms the host off before any of its guests start
// elsewhere (docs/fencing.md).
package heartbeat

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Defaults.
const (
	DefaultInterval      = 100 * time.Millisecond
	DefaultDeadAfter     = 1500 * time.Millisecond
	DefaultProbeInterval = 200 * time.Millisecond
	DefaultProbeTimeout  = 300 * time.Millisecond
	// DefaultStorageInterval is how often the storage heartbeat is
	// written; the peers' are read storageReads times as often. A silent
	// peer is alive on the storage if its counter moved after its network
	// heartbeats stopped, the last time within storageFresh × that.
	DefaultStorageInterval = 500 * time.Millisecond
	storageFresh           = 4
	storageReads           = 4
	// MinFailedProbes is how many probes in a row must go unanswered
	// before a silent peer is Gone.
	MinFailedProbes = 3
)

// State is what the monitor thinks of a peer.
type State string

const (
	// Unknown: no heartbeat seen from this peer yet (an older agent, or
	// one still starting); never judged.
	Unknown State = "unknown"
	Alive   State = "alive"
	// Silent: no heartbeats, but the host answers (or has not been
	// unanswered long enough): wait for the lease.
	Silent State = "silent"
	// Leaving: the peer announced a planned stop; the lease decides.
	Leaving State = "leaving"
	// Gone: no heartbeat and no answer from the host for DeadAfter.
	Gone State = "gone"
)

// Peer is another agent to beat to and watch.
type Peer struct {
	Name string
	// Heartbeat is its UDP heartbeat address, host:port.
	Heartbeat string
	// Probe is a TCP address of its host that a live kernel answers
	// (its API address, host:port).
	Probe string
}

// Config configures a Monitor. Zero durations take the defaults.
type Config struct {
	Node string
	// Listen is the UDP address to receive heartbeats on, host:port.
	Listen string
	// Key authenticates heartbeats (HMAC-SHA256): every agent of the
	// cluster derives the same key (see Key).
	Key           []byte
	Interval      time.Duration
	DeadAfter     time.Duration
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// ProbeFunc, when set, replaces the TCP probe (tests). It returns nil
	// when the host answered.
	ProbeFunc func(ctx context.Context, addr string) error
	// StorageDir, when set, is a directory on storage every host shares
	// (the guests' NFS, say): each agent also writes a counter there every
	// StorageInterval and watches the others', which tells a host cut off
	// from the cluster network but alive (isolated) from a dead one, as
	// RHEL 5's qdisk and vSphere's datastore heartbeats do.
	StorageDir      string
	StorageInterval time.Duration
	Logger          *slog.Logger
}

// Verdict is the monitor's view of one peer.
type Verdict struct {
	State State
	// Silence is how long since its last heartbeat (0 if never seen).
	Silence time.Duration
	// Unanswered is how long its host has not answered a probe while
	// silent, and Failed how many probes in a row went unanswered.
	Unanswered time.Duration
	Failed     int
	// CutOff: no heartbeat for DeadAfter and no answer from its host
	// since its heartbeats stopped. Unlike Gone it holds when the probes
	// were inconclusive too (this process starved of CPU), or too few.
	CutOff bool
	// StorageAlive: its storage heartbeat moved after its network
	// heartbeats had stopped (it wrote it while silent on the network),
	// the last time recently. A counter that merely moved recently proves
	// nothing: a host that just lost power wrote it a moment before.
	StorageAlive bool
}

// Isolated reports a peer cut off from the network but alive on the
// shared storage, whether or not it is Gone yet.
func (v Verdict) Isolated() bool { return v.CutOff && v.StorageAlive }

func (v Verdict) String() string {
	switch {
	case v.Isolated() && v.Failed == 0:
		return fmt.Sprintf("isolated: no heartbeat for %v and no answer from its address, but it still writes its storage heartbeat", v.Silence.Round(time.Millisecond))
	case v.Isolated():
		return fmt.Sprintf("isolated: no heartbeat for %v and its address unanswered for %v (%d probes), but it still writes its storage heartbeat", v.Silence.Round(time.Millisecond), v.Unanswered.Round(time.Millisecond), v.Failed)
	case v.State == Gone:
		return fmt.Sprintf("no heartbeat for %v and its address unanswered for %v (%d probes)", v.Silence.Round(time.Millisecond), v.Unanswered.Round(time.Millisecond), v.Failed)
	case v.State == Silent && v.CutOff:
		return fmt.Sprintf("no heartbeat for %v and no conclusive answer from its address", v.Silence.Round(time.Millisecond))
	case v.State == Silent:
		return fmt.Sprintf("no heartbeat for %v but its host answers", v.Silence.Round(time.Millisecond))
	}
	return string(v.State)
}

type peerState struct {
	Peer
	udp     *net.UDPAddr
	lastHB  time.Time // when the last valid heartbeat arrived
	inc     int64     // the sender's incarnation of that heartbeat
	seq     uint64
	leaving bool

	probing bool
	lastOK  time.Time // end of the last answered probe
	failed  int       // probes unanswered in a row, started after lastOK
	firstNo time.Time // start of the first of those

	storage     string    // its storage heartbeat as last read
	storageRead time.Time // when it was last read
	storageAt   time.Time // when it was last seen changed
	// storageAfter: that change was written after this moment (the read
	// before it, which still saw the old value).
	storageAfter time.Time
}

// Monitor sends heartbeats to its peers and judges them.
type Monitor struct {
	cfg  Config
	log  *slog.Logger
	conn *net.UDPConn
	inc  int64

	mu       sync.Mutex
	peers    map[string]*peerState
	seq      uint64
	stopping bool
}

// New binds the heartbeat socket. Nothing is sent before Run.
func New(cfg Config) (*Monitor, error) {
	if cfg.Node == "" || len(cfg.Node) > 255 {
		return nil, fmt.Errorf("heartbeat: node name %q: want 1 to 255 bytes", cfg.Node)
	}
	if len(cfg.Key) == 0 {
		return nil, errors.New("heartbeat: no key")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.DeadAfter <= 0 {
		cfg.DeadAfter = DefaultDeadAfter
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.StorageInterval <= 0 {
		cfg.StorageInterval = DefaultStorageInterval
	}
	if cfg.ProbeFunc == nil {
		cfg.ProbeFunc = ProbeTCP
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	addr, err := net.ResolveUDPAddr("udp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("heartbeat address %q: %w", cfg.Listen, err)
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for heartbeats on %s: %w", cfg.Listen, err)
	}
	return &Monitor{cfg: cfg, log: cfg.Logger.With("op", "heartbeat"), conn: conn, inc: time.Now().UnixNano(), peers: map[string]*peerState{}}, nil
}

// Key derives the heartbeat key from a secret every agent of the cluster
// holds (the cluster CA key).
func Key(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("haven heartbeat v1"))
	return m.Sum(nil)
}

// Addr is the address heartbeats are received on.
func (m *Monitor) Addr() string { return m.conn.LocalAddr().String() }

// SetPeers replaces the peers (this node is ignored). What is known of a
// peer that stays is kept.
func (m *Monitor) SetPeers(ps []Peer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	keep := map[string]bool{}
	for _, p := range ps {
		if p.Name == m.cfg.Node || p.Heartbeat == "" {
			continue
		}
		udp, err := net.ResolveUDPAddr("udp", p.Heartbeat)
		if err != nil {
			m.log.Warn("peer heartbeat address unusable", "peer", p.Name, "addr", p.Heartbeat, "err", err)
			continue
		}
		keep[p.Name] = true
		if old, ok := m.peers[p.Name]; ok {
			old.Peer, old.udp = p, udp
			continue
		}
		m.peers[p.Name] = &peerState{Peer: p, udp: udp}
	}
	for name := range m.peers {
		if !keep[name] {
			delete(m.peers, name)
		}
	}
}

// Run sends, receives and probes until ctx ends, then closes the socket.
func (m *Monitor) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.receive()
	}()
	if m.cfg.StorageDir != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.storageLoop(ctx)
		}()
	}
	send := time.NewTicker(m.cfg.Interval)
	probe := time.NewTicker(m.cfg.ProbeInterval)
	defer send.Stop()
	defer probe.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-send.C:
			m.beat(false)
		case <-probe.C:
			m.probe(ctx)
		}
	}
	m.conn.Close()
	wg.Wait()
}

// Announce tells every peer that this agent stops on purpose (an upgrade,
// a restart, a shutdown): they leave it to its lease. Heartbeats stop.
func (m *Monitor) Announce() {
	m.mu.Lock()
	m.stopping = true
	m.mu.Unlock()
	for range 3 {
		m.beat(true)
	}
}

// Stopping reports whether Announce was called: this agent stops, and its
// verdicts go stale (silences only grow).
func (m *Monitor) Stopping() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stopping
}

const (
	magic    = "HVHB1"
	macLen   = 16
	flagStop = 1
)

func (m *Monitor) beat(stop bool) {
	m.mu.Lock()
	if m.stopping && !stop {
		m.mu.Unlock()
		return
	}
	m.seq++
	msg := m.encode(m.seq, stop)
	dsts := make([]*net.UDPAddr, 0, len(m.peers))
	for _, p := range m.peers {
		dsts = append(dsts, p.udp)
	}
	m.mu.Unlock()
	for _, d := range dsts {
		_, _ = m.conn.WriteToUDP(msg, d)
	}
}

func (m *Monitor) encode(seq uint64, stop bool) []byte {
	b := make([]byte, 0, len(magic)+1+8+8+1+len(m.cfg.Node)+macLen)
	b = append(b, magic...)
	var fl byte
	if stop {
		fl |= flagStop
	}
	b = append(b, fl)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint64(b, uint64(m.inc))
	b = append(b, byte(len(m.cfg.Node)))
	b = append(b, m.cfg.Node...)
	mac := hmac.New(sha256.New, m.cfg.Key)
	mac.Write(b)
	return mac.Sum(b)[:len(b)+macLen]
}

type message struct {
	node string
	stop bool
	seq  uint64
	inc  int64
}

func decode(key, b []byte) (message, error) {
	const head = len(magic) + 1 + 8 + 8 + 1
	if len(b) < head+macLen || string(b[:len(magic)]) != magic {
		return message{}, errors.New("not a heartbeat")
	}
	n := int(b[head-1])
	if len(b) != head+n+macLen {
		return message{}, errors.New("bad length")
	}
	body, sum := b[:head+n], b[head+n:]
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil)[:macLen], sum) {
		return message{}, errors.New("bad authenticator")
	}
	return message{
		stop: b[len(magic)]&flagStop != 0,
		seq:  binary.BigEndian.Uint64(b[len(magic)+1:]),
		inc:  int64(binary.BigEndian.Uint64(b[len(magic)+9:])),
		node: string(b[head : head+n]),
	}, nil
}

func (m *Monitor) receive() {
	buf := make([]byte, 512)
	for {
		n, from, err := m.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		msg, err := decode(m.cfg.Key, buf[:n])
		if err != nil {
			m.log.Debug("dropped datagram", "from", from, "err", err)
			continue
		}
		now := time.Now()
		m.mu.Lock()
		p := m.peers[msg.node]
		if p != nil && (msg.inc > p.inc || (msg.inc == p.inc && msg.seq > p.seq)) {
			if msg.stop && !p.leaving {
				m.log.Info("peer announced a planned stop: its lease decides", "peer", msg.node)
			}
			p.inc, p.seq, p.lastHB, p.leaving = msg.inc, msg.seq, now, msg.stop
			p.failed, p.firstNo = 0, time.Time{}
		}
		m.mu.Unlock()
	}
}

// storageLoop writes this node's storage heartbeat and reads the peers'.
func (m *Monitor) storageLoop(ctx context.Context) {
	if err := os.MkdirAll(m.cfg.StorageDir, 0o755); err != nil {
		m.log.Warn("no storage heartbeat", "dir", m.cfg.StorageDir, "err", err)
		return
	}
	// Read more often than written: a change is then seen soon after it
	// was written, and the read before it bounds when it was written.
	t := time.NewTicker(m.cfg.StorageInterval / storageReads)
	defer t.Stop()
	own := filepath.Join(m.cfg.StorageDir, m.cfg.Node+".hb")
	var n uint64
	warned := false
	for tick := 0; ; tick++ {
		if tick%storageReads == 0 {
			n++
			warned = m.writeStorage(own, n, warned)
		}
		m.mu.Lock()
		names := make([]string, 0, len(m.peers))
		for name := range m.peers {
			names = append(names, name)
		}
		m.mu.Unlock()
		for _, name := range names {
			b, err := os.ReadFile(filepath.Join(m.cfg.StorageDir, name+".hb"))
			if err != nil {
				continue
			}
			now := time.Now()
			m.mu.Lock()
			if p := m.peers[name]; p != nil {
				if p.storage != string(b) {
					if p.storage != "" {
						p.storageAt, p.storageAfter = now, p.storageRead
					}
					p.storage = string(b)
				}
				p.storageRead = now
			}
			m.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// writeStorage writes this node's storage heartbeat, counter n, and says
// whether a failure was logged (warned: one already was).
func (m *Monitor) writeStorage(own string, n uint64, warned bool) bool {
	// The incarnation and counter: any change shows the host alive.
	data := []byte(fmt.Sprintf("%d %d\n", m.inc, n))
	tmp := own + ".tmp"
	err := os.WriteFile(tmp, data, 0o644)
	if err == nil {
		err = os.Rename(tmp, own)
	}
	if err == nil {
		return false
	}
	if !warned {
		m.log.Warn("storage heartbeat not written", "file", own, "err", err)
	}
	return true
}

// probe starts a probe of every peer silent for long enough that has none
// in flight.
func (m *Monitor) probe(ctx context.Context) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.peers {
		if p.lastHB.IsZero() || p.probing || p.Probe == "" || now.Sub(p.lastHB) < m.probeAfter() {
			continue
		}
		p.probing = true
		go func(p *peerState, addr string) {
			start := time.Now()
			pctx, cancel := context.WithTimeout(ctx, m.cfg.ProbeTimeout)
			err := m.cfg.ProbeFunc(pctx, addr)
			cancel()
			end := time.Now()
			m.mu.Lock()
			defer m.mu.Unlock()
			p.probing = false
			if ctx.Err() != nil {
				return
			}
			switch {
			case err == nil:
				p.lastOK, p.failed, p.firstNo = end, 0, time.Time{}
			case end.Sub(start) > 2*m.cfg.ProbeTimeout:
				// This process was starved: the answer may have come and
				// not been seen. Inconclusive.
			case start.After(p.lastOK) && start.After(p.lastHB):
				if p.failed == 0 {
					p.firstNo = start
				}
				p.failed++
			}
		}(p, p.Probe)
	}
}

// probeAfter is how long a peer must be silent before it is probed: probes
// of a live agent's API port show in its log as aborted TLS handshakes, so
// they are not sent while heartbeats flow (400 ms with the defaults).
func (m *Monitor) probeAfter() time.Duration { return m.cfg.DeadAfter * 4 / 15 }

// ProbeTCP is the kernel-level probe: the host answered if a TCP connection
// to addr was accepted or refused (a reset: the kernel is up, nothing
// listens). A timeout or an unreachable host is no answer.
func ProbeTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		c.Close()
		return nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	return err
}

// Verdict is the monitor's view of peer name.
func (m *Monitor) Verdict(name string) Verdict {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.peers[name]
	if p == nil || p.lastHB.IsZero() {
		return Verdict{State: Unknown}
	}
	return m.judge(p, time.Now())
}

func (m *Monitor) judge(p *peerState, now time.Time) Verdict {
	v := Verdict{Silence: now.Sub(p.lastHB), Failed: p.failed}
	// Its network heartbeats stopped when it was last heard plus the
	// silence that still counts as alive: a host that died sent its last
	// heartbeat less than that before. A storage write seen after a read
	// made later than that was made while the host was silent.
	stopped := p.lastHB.Add(m.aliveFor())
	v.StorageAlive = !p.storageAt.IsZero() && now.Sub(p.storageAt) < storageFresh*m.cfg.StorageInterval && !p.storageAfter.Before(stopped)
	if !p.firstNo.IsZero() {
		heard := p.lastHB
		if p.lastOK.After(heard) {
			heard = p.lastOK
		}
		v.Unanswered = now.Sub(heard)
	}
	switch {
	case p.leaving:
		v.State = Leaving
	case v.Silence < m.aliveFor():
		v.State = Alive
	case v.Silence >= m.cfg.DeadAfter && p.failed >= MinFailedProbes && v.Unanswered >= m.cfg.DeadAfter:
		v.State = Gone
	default:
		v.State = Silent
	}
	answered := p.lastOK.After(p.lastHB)
	v.CutOff = (v.State == Gone || v.State == Silent) && v.Silence >= m.cfg.DeadAfter && !answered
	return v
}

// aliveFor is the silence after which a peer's heartbeats count as stopped
// (two lost heartbeats and a half: 250 ms with the defaults).
func (m *Monitor) aliveFor() time.Duration { return 2*m.cfg.Interval + m.cfg.Interval/2 }

// Verdicts is the view of every peer, by name.
func (m *Monitor) Verdicts() map[string]Verdict {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	out := make(map[string]Verdict, len(m.peers))
	for name, p := range m.peers {
		if p.lastHB.IsZero() {
			out[name] = Verdict{State: Unknown}
			continue
		}
		out[name] = m.judge(p, now)
	}
	return out
}
