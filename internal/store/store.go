// Package store owns Haven's cluster state in etcd: starting the embedded
// etcd server (or connecting to an external etcd), the key layout (keys.go),
// store membership (learners promoted when caught up), node liveness leases,
// the manager election and leader-guarded writes (Leadership).
//
// Other components reach etcd through Store.Client; writes the manager makes
// must go through a Leadership so that a deposed manager cannot write.
package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
)

// Defaults for the embedded etcd, tuned for a LAN: a leader failure is seen
// within about a second. With these, etcd's minimum lease TTL is
// ceil(1.5 * ElectionMs) = 2 s.
const (
	DefaultTickMs              = 100
	DefaultElectionMs          = 1000
	DefaultQuotaBytes          = 2 << 30 // 2 GiB backend quota
	DefaultCompactionRetention = "1h"    // periodic auto-compaction
)

// Sentinel errors.
var (
	ErrNotLeader = errors.New("not the manager any more")
	ErrConflict  = errors.New("conflicting change")
	ErrExists    = errors.New("already exists")
	ErrNotFound  = errors.New("not found")
)

// EmbeddedConfig describes the embedded etcd member of this host.
type EmbeddedConfig struct {
	Name      string // member name: the node name
	Dir       string // etcd data directory
	PeerURL   string // https://host:port, listened on and advertised
	ClientURL string // https://host:port, listened on and advertised
	// InitialCluster is "name=peerURL,..." when joining an existing
	// cluster; empty to start a new single-member cluster.
	InitialCluster string
	// Existing is true when the member restarts or joins (data dir or
	// cluster already exists).
	Existing bool
	CAFile   string
	CertFile string
	KeyFile  string
	// CRLFile, when set, is the revocation list of host certificates the
	// member refuses (it must exist).
	CRLFile             string
	TickMs, ElectionMs  uint
	QuotaBytes          int64
	CompactionRetention string
	Logger              *slog.Logger
}

// ClientConfig says how to reach the store as a client.
type ClientConfig struct {
	Endpoints []string
	TLS       *tls.Config
	// AutoSync refreshes the endpoints from the member list (embedded
	// stores only; external etcd endpoints are used as given).
	AutoSync bool
	// Embedded says the store is Haven's embedded etcd, which the agents
	// administer as its root user (admin.go).
	Embedded bool
	// DynamicTLS, when set, gives the TLS configuration of every new
	// connection (TLS is then only the first): the hosts' trust bundle
	// changes while the cluster CA is rotated.
	DynamicTLS func() *tls.Config
}

// Store is a connection to the cluster store, with the embedded server
// when this host runs one.
type Store struct {
	cli    *clientv3.Client
	server *EmbeddedMember
	// tls and embedded are the ClientConfig's, for the root client.
	tls      *tls.Config
	dynTLS   func() *tls.Config // ClientConfig.DynamicTLS
	embedded bool
	log      *slog.Logger
	id       identity // the host whose keyring entry opens sealed values

	conns *conns // the client's connections, to cut (Sever)

	closeMu       sync.Mutex
	memberStopped bool
	restartFailed bool // RestartMember stopped the member and could not start it
	cliClosed     bool
	// candidates tells which hosts' members store leadership may move to
	// (SetLeaderCandidates); guarded by closeMu.
	candidates func(name string) bool

	// campaignWake wakes a waiting candidate's read of the election
	// (WakeCampaign); campaignPoll, when set (tests), replaces the
	// interval of that read.
	campaignWake chan struct{}
	campaignPoll time.Duration
}

// StartEmbedded starts this host's etcd member and waits until it is ready
// (or ctx ends).
func StartEmbedded(ctx context.Context, c EmbeddedConfig) (*EmbeddedMember, error) {
	cfg := embed.NewConfig()
	cfg.Name = c.Name
	cfg.Dir = c.Dir
	pu, err := url.Parse(c.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("parse peer URL %q: %w", c.PeerURL, err)
	}
	cu, err := url.Parse(c.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("parse client URL %q: %w", c.ClientURL, err)
	}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.TickMs = orUint(c.TickMs, DefaultTickMs)
	cfg.ElectionMs = orUint(c.ElectionMs, DefaultElectionMs)
	cfg.QuotaBackendBytes = c.QuotaBytes
	if cfg.QuotaBackendBytes == 0 {
		cfg.QuotaBackendBytes = DefaultQuotaBytes
	}
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = c.CompactionRetention
	if cfg.AutoCompactionRetention == "" {
		cfg.AutoCompactionRetention = DefaultCompactionRetention
	}
	cfg.PreVote = true
	cfg.InitialClusterToken = "haven"
	if c.InitialCluster != "" {
		cfg.InitialCluster = c.InitialCluster
	} else {
		cfg.InitialCluster = c.Name + "=" + c.PeerURL
	}
	if c.Existing {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	} else {
		cfg.ClusterState = embed.ClusterStateFlagNew
	}
	cfg.PeerTLSInfo.CertFile = c.CertFile
	cfg.PeerTLSInfo.KeyFile = c.KeyFile
	cfg.PeerTLSInfo.TrustedCAFile = c.CAFile
	cfg.PeerTLSInfo.ClientCertAuth = true
	// Hosts on one machine (or behind NAT) connect from addresses that are
	// not in their certificates; the private cluster CA is the trust anchor.
	cfg.PeerTLSInfo.SkipClientSANVerify = true
	cfg.ClientTLSInfo.CertFile = c.CertFile
	cfg.ClientTLSInfo.KeyFile = c.KeyFile
	cfg.ClientTLSInfo.TrustedCAFile = c.CAFile
	cfg.ClientTLSInfo.ClientCertAuth = true
	// Revoked host certificates (haven node remove) are refused on every
	// handshake: etcd reads the file each time.
	cfg.ClientTLSInfo.CRLFile = c.CRLFile
	// AEAD suites only on TLS 1.2 (TLS 1.3 is preferred anyway).
	cfg.CipherSuites = []string{
		"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
		"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
	}
	cfg.PeerTLSInfo.CRLFile = c.CRLFile
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{embed.StdErrLogOutput}
	cfg.Logger = "zap"
	// etcd's warnings and errors go to the agent's log (its debug output
	// too when the agent logs at debug).
	etcdLevel := zapcore.WarnLevel
	if c.Logger != nil && c.Logger.Enabled(ctx, slog.LevelDebug) {
		etcdLevel = zapcore.DebugLevel
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(slogZap(c.Logger, etcdLevel, "etcd"))
	cfg.Metrics = "basic"
	cfg.MaxLearners = 1
	// etcd's strict check refuses even a learner until the local member has
	// been connected to a quorum for 5 s, which delays the second and third
	// joins for no gain: a learner does not vote. Promotion still requires
	// the learner to have caught up, and Haven removes only members of
	// hosts that are down.
	cfg.StrictReconfigCheck = false
	gate, gopts := gateOptions()
	cfg.GRPCAdditionalServerOptions = append(cfg.GRPCAdditionalServerOptions, gopts...)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start store member %q: %w", c.Name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return &EmbeddedMember{Etcd: e, gate: gate}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("start store member %q: %w", c.Name, err)
	case <-ctx.Done():
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("start store member %q: not ready: %w", c.Name, ctx.Err())
	}
}

// Connect opens a client connection to the store. server, when not nil, is
// this host's embedded member, closed with the Store.
func Connect(ctx context.Context, c ClientConfig, server *EmbeddedMember, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.Default()
	}
	cfg := clientv3.Config{
		Endpoints:            c.Endpoints,
		TLS:                  c.TLS,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               slogZap(log, zapcore.ErrorLevel, "etcd-client"),
	}
	cs := &conns{}
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithContextDialer(cs.dial))
	if c.AutoSync {
		cfg.AutoSyncInterval = 30 * time.Second
	}
	if c.DynamicTLS != nil {
		// After clientv3's own credentials: the later option wins.
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithTransportCredentials(DynamicTLS(c.DynamicTLS)))
	}
	cfg.Context = context.WithoutCancel(ctx)
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to store at %v: %w", c.Endpoints, err)
	}
	// Check that the store answers.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Get(cctx, KeyClusterConfig); err != nil {
		cli.Close()
		return nil, fmt.Errorf("reach store at %v: %w", c.Endpoints, err)
	}
	return &Store{cli: cli, server: server, log: log, campaignWake: make(chan struct{}, 1), conns: cs, tls: c.TLS, dynTLS: c.DynamicTLS, embedded: c.Embedded}, nil
}

// Sever closes the client's connections to the given store endpoints, so
// that the streams on them (lease keepalives, watches) fail now and are
// opened again on the members the client still uses: call it after
// pointing the client away from them (SetEndpoints), for members that do
// not answer. It returns how many connections it closed.
func (s *Store) Sever(endpoints []string) int {
	if s.conns == nil {
		return 0
	}
	return s.conns.sever(endpoints)
}

// Client is the etcd client, for reads, watches and non-manager writes.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Server is this host's embedded etcd member, or nil.
func (s *Store) Server() *EmbeddedMember {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	return s.server
}

// Close stops the embedded member (StopMember) and closes the client.
func (s *Store) Close() error {
	s.StopMember()
	return s.closeClient()
}

func (s *Store) closeClient() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.cliClosed {
		return nil
	}
	s.cliClosed = true
	return s.cli.Close()
}

// StopMember stops this host's embedded member, if it has one, and keeps
// the client working through the other members: it hands store leadership
// over, points the client at the others, then stops raft and the member's
// listeners. An agent stopping with guests running keeps its lease alive
// this way until the very end: closing the listeners waits for the streams
// other hosts' clients hold on this member (etcd allows them its request
// timeout, several seconds), and a lease left without keepalives meanwhile
// could expire before the agent is back (an upgrade would fence the host).
// With no other member the client is closed first: its own streams would
// hold the listeners up.
func (s *Store) StopMember() {
	s.closeMu.Lock()
	if s.server == nil || s.memberStopped {
		s.closeMu.Unlock()
		return
	}
	s.memberStopped = true
	s.closeMu.Unlock()
	s.handOver()
	if !s.avoidLocalMember() {
		_ = s.closeClient()
	}
	// Raft is stopped now: requests still pending fail at once instead of
	// holding up the listeners' shutdown for the request timeout. Client
	// requests are refused first: none may reach the backend once it is
	// closed (memberGate).
	s.server.closeGate(time.Second)
	s.server.Server.HardStop()
	s.server.Close()
}

// RestartMember stops this host's embedded member as StopMember does
// (leadership handed over, the client on the other members) and starts it
// again with start: etcd reads its trusted CAs only when it starts, so a
// CA rotation restarts every member, one at a time. When start fails the
// member stays down and RestartMember may be called again.
func (s *Store) RestartMember(ctx context.Context, start func(context.Context) (*EmbeddedMember, error)) error {
	s.closeMu.Lock()
	if s.server == nil || s.cliClosed || (s.memberStopped && !s.restartFailed) {
		s.closeMu.Unlock()
		return errors.New("restart the store member: this host has none running")
	}
	stop := !s.memberStopped
	s.memberStopped = true
	old := s.server
	s.closeMu.Unlock()
	if stop {
		s.handOver()
		if s.avoidLocalMember() {
			// Requests and streams on this member move to the others now,
			// not when its listeners close.
			var local []string
			for _, u := range old.Config().AdvertiseClientUrls {
				local = append(local, u.String())
			}
			s.Sever(local)
		}
		// As StopMember: client requests refused first (memberGate), then
		// raft stopped, so that the listeners close without waiting for
		// other hosts' streams.
		old.closeGate(time.Second)
		old.Server.HardStop()
		old.Close()
	}
	e, err := start(ctx)
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if err != nil {
		s.restartFailed = true
		return fmt.Errorf("restart the store member: %w", err)
	}
	if s.cliClosed {
		e.Close()
		return errors.New("restart the store member: the store was closed meanwhile")
	}
	s.server, s.memberStopped, s.restartFailed = e, false, false
	// The member list gives every endpoint again, this one's too.
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.cli.Sync(sctx); err != nil {
		s.log.Warn("store endpoints not refreshed after the member's restart", "op", "store", "err", err)
	}
	return nil
}

// avoidLocalMember points the client at the other members' endpoints only,
// so that its streams leave this host's member. It reports false when there
// is no other endpoint.
func (s *Store) avoidLocalMember() bool {
	local := map[string]bool{}
	s.closeMu.Lock()
	cfg := s.server.Config()
	s.closeMu.Unlock()
	for _, us := range [][]url.URL{cfg.AdvertiseClientUrls, cfg.ListenClientUrls} {
		for _, u := range us {
			local[u.Host] = true
		}
	}
	var others []string
	for _, ep := range s.cli.Endpoints() {
		host := ep
		if u, err := url.Parse(ep); err == nil && u.Host != "" {
			host = u.Host
		}
		if !local[host] {
			others = append(others, ep)
		}
	}
	if len(others) == 0 {
		return false
	}
	s.cli.SetEndpoints(others...)
	return true
}

// handOver moves store leadership to another voting member before this
// one stops, so the others need not wait out an election timeout. It is
// bounded: when the other members are gone too (the whole cluster is
// stopping), it gives up after a second.
func (s *Store) handOver() { _, _ = s.moveLeadership("stop") }

// SetLeaderCandidates sets which hosts' members store leadership may be
// handed to (AvoidLeadership, and the hand-over when this member stops):
// those whose host is known to be alive now. The agent's direct heartbeats
// tell; without them (nil) leadership is never handed over. A transfer to
// a member that does not answer (its host just died, or its agent is
// frozen) blocks every write of the store while raft waits for it, an
// election timeout per attempt: a new manager handing leadership to the
// dead host it replaces stalled the cluster's failover for seconds.
func (s *Store) SetLeaderCandidates(alive func(name string) bool) {
	s.closeMu.Lock()
	s.candidates = alive
	s.closeMu.Unlock()
}

// AvoidLeadership moves store leadership away from this host's embedded
// member, if it leads, to another voting member whose host is alive
// (SetLeaderCandidates). The manager calls it, so that the manager and the
// store leader live on different hosts: losing one host then never costs
// both a store election and a new manager at once. It reports whether
// leadership moved, and an error if a transfer was tried and failed.
func (s *Store) AvoidLeadership() (bool, error) {
	s.closeMu.Lock()
	stopped := s.server == nil || s.memberStopped
	s.closeMu.Unlock()
	if stopped {
		return false, nil
	}
	return s.moveLeadership("election")
}

// leaderTransferees are the members store leadership may move to: voting,
// not self, and alive for the agent, in name order.
func leaderTransferees(members []*membership.Member, self uint64, alive func(string) bool) []*membership.Member {
	var out []*membership.Member
	for _, m := range members {
		if uint64(m.ID) == self || m.IsLearner || alive == nil || !alive(m.Name) {
			continue
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *membership.Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (s *Store) moveLeadership(op string) (bool, error) {
	s.closeMu.Lock()
	srv := s.server.Server
	alive := s.candidates
	s.closeMu.Unlock()
	self := uint64(srv.MemberID())
	if uint64(srv.Leader()) != self {
		return false, nil
	}
	to := leaderTransferees(srv.Cluster().Members(), self, alive)
	if len(to) == 0 {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var err error
	for _, m := range to {
		if err = srv.MoveLeader(ctx, self, uint64(m.ID)); err == nil {
			s.log.Info("handed store leadership over", "op", op, "peer", m.Name)
			return true, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return false, fmt.Errorf("hand store leadership over: %w", err)
}

// Member is one etcd member.
type Member struct {
	ID         uint64   `json:"id"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peer_urls"`
	ClientURLs []string `json:"client_urls"`
	Learner    bool     `json:"learner"`
}

// Members lists the store's members.
func (s *Store) Members(ctx context.Context) ([]Member, error) {
	resp, err := s.cli.MemberList(ctx, readOpts(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("list store members: %w", err)
	}
	out := make([]Member, 0, len(resp.Members))
	for _, m := range resp.Members {
		out = append(out, Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, Learner: m.IsLearner})
	}
	return out, nil
}

// AddLearner adds a non-voting member with the given peer URL and returns
// its ID and the member list including it (for the new member's
// InitialCluster). Membership changes are made as root (asRoot).
func (s *Store) AddLearner(ctx context.Context, peerURL string) (uint64, []Member, error) {
	var resp *clientv3.MemberAddResponse
	err := s.asRoot(ctx, func(cli *clientv3.Client) (err error) {
		resp, err = cli.MemberAddAsLearner(ctx, []string{peerURL})
		return err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("add store learner %s: %w", peerURL, err)
	}
	var ms []Member
	for _, m := range resp.Members {
		ms = append(ms, Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, Learner: m.IsLearner})
	}
	return resp.Member.ID, ms, nil
}

// RemoveMember removes a store member.
func (s *Store) RemoveMember(ctx context.Context, id uint64) error {
	if err := s.asRoot(ctx, func(cli *clientv3.Client) error {
		_, err := cli.MemberRemove(ctx, id)
		return err
	}); err != nil {
		return fmt.Errorf("remove store member %x: %w", id, err)
	}
	return nil
}

// Promote turns learner id into a voting member, retrying while it is not
// yet caught up with the leader, until ctx ends.
func (s *Store) Promote(ctx context.Context, id uint64) error {
	delay := 100 * time.Millisecond
	for {
		err := s.asRoot(ctx, func(cli *clientv3.Client) error {
			if cli != s.cli {
				// A root client of its own: to the leader's member. etcd
				// forwards a promotion from a follower to the leader over
				// its peer API without the caller's credentials, which the
				// leader refuses once the roles are on.
				if ep := leaderEndpoint(ctx, cli); ep != "" {
					cli.SetEndpoints(ep)
				}
			}
			_, err := cli.MemberPromote(ctx, id)
			return err
		})
		if err == nil || errors.Is(err, rpctypes.ErrMemberNotLearner) {
			return nil
		}
		s.log.Debug("store member not promoted yet", "member", fmt.Sprintf("%x", id), "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("promote store member %x: %w (last error: %v)", id, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// leaderEndpoint is a client URL of the store leader's member, or "".
func leaderEndpoint(ctx context.Context, cli *clientv3.Client) string {
	ms, err := cli.MemberList(ctx)
	if err != nil {
		return ""
	}
	for _, ep := range cli.Endpoints() {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cli.Status(sctx, ep)
		cancel()
		if err != nil || st.Leader == 0 {
			continue
		}
		for _, m := range ms.Members {
			if m.ID == st.Leader && len(m.ClientURLs) > 0 {
				return m.ClientURLs[0]
			}
		}
	}
	return ""
}

// getJSON reads one JSON value; ErrNotFound when absent.
func (s *Store) getJSON(ctx context.Context, key string, v any) (int64, error) {
	resp, err := s.cli.Get(ctx, key, readOpts(ctx)...)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, ErrNotFound
	}
	if err := Decode(key, resp.Kvs[0].Value, v); err != nil {
		return 0, err
	}
	return resp.Kvs[0].ModRevision, nil
}

type serializableKey struct{}

// Serializable marks ctx so that the Store's read methods answer from the
// nearest member without a quorum round (possibly stale). Use it to show
// what is known when the store has lost its quorum.
func Serializable(ctx context.Context) context.Context {
	return context.WithValue(ctx, serializableKey{}, true)
}

// IsSerializable reports whether ctx was marked by Serializable.
func IsSerializable(ctx context.Context) bool { return ctx.Value(serializableKey{}) != nil }

func readOpts(ctx context.Context, opts ...clientv3.OpOption) []clientv3.OpOption {
	if IsSerializable(ctx) {
		return append(opts, clientv3.WithSerializable())
	}
	return opts
}

func orUint(v, d uint) uint {
	if v == 0 {
		return d
	}
	return v
}
