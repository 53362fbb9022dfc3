package api

import (
	"encoding/json"
	"time"

	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store"
)

// Host states in Status.
const (
	HostOnline  = "online"
	HostOffline = "offline"
	// HostUnknown is shown when the store has no quorum: liveness cannot
	// be judged then.
	HostUnknown = "unknown"
)

// Status is the answer of GET /api/v1/status: the cluster at a glance.
type Status struct {
	Cluster      string    `json:"cluster"`
	ClusterID    string    `json:"cluster_id"`
	Manager      string    `json:"manager"` // node name; empty when there is none
	ManagerSince time.Time `json:"manager_since,omitzero"`
	ManagerTerm  int64     `json:"manager_term,omitempty"` // election key revision
	// ManagerUnreachable is set when the manager's host is unreachable
	// (see Host.Unreachable): a new manager is elected once its lease
	// expires.
	ManagerUnreachable bool `json:"manager_unreachable,omitempty"`
	// Hold: the cluster is on hold (policy hold): the manager takes no
	// action until it ends.
	Hold   bool      `json:"hold,omitempty"`
	Quorum Quorum    `json:"quorum"`
	Store  StoreInfo `json:"store"`
	Hosts  []Host    `json:"hosts"`
	// Features is what every online host's agent has: features that need
	// every host wait until they all have them (model.ClusterFeatures).
	// Absent from agents older than feature levels.
	Features *model.Features `json:"features,omitempty"`
	// FenceForm says whether the fence configuration is stored in the
	// clear because a registered host may run a release that cannot open
	// sealed secrets (store/oldreleases.go), and which hosts those are.
	// Absent from agents older than it.
	FenceForm *store.FenceForm `json:"fence_form,omitempty"`
	// Stale is set when the store had no quorum: the answer is what the
	// nearest store member last knew.
	Stale bool `json:"stale,omitempty"`
	// Guests is filled by a StatusHook once the guest manager exists; nil
	// (and absent from JSON) until then.
	Guests *GuestSummary `json:"guests,omitempty"`
	// Extra holds sections added by other components' StatusHooks.
	Extra map[string]json.RawMessage `json:"extra,omitempty"`
	// Served by and when.
	Node string    `json:"node"`
	Time time.Time `json:"time"`
}

// Quorum says whether the store can accept writes.
type Quorum struct {
	OK     bool `json:"ok"`
	Voters int  `json:"voters"` // voting store members
	Online int  `json:"online"` // of which up
	Needed int  `json:"needed"` // voters/2+1
}

// StoreInfo describes the store.
type StoreInfo struct {
	External bool           `json:"external"`
	Members  []store.Member `json:"members"`
	// Roles: the embedded store enforces the store roles (each host
	// writes only its own reports; docs/security.md).
	Roles bool `json:"roles,omitempty"`
}

// Host is one node in Status.
type Host struct {
	Name        string           `json:"name"`
	State       string           `json:"state"` // HostOnline or HostOffline
	Since       time.Time        `json:"since,omitzero"`
	Manager     bool             `json:"manager"`
	StoreMember bool             `json:"store_member"`
	StoreRole   string           `json:"store_role,omitempty"` // "voter", "learner" or ""
	APIAddr     string           `json:"api_addr"`
	Facts       *model.NodeFacts `json:"facts,omitempty"` // present while online
	// Unreachable is set when the host counts as online (its lease has not
	// expired) but its API did not accept a connection from the answering
	// agent just now: it is probably down, and its lease will expire.
	Unreachable bool `json:"unreachable,omitempty"`
	// Isolated is set when the answering agent hears no heartbeat from the
	// host and its address does not answer, but the host still writes its
	// storage heartbeat (agent --storage-heartbeat): it is alive, cut off
	// from the cluster network, not dead.
	Isolated bool `json:"isolated,omitempty"`
	// Maintenance is the manager's maintenance flag of the host.
	Maintenance bool `json:"maintenance,omitempty"`
	// HA is the manager's view of the host: online, offline, failed (being
	// fenced), fenced or left (after a graceful shutdown); empty before the
	// manager has seen it.
	HA string `json:"ha,omitempty"`
}

// GuestSummary counts guests by state; the guest manager fills it.
type GuestSummary struct {
	Total   int            `json:"total"`
	ByState map[string]int `json:"by_state,omitempty"`
	// Guests lists per-guest rows (name, state, node); the guest manager
	// defines the row type.
	Guests json.RawMessage `json:"guests,omitempty"`
}

// Node is one entry of GET /api/v1/nodes.
type Node struct {
	store.NodeRecord
	Online bool             `json:"online"`
	Since  time.Time        `json:"since,omitzero"`
	Facts  *model.NodeFacts `json:"facts,omitempty"`
}

// TokenRequest is the body of POST /api/v1/tokens.
type TokenRequest struct {
	Role store.Role `json:"role"` // admin, operator, viewer or join
	Name string     `json:"name,omitempty"`
	// TTL is a Go duration ("24h"); empty for no expiry (join tokens
	// default to 24h).
	TTL string `json:"ttl,omitempty"`
	// Uses is how many hosts a join token admits (default 1, at most
	// MaxJoinUses); join tokens only.
	Uses int `json:"uses,omitempty"`
	// Allow lists addresses (IPs or DNS names) a host joining with the
	// token may have in its certificate besides the address it joins
	// from (its other interfaces, its name in DNS); join tokens only.
	Allow []string `json:"allow,omitempty"`
}

// TokenResponse returns a new token. The secret is shown only here.
type TokenResponse struct {
	Token   string     `json:"token"`
	ID      string     `json:"id"`
	Role    store.Role `json:"role"`
	Name    string     `json:"name,omitempty"`
	Expires time.Time  `json:"expires,omitzero"`
	Uses    int        `json:"uses,omitempty"`
}

// TokenInfo lists a token without its secret.
type TokenInfo struct {
	ID      string     `json:"id"`
	Role    store.Role `json:"role"`
	Name    string     `json:"name,omitempty"`
	Created time.Time  `json:"created"`
	Expires time.Time  `json:"expires,omitzero"`
	Uses    int        `json:"uses,omitempty"` // joins left (join tokens)
	Node    string     `json:"node,omitempty"` // the host it belongs to
}

// JoinRequest is the body of POST /api/v1/join, authenticated by a join
// token in the Authorization header.
type JoinRequest struct {
	Node     string `json:"node"`
	CSR      string `json:"csr"`       // PEM certificate request
	APIAddr  string `json:"api_addr"`  // https://host:port
	PeerAddr string `json:"peer_addr"` // store peer URL it would listen on
	// ClientAddr is the store client URL it would listen on as a member.
	ClientAddr string `json:"client_addr"`
	// External is set when the joining host was given its own external
	// store endpoints.
	External bool `json:"external,omitempty"`
	// FeatureLevel is the joining agent's model.FeatureLevel (0 from
	// releases before levels): the answering host records it with the
	// registration (store.NodeLevel).
	FeatureLevel int `json:"feature_level,omitempty"`
}

// JoinResponse gives a joining host what it needs.
type JoinResponse struct {
	Cluster      string `json:"cluster"`
	ClusterID    string `json:"cluster_id"`
	CACert       string `json:"ca_cert"`
	Cert         string `json:"cert"`
	External     bool   `json:"external"`
	StoreMembers int    `json:"store_members"`
	// StoreEndpoints are client URLs of the store.
	StoreEndpoints []string `json:"store_endpoints"`
	// Member is set when the host is to become a store member: it was
	// added as a learner and must start its embedded store with
	// InitialCluster, then get promoted.
	Member         bool   `json:"member"`
	MemberID       uint64 `json:"member_id,omitempty"`
	InitialCluster string `json:"initial_cluster,omitempty"`
}

// Local is what an agent writes to DATA_DIR/local.json so that the CLI on
// the same host finds it without flags.
type Local struct {
	APIURL    string `json:"api_url"`
	CAFile    string `json:"ca_file"`
	TokenFile string `json:"token_file,omitempty"`
	Cluster   string `json:"cluster"`
	Node      string `json:"node"`
}
