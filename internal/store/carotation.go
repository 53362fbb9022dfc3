package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/credentials"

	"github.com/haven-ha/haven/internal/pki"
)

// Rotating the cluster CA (haven ca rotate) without a new cluster: every
// host must trust the new CA before any host presents a certificate of it,
// and every host must present one before any host stops trusting the old
// CA. The rotation record (KeyCARotation) names the phase; each host does
// its part of the phase and acknowledges it (PrefixCARotationAcks); any
// agent moves the rotation to the next phase once every registered host
// acknowledged the current one (AdvanceCARotation, guarded by the record's
// revision, so two agents never both move it). The agents do the work, not
// the command that started it: a rotation goes on when that command, or
// any host, dies, and waits for a host that is down.
//
//	trust    hosts trust the old and the new CA; store members restart
//	         (etcd reads its trusted CAs only when it starts), one at a time
//	         (KeyCARestart)
//	reissue  the new CA signs (the store's CA certificate and key are the
//	         new ones); every host re-issues its certificate with it
//	drop     hosts trust the new CA only; store members restart again
//	done     the old CA opens nothing
const (
	RotationTrust   = "trust"
	RotationReissue = "reissue"
	RotationDrop    = "drop"
	RotationDone    = "done"
)

// RotationPhases are the phases in order.
var RotationPhases = []string{RotationTrust, RotationReissue, RotationDrop, RotationDone}

// NextRotationPhase is the phase after p ("" after done).
func NextRotationPhase(p string) string {
	for i, q := range RotationPhases {
		if q == p && i+1 < len(RotationPhases) {
			return RotationPhases[i+1]
		}
	}
	return ""
}

// CARotation is the state of the cluster CA's rotation.
type CARotation struct {
	ID      string    `json:"id"`
	Phase   string    `json:"phase"`
	OldCert string    `json:"old_cert"` // PEM
	NewCert string    `json:"new_cert"` // PEM
	Started time.Time `json:"started"`
	Changed time.Time `json:"changed"` // when the phase began
	By      string    `json:"by,omitempty"`
}

// Trust is the trust bundle hosts hold in the rotation's phase: the new
// CA and the old one until the old is dropped, then the new one only.
func (r CARotation) Trust() []byte {
	switch r.Phase {
	case RotationTrust, RotationReissue:
		return pki.Bundle([]byte(r.NewCert), []byte(r.OldCert))
	}
	return pki.Bundle([]byte(r.NewCert))
}

// CARotationAck is a host's acknowledgement of a rotation's phase: it
// trusts the phase's bundle, its store member (if any) was started with
// it, and from reissue on its certificate is the new CA's.
type CARotationAck struct {
	ID    string    `json:"id"`
	Phase string    `json:"phase"`
	At    time.Time `json:"at"`
}

// ErrRotating is returned when a rotation is already under way.
var ErrRotating = errors.New("a CA rotation is under way")

// CARotation reads the rotation record and its revision; ErrNotFound when
// the CA was never rotated.
func (s *Store) CARotation(ctx context.Context) (CARotation, int64, error) {
	var r CARotation
	rev, err := s.getJSON(ctx, KeyCARotation, &r)
	return r, rev, err
}

// StartCARotation starts rotating the cluster CA to newCert (newKey is
// sealed until the new CA signs). ErrRotating when a rotation is under
// way.
func (s *Store) StartCARotation(ctx context.Context, id string, newCert, newKey []byte, by string, now time.Time) (CARotation, error) {
	cur, rev, err := s.CARotation(ctx)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return CARotation{}, err
	}
	if err == nil && cur.Phase != RotationDone {
		return cur, fmt.Errorf("rotate the cluster CA: %w (phase %s since %s)", ErrRotating, cur.Phase, cur.Changed.UTC().Format(time.RFC3339))
	}
	resp, err := s.cli.Get(ctx, KeyCACert)
	if err != nil {
		return CARotation{}, fmt.Errorf("rotate the cluster CA: read the CA: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return CARotation{}, fmt.Errorf("rotate the cluster CA: %w", ErrNotFound)
	}
	oldKV := resp.Kvs[0]
	k, krev, err := s.currentKey(ctx)
	if err != nil {
		return CARotation{}, fmt.Errorf("rotate the cluster CA: %w", err)
	}
	ops, err := sealedOps(k, map[string][]byte{KeyCANextKey: newKey})
	if err != nil {
		return CARotation{}, err
	}
	r := CARotation{ID: id, Phase: RotationTrust, OldCert: string(oldKV.Value), NewCert: string(newCert), Started: now.UTC(), Changed: now.UTC(), By: by}
	ops = append(ops, clientv3.OpPut(KeyCARotation, MustEncode(KeyCARotation, r)),
		clientv3.OpDelete(PrefixCARotationAcks, clientv3.WithPrefix()))
	tr, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(KeyCARotation), "=", rev),
		clientv3.Compare(clientv3.ModRevision(KeyCACert), "=", oldKV.ModRevision),
		clientv3.Compare(clientv3.ModRevision(KeyCAKey), "=", krev),
	).Then(ops...).Commit()
	if err != nil {
		return CARotation{}, fmt.Errorf("rotate the cluster CA: %w", err)
	}
	if !tr.Succeeded {
		return CARotation{}, fmt.Errorf("rotate the cluster CA: %w", ErrConflict)
	}
	return r, nil
}

// AckCARotation records that node did its part of r's phase.
func (s *Store) AckCARotation(ctx context.Context, node string, r CARotation, now time.Time) error {
	key := KeyCARotationAck(node)
	a := CARotationAck{ID: r.ID, Phase: r.Phase, At: now.UTC()}
	if _, err := s.cli.Put(ctx, key, MustEncode(key, a)); err != nil {
		return fmt.Errorf("acknowledge CA rotation phase %s: %w", r.Phase, err)
	}
	return nil
}

// CARotationAcks are the hosts' acknowledgements by host.
func (s *Store) CARotationAcks(ctx context.Context) (map[string]CARotationAck, error) {
	resp, err := s.cli.Get(ctx, PrefixCARotationAcks, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read CA rotation acknowledgements: %w", err)
	}
	out := map[string]CARotationAck{}
	for _, kv := range resp.Kvs {
		var a CARotationAck
		if err := Decode(string(kv.Key), kv.Value, &a); err != nil {
			return nil, err
		}
		out[NameFromKey(PrefixCARotationAcks, string(kv.Key))] = a
	}
	return out, nil
}

// AdvanceCARotation moves r (read at revision rev) to its next phase;
// ErrConflict when it changed meanwhile (another agent moved it). Entering
// reissue makes the new CA the store's CA (certificate and key), so every
// signature from then on (renewals, joins) is the new CA's.
func (s *Store) AdvanceCARotation(ctx context.Context, r CARotation, rev int64, now time.Time) (CARotation, error) {
	next := NextRotationPhase(r.Phase)
	if next == "" {
		return r, nil
	}
	if _, cur, err := s.CARotation(ctx); err != nil {
		return r, err
	} else if cur != rev {
		return r, fmt.Errorf("CA rotation: enter phase %s: %w", next, ErrConflict)
	}
	r.Phase, r.Changed = next, now.UTC()
	cmp := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(KeyCARotation), "=", rev)}
	ops := []clientv3.Op{clientv3.OpPut(KeyCARotation, MustEncode(KeyCARotation, r))}
	if next == RotationReissue {
		newKey, err := s.GetSealed(ctx, KeyCANextKey)
		if err != nil {
			return r, fmt.Errorf("CA rotation: read the new CA key: %w", err)
		}
		if _, err := pki.LoadCA([]byte(r.NewCert), newKey); err != nil {
			return r, fmt.Errorf("CA rotation: %w", err)
		}
		k, krev, err := s.currentKey(ctx)
		if err != nil {
			return r, fmt.Errorf("CA rotation: %w", err)
		}
		sealed, err := sealedOps(k, map[string][]byte{KeyCAKey: newKey})
		if err != nil {
			return r, err
		}
		cmp = append(cmp, clientv3.Compare(clientv3.ModRevision(KeyCAKey), "=", krev))
		ops = append(ops, sealed...)
		ops = append(ops, clientv3.OpPut(KeyCACert, r.NewCert), clientv3.OpDelete(KeyCANextKey))
	}
	tr, err := s.cli.Txn(ctx).If(cmp...).Then(ops...).Commit()
	if err != nil {
		return r, fmt.Errorf("CA rotation: enter phase %s: %w", next, err)
	}
	if !tr.Succeeded {
		return r, fmt.Errorf("CA rotation: enter phase %s: %w", next, ErrConflict)
	}
	return r, nil
}

// LockCARestart takes the right to restart this host's store member for
// the rotation, under lease (the host's liveness lease: a host that dies
// holding it lets it go). Members restart one at a time, so the store
// keeps its quorum. It reports the holder when another host has it.
func (s *Store) LockCARestart(ctx context.Context, node string, lease clientv3.LeaseID) (holder string, err error) {
	tr, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(KeyCARestart), "=", 0)).
		Then(clientv3.OpPut(KeyCARestart, node, clientv3.WithLease(lease))).
		Else(clientv3.OpGet(KeyCARestart)).Commit()
	if err != nil {
		return "", fmt.Errorf("CA rotation: take the restart turn: %w", err)
	}
	if tr.Succeeded {
		return node, nil
	}
	if kvs := tr.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		return string(kvs[0].Value), nil
	}
	return "", nil
}

// UnlockCARestart gives node's restart turn back.
func (s *Store) UnlockCARestart(ctx context.Context, node string) error {
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(KeyCARestart), "=", node)).
		Then(clientv3.OpDelete(KeyCARestart)).Commit()
	return err
}

// DynamicTLS are transport credentials that take their TLS configuration
// from get at every handshake: a store client keeps its connections while
// the hosts' trust bundle changes under it (a CA rotation).
func DynamicTLS(get func() *tls.Config) credentials.TransportCredentials {
	return &dynamicTLS{get: get}
}

type dynamicTLS struct{ get func() *tls.Config }

func (d *dynamicTLS) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return credentials.NewTLS(d.get()).ClientHandshake(ctx, authority, conn)
}

func (d *dynamicTLS) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return credentials.NewTLS(d.get()).ServerHandshake(conn)
}

func (d *dynamicTLS) Info() credentials.ProtocolInfo { return credentials.NewTLS(d.get()).Info() }

func (d *dynamicTLS) Clone() credentials.TransportCredentials { return &dynamicTLS{get: d.get} }

//nolint:staticcheck // part of the interface
func (d *dynamicTLS) OverrideServerName(string) error { return nil }

// OtherMembersUp checks that every store member but this host's has
// started, runs on a host alive says is up, and answers a status request
// on its own endpoint with a leader: restarting this host's member is safe
// for the quorum only then. (alive alone is late: a host killed a moment
// ago still counts as up. etcd 3.7 answers a request to a closing member
// with a crash of its process; the member gate, gate.go, refuses it
// instead.)
func (s *Store) OtherMembersUp(ctx context.Context, self string, alive func(node string) bool) error {
	ms, err := s.Members(ctx)
	if err != nil {
		return err
	}
	for _, m := range ms {
		switch {
		case m.Name == self:
		case len(m.ClientURLs) == 0 || m.Name == "":
			return fmt.Errorf("store member %x has not started", m.ID)
		case !alive(m.Name):
			return fmt.Errorf("the host of store member %q is down", m.Name)
		default:
			// The host's heartbeats take a second to see it die, its
			// lease longer: ask the member itself.
			if err := s.memberAnswers(ctx, m); err != nil {
				return err
			}
		}
	}
	return nil
}

// memberAnswers asks member m's own endpoint for its status, within a
// second: it answers and follows a leader.
func (s *Store) memberAnswers(ctx context.Context, m Member) error {
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := s.cli.Status(sctx, m.ClientURLs[0])
	switch {
	case err != nil:
		return fmt.Errorf("store member %q does not answer: %w", m.Name, err)
	case st.Leader == 0:
		return fmt.Errorf("store member %q has no leader", m.Name)
	}
	return nil
}
