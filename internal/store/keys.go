package store

import (
	"strings"
	"time"
)

// Key layout: every key Haven keeps, in this one place. Everything lives
// under Prefix; TestKeysLiveInStore keeps other packages from making keys
// of their own.
//
//	/haven/cluster/config            ClusterConfig (written once, at init)
//	/haven/cluster/manager           ManagerInfo (leader-guarded)
//	/haven/election/manager/<id>     concurrency.Election keys (value: node name)
//	/haven/pki/ca.crt, ca.key        cluster CA (PEM; the key sealed, keyring.go)
//	/haven/pki/keyring/<node>        KeyringEntry: the cluster secret key wrapped for a host
//	/haven/pki/key-requests/<node>   a host's certificate, asking for the secret key
//	/haven/pki/heartbeat.key         the key of direct heartbeats between hosts
//	/haven/pki/ca-rotation           CARotation: the cluster CA's rotation (carotation.go)
//	/haven/pki/ca-rotation-acks/<node>  CARotationAck: a host did its part of a phase
//	/haven/pki/ca-rotation-restart   the host whose store member restarts now (under its lease)
//	/haven/pki/ca-next.key           the new CA's key until it signs (sealed)
//	/haven/nodes/reg/<node>          NodeRecord: persistent registration
//	/haven/nodes/live/<node>         model.NodeFacts, attached to the node's lease
//	/haven/nodes/state/<node>        NodeState: online/offline since (leader-guarded)
//	/haven/nodes/level/<node>        NodeLevel: the feature level a host last reported
//	/haven/tokens/<id>               TokenRecord (secret hashed)
//	/haven/pki/revoked/<serial>      Revocation: a removed host's certificate
//	/haven/users/<name>              the web UI's users (package api)
//	/haven/sessions/<sha256>         web UI sessions, under a lease (package api)
//	/haven/policy                    cluster policy (package cluster)
//	/haven/guests/<name>             guest spec and definition (package cluster)
//	/haven/domains/<name>            failover domains (package cluster)
//	/haven/fence/config              fence devices and levels (package cluster; sealed)
//	/haven/pools/<name>              storage pools (package cluster)
//	/haven/poolhealth/<node>/<pool>  a host's check of a pool, under its lease
//	/haven/commands/<id>             operator commands and their outcome
//	/haven/orders/<node>/<guest>     the manager's orders (leader-guarded)
//	/haven/reports/<node>/<guest>    the agents' guest reports, under their leases
//	/haven/shutdown/<node>           a host going down gracefully, under its lease
//	/haven/shutdown-ready/<node>     the manager's answer: the host is empty
//	/haven/events/<seq>              the event and audit log
//	/haven/incidents/<seq>           manager steps that failed on an internal error
//	/haven/manager/...               the manager's saved state (package savedstate)
const (
	Prefix           = "/haven/"
	KeyClusterConfig = Prefix + "cluster/config"
	KeyManagerInfo   = Prefix + "cluster/manager"
	KeyElection      = Prefix + "election/manager"
	KeyCACert        = Prefix + "pki/ca.crt"
	KeyCAKey         = Prefix + "pki/ca.key"
	PrefixNodeReg    = Prefix + "nodes/reg/"
	PrefixNodeLive   = Prefix + "nodes/live/"
	PrefixNodeState  = Prefix + "nodes/state/"
	PrefixNodeLevel  = Prefix + "nodes/level/"
	PrefixTokens     = Prefix + "tokens/"
	PrefixRevoked    = Prefix + "pki/revoked/"

	PrefixKeyring     = Prefix + "pki/keyring/"
	PrefixKeyRequests = Prefix + "pki/key-requests/"
	KeyHeartbeat      = Prefix + "pki/heartbeat.key"

	PrefixUsers    = Prefix + "users/"
	PrefixSessions = Prefix + "sessions/"
	KeyPolicy      = Prefix + "policy"
	PrefixGuests   = Prefix + "guests/"
	PrefixDomains  = Prefix + "domains/"
	KeyFenceConfig = Prefix + "fence/config"
	// KeyNotify holds the notification configuration (notify.Config):
	// sealed when it holds a secret.
	KeyNotify           = Prefix + "notify/config"
	PrefixPools         = Prefix + "pools/"
	PrefixPoolHealth    = Prefix + "poolhealth/"
	PrefixCommands      = Prefix + "commands/"
	PrefixOrders        = Prefix + "orders/"
	PrefixReports       = Prefix + "reports/"
	PrefixShutdown      = Prefix + "shutdown/"
	PrefixShutdownReady = Prefix + "shutdown-ready/"
	PrefixEvents        = Prefix + "events/"
	PrefixIncidents     = Prefix + "incidents/"

	// The manager's saved state (package savedstate): the head, the base
	// generations' chunks, the log of deltas, and format 1's single value.
	PrefixManager     = Prefix + "manager/"
	KeyManagerHead    = PrefixManager + "head"
	PrefixManagerBase = PrefixManager + "base/"
	PrefixManagerLog  = PrefixManager + "log/"
	KeyManagerStateV1 = PrefixManager + "state"
)

// KeyNodeReg is the registration key of a node.
func KeyNodeReg(node string) string { return PrefixNodeReg + node }

// KeyNodeLive is the liveness key of a node (exists while its lease lives).
func KeyNodeLive(node string) string { return PrefixNodeLive + node }

// KeyNodeLevel is the feature level node's agent last reported.
func KeyNodeLevel(node string) string { return PrefixNodeLevel + node }

// KeyNodeState is the manager's record of a node's online/offline state.
func KeyNodeState(node string) string { return PrefixNodeState + node }

// Keys of the CA rotation.
const (
	KeyCARotation        = Prefix + "pki/ca-rotation"
	PrefixCARotationAcks = Prefix + "pki/ca-rotation-acks/"
	KeyCARestart         = Prefix + "pki/ca-rotation-restart"
	// KeyCANextKey is the new CA's key (sealed) until it signs.
	KeyCANextKey = Prefix + "pki/ca-next.key"
)

// KeyCARotationAck is node's acknowledgement.
func KeyCARotationAck(node string) string { return PrefixCARotationAcks + node }

// SealedKeys are the keys whose values are sealed with the cluster secret
// key (keyring.go).
// KeyNotify is sealed when it holds a secret (a plain one is read as it is).
// The CA key comes first (SealSecrets).
var SealedKeys = []string{KeyCAKey, KeyFenceConfig, KeyNotify, KeyCANextKey}

// KeyKeyring is the cluster secret key wrapped for node.
func KeyKeyring(node string) string { return PrefixKeyring + node }

// KeyKeyRequest is node's request for the cluster secret key.
func KeyKeyRequest(node string) string { return PrefixKeyRequests + node }

// KeyToken is the record of an API or join token.
func KeyToken(id string) string { return PrefixTokens + id }

// NameFromKey strips a prefix from a key.
func NameFromKey(prefix, key string) string { return strings.TrimPrefix(key, prefix) }

// ClusterConfig is the cluster's identity and fixed settings.
type ClusterConfig struct {
	Name         string `json:"name"`
	ID           string `json:"id"`
	StoreMembers int    `json:"store_members"` // voting embedded etcd members wanted (3 or 5)
	External     bool   `json:"external"`      // the store is an external etcd
	// StoreRoles: the embedded store enforces the store roles (roles.go;
	// etcd's authentication is on), recorded by the host that turned them
	// on.
	StoreRoles bool      `json:"store_roles,omitempty"`
	Created    time.Time `json:"created"`
}

// NodeRecord is a node's persistent registration: name, certificate and
// addresses. It outlives the node's lease.
type NodeRecord struct {
	Name        string `json:"name"`
	APIAddr     string `json:"api_addr"`
	PeerAddr    string `json:"peer_addr,omitempty"`
	ClientAddr  string `json:"client_addr,omitempty"` // store client URL, when a store member
	StoreMember bool   `json:"store_member"`
	MemberID    uint64 `json:"member_id,omitempty"`
	CertSerial  string `json:"cert_serial"`
	// PrevSerials are the host's earlier certificates (renewed, not
	// expired yet): `haven node remove` revokes them too.
	PrevSerials []string  `json:"prev_serials,omitempty"`
	Registered  time.Time `json:"registered"`
}

// NodeState is the manager's view of whether a node is up, and since when.
type NodeState struct {
	Online bool      `json:"online"`
	Since  time.Time `json:"since"`
}

// ManagerInfo is written by the manager when it takes office.
type ManagerInfo struct {
	Node  string    `json:"node"`
	Since time.Time `json:"since"`
	Rev   int64     `json:"rev"` // create revision of the election key
}

// Role is an API token's authority.
type Role string

const (
	RoleViewer   Role = "viewer"
	RoleOperator Role = "operator"
	RoleAdmin    Role = "admin"
	RoleJoin     Role = "join" // join tokens: may only call /api/v1/join
)

// Rank orders roles: a role may do what any lower rank may. Join tokens and
// unknown roles rank 0.
func (r Role) Rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r.Rank() > 0 || r == RoleJoin }

// TokenRecord is a stored token. Only the secret's hash is kept.
type TokenRecord struct {
	ID      string    `json:"id"`
	Hash    string    `json:"hash"`
	Role    Role      `json:"role"`
	Name    string    `json:"name,omitempty"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
	// Uses is how many more joins a join token admits (0: no limit, for
	// tokens made before limits existed); it is spent atomically (UseToken).
	Uses int `json:"uses,omitempty"`
	// Allow lists addresses (IPs or DNS names) an admin allows a host
	// joining with this token to have in its certificate besides the
	// address it joins from.
	Allow []string `json:"allow,omitempty"`
	// Node is the host the token belongs to (its local admin token),
	// deleted with it by `haven node remove`.
	Node string `json:"node,omitempty"`
}

// Revocation is a revoked host certificate (by serial, hex).
type Revocation struct {
	Serial  string    `json:"serial"`
	Node    string    `json:"node"`
	Revoked time.Time `json:"revoked"`
}
