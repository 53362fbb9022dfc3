// Package agent owns the per-host daemon behind `haven agent`: its data dir
// (locked, so one agent per dir), creating a cluster (--init) or joining one
// (--join, with a token and a CSR), the embedded store member or the
// external store connection, the host's liveness lease, the manager
// election and the API server. Other components plug in with Register (or
// Agent.OnManager): code that runs while this agent is the manager, and
// setup code that registers API endpoints.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/fence"
	"github.com/haven-ha/haven/internal/heartbeat"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/version"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults.
const (
	DefaultClusterName  = "haven"
	DefaultStoreMembers = 3
	DefaultAPIPort      = 7400
	DefaultPeerPort     = 7401 // the store client port is the peer port + 1
)

// Config configures an agent. Zero values take the documented defaults.
type Config struct {
	Node    string
	DataDir string
	// Listen is the API address, host:port (HTTPS).
	Listen string
	// PeerListen is the store peer address, host:port. A store member also
	// serves store clients on StoreClientListen, by default the same host
	// with the port after PeerListen's.
	PeerListen        string
	StoreClientListen string

	// Init creates a new cluster named ClusterName with StoreMembers (3 or
	// 5) voting store members.
	Init         bool
	ClusterName  string
	StoreMembers int
	// JoinAddr (https://host:port of any agent) and JoinToken join an
	// existing cluster.
	JoinAddr  string
	JoinToken string
	// Dev marks a single-host development cluster (see `haven agent --dev`).
	Dev bool

	// StoreEndpoints use an external etcd instead of the embedded one,
	// with optional TLS files.
	StoreEndpoints []string
	StoreCA        string
	StoreCert      string
	StoreKey       string

	// LeaseTTL is how long after its last keepalive a host counts as down
	// (default store.DefaultLeaseTTL, 8 s); KeepAlive is the renewal
	// interval (default 1 s).
	LeaseTTL  time.Duration
	KeepAlive time.Duration
	// StoreTickMs and StoreElectionMs tune the embedded etcd (defaults
	// 100 and 1000).
	StoreTickMs, StoreElectionMs uint
	// CertRenewBefore is how long before its expiry the host's certificate
	// is renewed (default DefaultCertRenewBefore); the agent looks at
	// start and then every CertCheckEvery (default 1 h).
	CertRenewBefore, CertCheckEvery time.Duration

	// Hypervisor names the driver reported in the node facts; "none" for a
	// host that runs no guests (never offered to placement).
	Hypervisor string
	// Witness makes the host a witness: a voting store member that counts
	// for quorum and never runs guests, needs no hypervisor or fence
	// device and is never fenced (like corosync-qdevice).
	Witness bool

	// MetricsListen, when set, also serves /metrics, /healthz and /readyz
	// over plain HTTP (they are always on the API).
	MetricsListen string
	// HeartbeatListen is the UDP address for direct heartbeats between
	// agents (package heartbeat); default: the API host with the API port
	// + 3 (7403); "off" sends none (the lease alone tells this host's
	// death). HeartbeatDeadAfter overrides heartbeat.DefaultDeadAfter.
	HeartbeatListen    string
	HeartbeatDeadAfter time.Duration
	// StorageHeartbeat is a directory on storage all hosts share, where
	// the agent also writes a heartbeat and reads the others': a host cut
	// off from the network but alive is then reported isolated, not dead.
	StorageHeartbeat string
	// FenceAgentDirs are directories an admin declared for fence agents of
	// their own, besides the fence_* programs on the search path
	// (fence.Runner.AgentDirs). Each must be owned by root and writable by
	// no one else.
	FenceAgentDirs []string

	Logger *slog.Logger
	Now    func() time.Time
}

// LeaderFunc runs while this agent is the manager. ctx is cancelled when
// leadership is lost (or the agent stops); every write the manager makes
// must go through l (l.Do / l.DoIf) so a deposed manager cannot write.
// Returning an error resigns leadership (another agent, or this one again,
// takes over); returning nil keeps the office until it is lost.
type LeaderFunc func(ctx context.Context, l *store.Leadership) error

// Plugin is a component that runs inside every agent.
type Plugin struct {
	Name string
	// Setup runs once the store is connected and before the API serves:
	// register API endpoints and status hooks here (a.API()).
	Setup func(ctx context.Context, a *Agent) error
	// WhileManager runs each time this agent becomes the manager.
	WhileManager LeaderFunc
}

// Option configures an agent at New.
type Option func(*Agent)

// WithPlugins adds plugins to the agent, set up in the order given after
// the agent's own operator API. A plugin value belongs to one agent.
func WithPlugins(ps ...Plugin) Option {
	return func(a *Agent) { a.plugins = append(a.plugins, ps...) }
}

// Agent is one host's daemon.
type Agent struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	dir      *dataDir
	state    persisted
	st       *store.Store
	embedded *store.EmbeddedMember
	srv      *api.Server
	live     *store.Liveness
	ln       net.Listener
	hb       *heartbeat.Monitor

	metricsLn  net.Listener
	metricsSrv *http.Server

	// The host's PKI. certPEM changes when the certificate is renewed
	// (under certMu, read through tlsPair once the agent serves).
	caPEM, certPEM, keyPEM []byte
	certMu                 sync.Mutex
	// memberTrust is the trust bundle the store member was started with
	// (under certMu): a CA rotation restarts the member when it changes.
	memberTrust []byte
	reissueMu   sync.Mutex // one certificate re-issue at a time
	// caRestartWaits counts the times a CA rotation's member restart
	// waited for another member's host (tests watch it).
	caRestartWaits atomic.Int32

	plugins []Plugin

	crlMu    sync.Mutex
	crlHooks []func() // OnCACRL

	// Set by init: tokens to show the operator.
	adminToken string
	joinToken  string

	mu        sync.Mutex // guards leader and keepLease
	leader    *store.Leadership
	keepLease func() bool

	stopElection context.CancelFunc
	stopHB       context.CancelFunc
	learnerTick  time.Duration // how often tidyLearners looks; tests shorten it

	ready chan struct{}
	done  chan struct{}
	wg    sync.WaitGroup
}

var nodeNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?$`)

// ValidNodeName reports whether name can name a node: 1 to 63 lower-case
// letters, digits, '-', '_' or '.', starting and ending with a letter or
// digit.
func ValidNodeName(name string) bool { return nodeNameRE.MatchString(name) }

// New checks cfg and fills in defaults. Nothing is touched until Start.
func New(cfg Config, opts ...Option) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClusterName == "" {
		cfg.ClusterName = DefaultClusterName
	}
	if cfg.StoreMembers == 0 {
		cfg.StoreMembers = DefaultStoreMembers
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = store.DefaultLeaseTTL
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = store.DefaultKeepAlive
	}
	if cfg.Witness {
		if cfg.Hypervisor != "" && cfg.Hypervisor != "none" {
			return nil, fmt.Errorf("--witness runs no guests: drop --hypervisor %s", cfg.Hypervisor)
		}
		cfg.Hypervisor = "none"
	}
	if cfg.Hypervisor == "" {
		cfg.Hypervisor = "qemu"
	}
	switch {
	case !ValidNodeName(cfg.Node):
		return nil, fmt.Errorf("node name %q is not valid: use 1 to 63 lower-case letters, digits, '-', '_' or '.'", cfg.Node)
	case (cfg.Init || cfg.JoinAddr != "") && cfg.Node == store.RootUser:
		return nil, fmt.Errorf("node name %q is reserved for the store's administrator: a host certificate named so would be etcd's root", cfg.Node)
	case cfg.DataDir == "":
		return nil, errors.New("no data dir: pass --data-dir")
	case cfg.Init && cfg.JoinAddr != "":
		return nil, errors.New("--init and --join exclude each other: create a cluster or join one")
	case cfg.JoinAddr != "" && cfg.JoinToken == "":
		return nil, errors.New("--join needs --token: create a join token on the cluster with `haven token create --role join`")
	case cfg.StoreMembers != 1 && cfg.StoreMembers != 3 && cfg.StoreMembers != 5:
		return nil, fmt.Errorf("store members %d: use 3 or 5 (1 for a single-host cluster)", cfg.StoreMembers)
	case cfg.LeaseTTL < store.MinLeaseTTL:
		return nil, fmt.Errorf("lease TTL %v is below the store's minimum of %v", cfg.LeaseTTL, store.MinLeaseTTL)
	case cfg.KeepAlive >= cfg.LeaseTTL:
		return nil, fmt.Errorf("keepalive interval %v must be shorter than the lease TTL %v", cfg.KeepAlive, cfg.LeaseTTL)
	}
	if len(cfg.StoreEndpoints) == 0 {
		// etcd silently raises shorter TTLs to 1.5 election timeouts.
		election := time.Duration(cfg.StoreElectionMs) * time.Millisecond
		if election == 0 {
			election = store.DefaultElectionMs * time.Millisecond
		}
		if floor := time.Duration(math.Ceil((election * 3 / 2).Seconds())) * time.Second; cfg.LeaseTTL < floor {
			return nil, fmt.Errorf("lease TTL %v is below the store's minimum of %v with a %v election timeout", cfg.LeaseTTL, floor, election)
		}
	}
	for _, d := range cfg.FenceAgentDirs {
		if !filepath.IsAbs(d) {
			return nil, fmt.Errorf("--fence-agent-dir %q: give an absolute path", d)
		}
		if err := fence.CheckAgentDir(d); err != nil {
			return nil, fmt.Errorf("--fence-agent-dir: %w", err)
		}
	}
	apiHost, apiPort, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: want HOST:PORT: %w", cfg.Listen, err)
	}
	if cfg.HeartbeatListen == "" {
		p, _ := strconv.Atoi(apiPort)
		cfg.HeartbeatListen = net.JoinHostPort(apiHost, strconv.Itoa(p+3))
	}
	if cfg.HeartbeatListen != "off" {
		if _, _, err := net.SplitHostPort(cfg.HeartbeatListen); err != nil {
			return nil, fmt.Errorf("--heartbeat-listen %q: want HOST:PORT or off: %w", cfg.HeartbeatListen, err)
		}
	}
	if len(cfg.StoreEndpoints) == 0 {
		host, port, err := net.SplitHostPort(cfg.PeerListen)
		if err != nil {
			return nil, fmt.Errorf("--peer-listen %q: want HOST:PORT: %w", cfg.PeerListen, err)
		}
		if cfg.StoreClientListen == "" {
			p, _ := strconv.Atoi(port)
			cfg.StoreClientListen = net.JoinHostPort(host, strconv.Itoa(p+1))
		}
	}
	a := &Agent{cfg: cfg, log: cfg.Logger.With("node", cfg.Node), now: cfg.Now, plugins: []Plugin{operatorAPI()}, ready: make(chan struct{}), done: make(chan struct{})}
	for _, o := range opts {
		o(a)
	}
	return a, nil
}

// OnManager adds a LeaderFunc for this agent only (call before Start).
func (a *Agent) OnManager(name string, fn LeaderFunc) {
	a.plugins = append(a.plugins, Plugin{Name: name, WhileManager: fn})
}

// Node is this agent's node name.
func (a *Agent) Node() string { return a.cfg.Node }

// Config is the agent's configuration with defaults filled in.
func (a *Agent) Config() Config { return a.cfg }

// DataDir is the agent's data directory.
func (a *Agent) DataDir() string { return a.cfg.DataDir }

// Store is the cluster store (valid after Start).
func (a *Agent) Store() *store.Store { return a.st }

// API is the API server (valid after Start; plugins get it in Setup).
func (a *Agent) API() *api.Server { return a.srv }

// Liveness is this host's lease holder (valid after Start).
func (a *Agent) Liveness() *store.Liveness { return a.live }

// Leadership is the current manager term of this agent, or nil.
func (a *Agent) Leadership() *store.Leadership {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.leader
}

// IsManager reports whether this agent holds the manager office now.
func (a *Agent) IsManager() bool {
	l := a.Leadership()
	return l != nil && l.Context().Err() == nil
}

// APIURL is the https URL of this agent's API.
func (a *Agent) APIURL() string { return "https://" + a.cfg.Listen }

// Ready is closed once the agent serves its API and holds its lease.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// AdminToken is the admin token created by --init or for this host (empty
// otherwise).
func (a *Agent) AdminToken() string { return a.adminToken }

// JoinToken is the join token created by --init (empty otherwise).
func (a *Agent) JoinToken() string { return a.joinToken }

// FenceRunner runs fence agents from the search path and the agent's
// --fence-agent-dir directories.
func (a *Agent) FenceRunner() *fence.Runner {
	return &fence.Runner{AgentDirs: a.cfg.FenceAgentDirs}
}

// TLSFiles are the paths of the cluster CA, node certificate and key.
func (a *Agent) TLSFiles() (ca, cert, key string) {
	return a.dir.file(dirPKI, "ca.crt"), a.dir.file(dirPKI, "node.crt"), a.dir.file(dirPKI, "node.key")
}

// Start brings the agent up: locks the data dir, creates or joins the
// cluster (or restarts as the same host), connects the store, serves the
// API, takes its lease and enters the manager election. On error nothing
// is left behind by a first init or join.
func (a *Agent) Start(ctx context.Context) (err error) {
	dir, err := openDataDir(a.cfg.DataDir)
	if err != nil {
		return err
	}
	a.dir = dir
	p, existing, err := dir.load()
	if err != nil {
		dir.unlock()
		return err
	}
	fresh := !existing
	if fresh && !dir.empty() {
		dir.unlock()
		return fmt.Errorf("data dir %s is not empty but holds no haven node; use an empty or new --data-dir", a.cfg.DataDir)
	}
	defer func() {
		if err != nil {
			a.teardown()
			if fresh {
				dir.discard()
			} else {
				dir.unlock()
			}
		}
	}()
	// Bind the API first: a taken port fails before anything is created.
	a.ln, err = net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen for the API on %s: %w", a.cfg.Listen, err)
	}
	if a.cfg.MetricsListen != "" {
		if a.metricsLn, err = net.Listen("tcp", a.cfg.MetricsListen); err != nil {
			return fmt.Errorf("listen for metrics on %s: %w", a.cfg.MetricsListen, err)
		}
	}
	switch {
	case existing:
		err = a.restart(ctx, p)
	case a.cfg.Init:
		err = a.bootstrap(ctx)
	case a.cfg.JoinAddr != "":
		err = a.join(ctx)
	default:
		err = fmt.Errorf("data dir %s holds no cluster: pass --init to create one, or --join URL --token TOKEN to join one", a.cfg.DataDir)
	}
	if err != nil {
		return err
	}
	return a.serve(ctx)
}

// restart brings back the host described by the data dir.
func (a *Agent) restart(ctx context.Context, p persisted) error {
	if p.Node != a.cfg.Node {
		return fmt.Errorf("data dir %s belongs to node %q, not %q: pass --node %s or use another --data-dir", a.cfg.DataDir, p.Node, a.cfg.Node, p.Node)
	}
	if a.cfg.JoinToken != "" {
		if tok, err := pki.ParseToken(a.cfg.JoinToken); err == nil && tok.Join && len(p.CAFingerprint) >= len(tok.CAPin) && p.CAFingerprint[:len(tok.CAPin)] != tok.CAPin {
			return fmt.Errorf("data dir %s belongs to another cluster (%q, id %s) than the join token's; use another --data-dir to join", a.cfg.DataDir, p.Cluster, p.ClusterID)
		}
	}
	if a.cfg.Init && p.Cluster != a.cfg.ClusterName && a.cfg.ClusterName != DefaultClusterName {
		return fmt.Errorf("data dir %s already holds cluster %q; use another --data-dir to create %q", a.cfg.DataDir, p.Cluster, a.cfg.ClusterName)
	}
	a.state = p
	if err := a.loadPKI(); err != nil {
		return err
	}
	a.log.Info("restarting as existing node", "op", "start", "cluster", p.Cluster, "store_member", p.StoreMember)
	switch {
	case !p.External && len(a.cfg.StoreEndpoints) > 0:
		return a.moveStore(ctx, true)
	case p.External && len(a.cfg.StoreEndpoints) == 0 && p.PeerURL != "" && exists(a.dir.file(dirStore)):
		return a.moveStore(ctx, false)
	case p.External:
		return a.connectExternal(ctx)
	}
	if p.StoreMember {
		if err := a.startMember(ctx, "", true); err != nil {
			return err
		}
	}
	eps := p.StoreEndpoints
	if p.StoreMember {
		eps = append([]string{p.ClientURL}, without(eps, p.ClientURL)...)
	}
	return a.connect(ctx, eps)
}

func (a *Agent) loadPKI() error {
	ca, cert, key := a.TLSFiles()
	var err error
	if a.caPEM, err = os.ReadFile(ca); err != nil {
		return fmt.Errorf("read cluster CA: %w", err)
	}
	if a.certPEM, err = os.ReadFile(cert); err != nil {
		return fmt.Errorf("read node certificate: %w", err)
	}
	if a.keyPEM, err = os.ReadFile(key); err != nil {
		return fmt.Errorf("read node key: %w", err)
	}
	return nil
}

func (a *Agent) savePKI() error {
	ca, cert, key := a.TLSFiles()
	if err := writeFileAtomic(ca, a.caPEM, 0o644); err != nil {
		return err
	}
	if err := writeFileAtomic(cert, a.certPEM, 0o644); err != nil {
		return err
	}
	return writeFileAtomic(key, a.keyPEM, 0o600)
}

// startMember starts the embedded store member.
func (a *Agent) startMember(ctx context.Context, initialCluster string, existing bool) error {
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	e, err := a.startEmbedded(sctx, initialCluster, existing)
	if err != nil {
		return err
	}
	a.embedded = e
	return nil
}

// startEmbedded starts the embedded store member with the trust bundle of
// DATA/pki/ca.crt.
func (a *Agent) startEmbedded(ctx context.Context, initialCluster string, existing bool) (*store.EmbeddedMember, error) {
	ca, cert, key := a.TLSFiles()
	if err := a.ensureCRL(); err != nil {
		return nil, err
	}
	trust := a.readTrustFile()
	e, err := store.StartEmbedded(ctx, store.EmbeddedConfig{
		Name: a.cfg.Node, Dir: a.dir.file(dirStore),
		PeerURL: a.peerURL(), ClientURL: a.clientURL(),
		InitialCluster: initialCluster, Existing: existing,
		CAFile: ca, CertFile: cert, KeyFile: key, CRLFile: a.CRLFile(),
		TickMs: a.cfg.StoreTickMs, ElectionMs: a.cfg.StoreElectionMs,
		Logger: a.log,
	})
	if err != nil {
		return nil, err
	}
	a.certMu.Lock()
	a.memberTrust = trust
	a.certMu.Unlock()
	return e, nil
}

func (a *Agent) peerURL() string   { return "https://" + a.cfg.PeerListen }
func (a *Agent) clientURL() string { return "https://" + a.cfg.StoreClientListen }

// connect opens the store client over mutual TLS from the cluster CA.
func (a *Agent) connect(ctx context.Context, endpoints []string) error {
	tlsCfg, err := pki.ClientTLS(a.caPEM, a.certPEM, a.keyPEM)
	if err != nil {
		return err
	}
	// A renewed certificate, and the trust bundle of a CA rotation, are
	// used from the next connection on.
	tlsCfg.Certificates = nil
	tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return a.tlsPair() }
	st, err := store.Connect(ctx, store.ClientConfig{Endpoints: endpoints, TLS: tlsCfg, AutoSync: true, Embedded: true, DynamicTLS: a.PeerTLS}, a.embedded, a.log)
	if err != nil {
		return err
	}
	a.st = st
	return nil
}

// connectExternal opens the external etcd with the --store-* settings.
func (a *Agent) connectExternal(ctx context.Context) error {
	if len(a.cfg.StoreEndpoints) == 0 {
		return fmt.Errorf("this host uses an external store: pass --store-endpoints (and --store-ca, --store-cert, --store-key if it uses TLS)")
	}
	tlsCfg, err := externalTLS(a.cfg.StoreCA, a.cfg.StoreCert, a.cfg.StoreKey)
	if err != nil {
		return err
	}
	st, err := store.Connect(ctx, store.ClientConfig{Endpoints: a.cfg.StoreEndpoints, TLS: tlsCfg}, nil, a.log)
	if err != nil {
		return err
	}
	a.st = st
	return nil
}

// livenessAttempts bounds the tries to register this host's liveness at
// start.
const livenessAttempts = 4

// moveStore moves this host from its embedded store member to the
// external etcd of --store-endpoints (toExternal), or back to an embedded
// member whose data directory the operator restored into DATA_DIR/store
// (`haven store restore --to DATA_DIR/store`). Both hold a copy of the
// same cluster (`haven store backup`, then restore): the move is refused
// unless the store reached holds this cluster and the cluster is on hold
// (docs/operations.md, "Moving the store"), so that no manager acts while
// the hosts are split between two stores.
func (a *Agent) moveStore(ctx context.Context, toExternal bool) error {
	p := a.state
	var err error
	if toExternal {
		err = a.connectExternal(ctx)
	} else {
		if err = a.startMember(ctx, "", true); err == nil {
			err = a.connect(ctx, []string{p.ClientURL})
		}
	}
	if err != nil {
		return fmt.Errorf("move the store: %w", err)
	}
	fail := func(format string, args ...any) error {
		a.st.Close()
		a.st = nil
		if a.embedded != nil {
			a.embedded.Close()
			a.embedded = nil
		}
		return fmt.Errorf("move the store: "+format, args...)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cc, err := a.st.ClusterConfig(rctx)
	if err != nil {
		return fail("read the cluster from the new store: %w", err)
	}
	if cc.ID != p.ClusterID {
		return fail("the new store holds cluster %q (id %s), not this host's %q (id %s): restore a backup of this cluster into it", cc.Name, cc.ID, p.Cluster, p.ClusterID)
	}
	pol, err := cluster.New(a.st).Policy(rctx)
	if err != nil {
		return fail("read the cluster policy from the new store: %w", err)
	}
	if !pol.Hold {
		return fail("the cluster is not on hold in the new store: put it on hold (haven policy set --hold on) before the backup, so that no manager acts while hosts are on two stores")
	}
	if err := a.st.SetExternal(rctx, toExternal); err != nil {
		return fail("%w", err)
	}
	if toExternal {
		// The old member's data would start a stale member: set aside.
		old := a.dir.file(dirStore)
		if exists(old) {
			if err := os.Rename(old, fmt.Sprintf("%s.before-move-%d", old, a.now().Unix())); err != nil {
				return fail("set the embedded store's data aside: %w", err)
			}
		}
		p.External, p.StoreMember, p.StoreEndpoints = true, false, a.cfg.StoreEndpoints
	} else {
		p.External, p.StoreMember, p.StoreEndpoints = false, true, []string{p.ClientURL}
	}
	if err := a.dir.save(p); err != nil {
		return fail("record the move: %w", err)
	}
	a.state = p
	a.log.Warn("moved to another store", "op", "start", "external", p.External, "endpoints", p.StoreEndpoints)
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// serve registers plugins, serves the API, takes the lease and starts the
// election loop.
func (a *Agent) serve(ctx context.Context) error {
	a.refreshEndpoints(ctx)
	a.srv = api.New(api.Config{Store: a.st, Node: a.cfg.Node, Logger: a.log, Now: a.now})
	a.registerJoin()
	a.registerHealth()
	for _, p := range a.plugins {
		if p.Setup != nil {
			if err := p.Setup(ctx, a); err != nil {
				return fmt.Errorf("set up %s: %w", p.Name, err)
			}
		}
	}
	tlsCfg, err := pki.ServerTLS(a.caPEM, a.certPEM, a.keyPEM, false)
	if err != nil {
		return err
	}
	tlsCfg.Certificates = nil
	tlsCfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return a.tlsPair() }
	// Client certificates are checked against the trust bundle of the
	// moment (a CA rotation changes it).
	base := tlsCfg.Clone()
	tlsCfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool, err := pki.Pool(a.trustPEM())
		if err != nil {
			return nil, err
		}
		c := base.Clone()
		c.ClientCAs = pool
		return c, nil
	}
	ln := a.ln
	if a.metricsLn != nil {
		a.serveMetricsHTTP(a.metricsLn)
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.srv.Serve(ln, tlsCfg); err != nil {
			a.log.Error("API server stopped", "op", "api", "err", err)
		}
	}()
	facts := model.NodeFacts{
		Name: a.cfg.Node, Memory: hostMemory(), CPUs: hostCPUs(), CPUModels: hostCPUModels(), Hypervisor: a.cfg.Hypervisor,
		AgentVersion: version.String(), FeatureLevel: model.FeatureLevel, BootID: bootID(), APIAddr: a.APIURL(),
		StoreMember: a.state.StoreMember, Since: a.now().UTC(),
		// A host without a hypervisor runs no guests: the manager takes it
		// for a witness, never offered to placement and never fenced.
		Witness: a.cfg.Witness || a.cfg.Hypervisor == "none",
	}
	if a.state.StoreMember {
		facts.PeerAddr = a.peerURL()
	}
	a.st.SetIdentity(a.cfg.Node, a.certPEM, a.keyPEM)
	a.ensureSecretKey(ctx)
	a.startHeartbeat(ctx)
	if a.hb != nil {
		facts.HeartbeatAddr = a.hb.Addr()
	}
	// A store just joined or under load can time a write out (etcd's own
	// 7 s request timeout): try again a few times before giving up the
	// start. A lease granted by a failed try expires by itself; the live
	// key goes with the lease of the last write.
	for attempt := 1; ; attempt++ {
		a.live, err = a.st.ResumeLiveness(ctx, facts, a.cfg.LeaseTTL, a.cfg.KeepAlive, a.readLease())
		if err == nil {
			break
		}
		if attempt == livenessAttempts || ctx.Err() != nil {
			return fmt.Errorf("register this host's liveness (%d tries): %w", attempt, err)
		}
		a.log.Warn("registering this host's liveness failed; trying again", "op", "start", "attempt", attempt, "err", err)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
	}
	a.writeLease(a.live.Lease())
	local := api.Local{APIURL: a.APIURL(), CAFile: a.dir.file(dirPKI, "ca.crt"), Cluster: a.state.Cluster, Node: a.cfg.Node}
	if _, err := os.Stat(a.dir.file(fileAdminToken)); err == nil {
		local.TokenFile = a.dir.file(fileAdminToken)
	}
	if err := writeLocal(a.dir.path, local); err != nil {
		return err
	}
	ectx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.stopElection = cancel
	// The manager election, the revocation list, other hosts' requests
	// for the cluster secret key, the fence configuration's form for older
	// hosts, this host's certificate renewal and its part in CA rotations.
	for _, loop := range []func(context.Context){a.electionLoop, a.syncRevocations, a.grantKeys, a.keepFenceReadable, a.renewLoop, a.caRotationLoop} {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			loop(ectx)
		}()
	}
	close(a.ready)
	a.log.Info("agent ready", "op", "start", "cluster", a.state.Cluster, "api", a.APIURL(), "store_member", a.state.StoreMember)
	return nil
}

// refreshEndpoints records the store members' client URLs in node.json, so
// a restart finds the store even after its membership changed.
func (a *Agent) refreshEndpoints(ctx context.Context) {
	if a.state.External {
		return
	}
	members, err := a.st.Members(ctx)
	if err != nil {
		a.log.Warn("read store members", "op", "start", "err", err)
		return
	}
	var eps []string
	for _, m := range members {
		if !m.Learner {
			eps = append(eps, m.ClientURLs...)
		}
	}
	if len(eps) == 0 || slices.Equal(eps, a.state.StoreEndpoints) {
		return
	}
	a.state.StoreEndpoints = eps
	if err := a.dir.save(a.state); err != nil {
		a.log.Warn("record store endpoints", "op", "start", "err", err)
	}
}

// Run starts the agent and blocks until ctx ends, then stops it.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.Stop(sctx)
	return nil
}

// Stop leaves the office if held, revokes the lease (the host shows down
// at once), stops the API and the store member.
func (a *Agent) Stop(ctx context.Context) {
	t0 := a.now()
	if a.hb != nil {
		// A planned stop: peers leave this host to its lease.
		a.hb.Announce()
		a.stopHB()
	}
	if a.stopElection != nil {
		a.stopElection()
	}
	keepLease := false
	if a.live != nil {
		a.mu.Lock()
		keep := a.keepLease
		a.mu.Unlock()
		if keep != nil && keep() {
			// Guests still run here: the host is not down. The lease is
			// renewed until the store member has stopped (which can take
			// seconds), then left to expire by itself unless the agent
			// comes back first and resumes it (an upgrade or restart).
			keepLease = true
			a.writeLease(a.live.Lease())
			a.log.Info("agent stopping with guests running: lease kept until it expires", "op", "stop")
		} else {
			// Bounded: without a store quorum the revoke cannot succeed, and
			// the lease then simply expires.
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			a.live.Stop(rctx)
			cancel()
			a.writeLease(0)
		}
	}
	if a.srv != nil {
		_ = a.srv.Shutdown(ctx)
	}
	if a.metricsSrv != nil {
		_ = a.metricsSrv.Shutdown(ctx)
	}
	a.wg.Wait()
	t1 := a.now()
	if keepLease {
		if a.st != nil {
			a.st.StopMember()
		}
		a.live.Release()
	}
	a.teardown()
	if a.dir != nil {
		a.dir.unlock()
	}
	a.log.Info("agent stopped", "op", "stop", "took", a.now().Sub(t0).Round(time.Millisecond), "store_close", a.now().Sub(t1).Round(time.Millisecond))
}

// teardown closes what Start opened.
func (a *Agent) teardown() {
	if a.stopHB != nil {
		a.stopHB()
	}
	if a.st != nil {
		a.st.Close()
		a.st = nil
		a.embedded = nil
	}
	if a.embedded != nil {
		a.embedded.Close()
		a.embedded = nil
	}
	if a.ln != nil {
		a.ln.Close()
	}
	if a.metricsLn != nil {
		a.metricsLn.Close()
	}
}

func without(ss []string, x string) []string {
	var out []string
	for _, s := range ss {
		if s != x {
			out = append(out, s)
		}
	}
	return out
}

// hostsOf lists the hosts of addresses for a certificate.
func hostsOf(addrs ...string) []string {
	var hs []string
	seen := map[string]bool{}
	add := func(h string) {
		if h != "" && !seen[h] {
			seen[h] = true
			hs = append(hs, h)
		}
	}
	for _, a := range addrs {
		if a == "" {
			continue
		}
		if u, err := url.Parse(a); err == nil && u.Host != "" {
			a = u.Host
		}
		h, _, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
			ifaddrs, _ := net.InterfaceAddrs()
			for _, ia := range ifaddrs {
				if n, ok := ia.(*net.IPNet); ok {
					add(n.IP.String())
				}
			}
			continue
		}
		add(h)
	}
	add("localhost")
	add("127.0.0.1")
	return hs
}

// KeepLeaseOnStop sets what Stop asks before it revokes the host's lease:
// while fn says yes (guests still run on this host), Stop leaves the lease
// to expire by itself, so the host is not taken for down, and an agent
// started again within the TTL resumes it.
func (a *Agent) KeepLeaseOnStop(fn func() bool) {
	a.mu.Lock()
	a.keepLease = fn
	a.mu.Unlock()
}

// fileLease keeps the ID of the host's current lease, for the next start.
const fileLease = "lease"

func (a *Agent) readLease() clientv3.LeaseID {
	b, err := os.ReadFile(a.dir.file(fileLease))
	if err != nil {
		return 0
	}
	id, err := strconv.ParseInt(strings.TrimSpace(string(b)), 16, 64)
	if err != nil {
		return 0
	}
	return clientv3.LeaseID(id)
}

func (a *Agent) writeLease(id clientv3.LeaseID) {
	if a.dir == nil {
		return
	}
	if id == 0 {
		_ = os.Remove(a.dir.file(fileLease))
		return
	}
	if err := os.WriteFile(a.dir.file(fileLease), []byte(strconv.FormatInt(int64(id), 16)+"\n"), 0o600); err != nil {
		a.log.Warn("lease id not saved", "op", "liveness", "err", err)
	}
}
